//! Signals without handlers: the master blocks the signals it acts on and reads them from a
//! nonblocking signalfd in its loop; plus the startup check that the process has one thread.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{self, SfdFlags};

/// The signals the master blocks and reads from its signalfd.
///
/// SIGPIPE is blocked too, so a write to a closed pipe or socket returns EPIPE instead of
/// killing the master; it is drained from the signalfd but never reported.
pub const HANDLED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
];

/// A nonblocking, close-on-exec signalfd for [`HANDLED`], which are blocked in the thread that
/// installed it (in the single-threaded master: the whole process). Children get an empty
/// mask back from [`crate::sys::spawn::spawn`].
#[derive(Debug)]
pub struct SignalFd {
    fd: signalfd::SignalFd,
}

impl SignalFd {
    /// Block [`HANDLED`] and open the signalfd. Call first thing, before any child exists.
    pub fn install() -> io::Result<SignalFd> {
        let mut set = SigSet::empty();
        for signal in HANDLED {
            set.add(signal);
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        let fd =
            signalfd::SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalFd { fd })
    }

    /// The descriptor to watch for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every signal pending now, in arrival order, SIGPIPE left out. Standard signals coalesce:
    /// one SIGCHLD may stand for many exited children.
    pub fn read_pending(&mut self) -> io::Result<Vec<Signal>> {
        let mut signals = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
                    match Signal::try_from(number) {
                        Ok(Signal::SIGPIPE) | Err(_) => {}
                        Ok(signal) => signals.push(signal),
                    }
                }
                Ok(None) => return Ok(signals),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Fail unless this process has exactly one thread (fork from a multithreaded process is
/// unsound, and a blocked signal would reach another thread). Reads `Threads:` from
/// /proc/self/status.
pub fn assert_single_threaded() -> io::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = thread_count(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no Threads: line in /proc/self/status",
        )
    })?;
    if threads == 1 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the master must be single-threaded, but it has {threads} threads"
        )))
    }
}

fn thread_count(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|rest| rest.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::in_forked_child;
    use std::time::Duration;

    #[test]
    fn thread_count_parses_the_status_line() {
        assert_eq!(thread_count("Name:\tx\nThreads:\t3\nSigQ:\t0/1\n"), Some(3));
        assert_eq!(thread_count("Name:\tx\n"), None);
    }

    #[test]
    fn single_threaded_check_fails_here_and_passes_in_a_fork() {
        // The test harness runs this on a worker thread beside the main one.
        assert!(assert_single_threaded().is_err());
        assert!(in_forked_child(Duration::from_secs(10), || {
            assert_single_threaded().is_ok()
        }));
    }

    #[test]
    fn raised_signals_are_read_from_the_signalfd_and_sigpipe_is_dropped() {
        // In a single-threaded copy, so blocking and raising touch nobody else.
        let ok = in_forked_child(Duration::from_secs(10), || {
            let Ok(mut sfd) = SignalFd::install() else {
                return false;
            };
            let empty = matches!(sfd.read_pending(), Ok(v) if v.is_empty());
            let raised = [
                Signal::SIGUSR1,
                Signal::SIGHUP,
                Signal::SIGPIPE,
                Signal::SIGTERM,
            ]
            .into_iter()
            .all(|s| nix::sys::signal::raise(s).is_ok());
            let Ok(mut got) = sfd.read_pending() else {
                return false;
            };
            got.sort_by_key(|s| *s as i32);
            let drained = matches!(sfd.read_pending(), Ok(v) if v.is_empty());
            empty
                && raised
                && drained
                && got == vec![Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGTERM]
        });
        assert!(ok);
    }

    #[test]
    fn a_blocked_sigpipe_turns_into_epipe() {
        let ok = in_forked_child(Duration::from_secs(10), || {
            // Undo Rust's SIG_IGN so that only the block can save us.
            // SAFETY: SIG_DFL for SIGPIPE in this single-threaded copy; no handler involved.
            if unsafe {
                nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
            }
            .is_err()
            {
                return false;
            }
            let Ok(_sfd) = SignalFd::install() else {
                return false;
            };
            let Ok((r, w)) = nix::unistd::pipe() else {
                return false;
            };
            drop(r);
            matches!(nix::unistd::write(&w, b"x"), Err(nix::errno::Errno::EPIPE))
        });
        assert!(ok);
    }
}
