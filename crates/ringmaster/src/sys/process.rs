//! Children after the fork: reaping every exited child at once, and sending signals to them.

use std::io;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// It called exit with this status.
    Exited(i32),
    /// A signal killed it; `core` when it dumped core.
    Signaled {
        /// The signal number.
        signal: i32,
        /// A core dump was written.
        core: bool,
    },
}

/// Reap every child that has ended, without blocking: `waitpid(-1, WNOHANG)` until none is
/// left (SIGCHLDs coalesce, so one signal may stand for many children). No children at all
/// (ECHILD) is an empty result, not an error. Call once at startup too.
pub fn reap_all() -> Vec<(Pid, ExitKind)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) => reaped.push((pid, ExitKind::Exited(status))),
            Ok(WaitStatus::Signaled(pid, signal, core)) => reaped.push((
                pid,
                ExitKind::Signaled {
                    signal: signal as i32,
                    core,
                },
            )),
            // Without WUNTRACED/WCONTINUED nothing else is reported; skip it if it is.
            Ok(WaitStatus::StillAlive) => return reaped,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(_) => return reaped, // ECHILD: nothing left to wait for
        }
    }
}

/// Send `signal` to `pid`. Ok(true) when sent, Ok(false) when no such process exists any
/// more (ESRCH: it exited and may already be reaped; not worth failing on). A pid of 0 means
/// the master's own process group (as Cyrus's shutdown `kill(0, SIGTERM)`).
pub fn send_signal(pid: Pid, signal: Signal) -> io::Result<bool> {
    match nix::sys::signal::kill(pid, signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The scheduling priority (nice value) of this process.
pub fn own_nice() -> io::Result<i32> {
    // getpriority can legitimately return -1: clear errno to tell that from an error.
    Errno::clear();
    // SAFETY: a plain syscall on our own process; no memory is passed.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if current == -1 && Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(current)
}

/// Puts the master at nice `nice` (only when the operator asks: by default the master keeps
/// the priority it was started with, as Cyrus's does). Returns the nice value it had, which
/// its children are to get back, or None when nothing changed.
pub fn set_master_nice(nice: i32) -> io::Result<Option<i32>> {
    let current = own_nice()?;
    if nice == current {
        return Ok(None);
    }
    // SAFETY: a plain syscall on our own process; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::in_forked_child;
    use std::time::{Duration, Instant};

    /// Fork a child that ends as `how` says; only in a forked test copy.
    fn child(how: fn() -> !) -> Option<Pid> {
        // SAFETY: the child only calls `how`, which ends it with async-signal-safe calls.
        match unsafe { libc::fork() } {
            -1 => None,
            0 => how(),
            pid => Some(Pid::from_raw(pid)),
        }
    }

    #[test]
    fn reaps_every_child_with_its_status() {
        // Reaping waits for any child: do it in a forked copy, away from other tests' children.
        let ok = in_forked_child(Duration::from_secs(10), || {
            if !reap_all().is_empty() {
                return false;
            }
            // SAFETY (all three): immediate _exit / self-kill in the child.
            let exit3 = child(|| unsafe { libc::_exit(3) });
            let exit0 = child(|| unsafe { libc::_exit(0) });
            let killed = child(|| unsafe {
                libc::raise(libc::SIGKILL);
                libc::_exit(9)
            });
            let (Some(exit3), Some(exit0), Some(killed)) = (exit3, exit0, killed) else {
                return false;
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut all = Vec::new();
            while all.len() < 3 && Instant::now() < deadline {
                all.extend(reap_all());
                std::thread::sleep(Duration::from_millis(2));
            }
            all.sort_by_key(|(pid, _)| pid.as_raw());
            let mut want = vec![
                (exit3, ExitKind::Exited(3)),
                (exit0, ExitKind::Exited(0)),
                (
                    killed,
                    ExitKind::Signaled {
                        signal: libc::SIGKILL,
                        core: false,
                    },
                ),
            ];
            want.sort_by_key(|(pid, _)| pid.as_raw());
            all == want && reap_all().is_empty()
        });
        assert!(ok);
    }

    #[test]
    fn signalling_a_gone_process_is_not_an_error() {
        let ok = in_forked_child(Duration::from_secs(10), || {
            // SAFETY: the child pauses until a signal ends it.
            let Some(pid) = child(|| unsafe {
                loop {
                    libc::pause();
                }
            }) else {
                return false;
            };
            let sent = matches!(send_signal(pid, Signal::SIGTERM), Ok(true));
            let reaped = matches!(
                waitpid(pid, None),
                Ok(WaitStatus::Signaled(_, Signal::SIGTERM, _))
            );
            sent && reaped && matches!(send_signal(pid, Signal::SIGTERM), Ok(false))
        });
        assert!(ok);
    }
}
