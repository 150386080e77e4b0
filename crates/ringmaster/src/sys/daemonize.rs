//! Going into the background (`-d`) and detaching stdio: the parent waits until the daemon
//! says how startup went and exits with that status, as Cyrus's master does.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};

/// Held by the daemon until its startup is finished; tells the waiting parent the outcome.
/// Dropping it unsent makes the parent exit with the daemon's own exit status once it ends.
#[derive(Debug)]
pub struct DaemonReady {
    write: OwnedFd,
}

impl DaemonReady {
    /// Startup succeeded: the parent exits 0.
    pub fn ready(self) -> io::Result<()> {
        self.send(0)
    }

    /// Startup failed: the parent exits with `status` (the daemon should exit too).
    pub fn fail(self, status: i32) -> io::Result<()> {
        self.send(status)
    }

    fn send(self, status: i32) -> io::Result<()> {
        let bytes = status.to_ne_bytes();
        loop {
            match nix::unistd::write(&self.write, &bytes) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Fork into the background. Returns only in the daemon (a new session leader, cwd `/`); the
/// original process waits for [`DaemonReady`] and `_exit`s with the status it carries. Call it
/// first thing, single-threaded, before opening anything that the parent should not share
/// (the pidfile is taken afterwards, by the daemon). Stdio is left alone: see
/// [`detach_stdio`].
pub fn daemonize() -> io::Result<DaemonReady> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: the master is single-threaded at this point (documented precondition), so the
    // child is a complete copy and may run ordinary code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read);
            nix::unistd::setsid()?;
            nix::unistd::chdir("/")?;
            Ok(DaemonReady { write })
        }
        child => {
            drop(write);
            let status = wait_for_report(&read, nix::unistd::Pid::from_raw(child));
            // SAFETY: the parent's work is done; leave without running destructors or flushing
            // stdio buffers that the daemon also holds copies of.
            unsafe { libc::_exit(status) }
        }
    }
}

/// The status the parent exits with: what the daemon sent, else how the daemon ended.
fn wait_for_report(read: &OwnedFd, child: nix::unistd::Pid) -> i32 {
    let mut bytes = [0u8; 4];
    let mut got = 0;
    while got < bytes.len() {
        match nix::unistd::read(read.as_raw_fd(), &mut bytes[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    if got == bytes.len() {
        return i32::from_ne_bytes(bytes);
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, status)) => return status,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Err(Errno::EINTR) => {}
            _ => return 1,
        }
    }
}

/// Mode of a log file the master creates (`-L`), whether the logger or the detached stdio opens
/// it first: not world-readable, as a log quotes client addresses, user and config names that
/// are no business of every local user (the convention of /var/log).
pub const LOG_FILE_MODE: u32 = 0o640;

/// Point stdin at /dev/null and stdout/stderr at `log` (opened for appending, created
/// [`LOG_FILE_MODE`]) or /dev/null. Children inherit fds 0-2, so with a log file their output lands there too
/// (Cyrus's `-L`).
pub fn detach_stdio(log: Option<&Path>) -> io::Result<()> {
    let null_in = OpenOptions::new().read(true).open("/dev/null")?;
    let out = match log {
        Some(path) => OpenOptions::new()
            .append(true)
            .create(true)
            .mode(LOG_FILE_MODE)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        None => OpenOptions::new().write(true).open("/dev/null")?,
    };
    // dup2 clears CLOEXEC on the targets, as stdio must survive exec.
    nix::unistd::dup2(null_in.as_raw_fd(), libc::STDIN_FILENO)?;
    nix::unistd::dup2(out.as_raw_fd(), libc::STDOUT_FILENO)?;
    nix::unistd::dup2(out.as_raw_fd(), libc::STDERR_FILENO)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{wait_for, TempDir};
    use std::time::Duration;

    /// Fork a stand-in for the master that daemonizes and lets `daemon` decide the outcome;
    /// return the stand-in's exit status (what the shell would see).
    fn run(daemon: fn(DaemonReady) -> bool) -> WaitStatus {
        // SAFETY: the child is a copy of this test thread; it daemonizes and both of its halves
        // end with `_exit`.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            0 => {
                let status = match daemonize() {
                    Ok(ready) => i32::from(!daemon(ready)),
                    Err(_) => 2,
                };
                // SAFETY: leaving the daemon copy without running the harness's code.
                unsafe { libc::_exit(status) }
            }
            pid => wait_for(nix::unistd::Pid::from_raw(pid), Duration::from_secs(10)),
        }
    }

    #[test]
    fn the_parent_exits_0_once_the_session_leader_daemon_is_ready() {
        let status = run(|ready| {
            let me = nix::unistd::getpid();
            let leader = nix::unistd::getsid(None).is_ok_and(|sid| sid == me);
            let at_root = std::env::current_dir().is_ok_and(|d| d == Path::new("/"));
            if leader && at_root {
                ready.ready().is_ok()
            } else {
                ready.fail(3).is_ok()
            }
        });
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    }

    #[test]
    fn the_parent_exits_with_the_reported_failure() {
        let status = run(|ready| ready.fail(75).is_ok());
        assert!(matches!(status, WaitStatus::Exited(_, 75)), "{status:?}");
    }

    #[test]
    fn detach_stdio_points_output_at_the_log() {
        let dir = TempDir::new("stdio");
        let log = dir.path().join("master.log");
        let log2 = log.clone();
        assert!(crate::sys::testutil::in_forked_child(
            Duration::from_secs(10),
            move || {
                if detach_stdio(Some(&log2)).is_err() {
                    return false;
                }
                // SAFETY: writing a static buffer to fd 2.
                unsafe { libc::write(2, b"to the log\n".as_ptr().cast(), 11) == 11 }
            }
        ));
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "to the log\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777 & !LOG_FILE_MODE, 0, "{mode:o}");
    }
}
