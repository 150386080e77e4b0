//! Signals without handlers: the master blocks the signals it acts on and reads them from a
//! nonblocking signalfd in its loop; plus the startup check that the process has one thread.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{self, SfdFlags};

/// The signals the master acts on; every other signal that could end or stop it is read
/// too (see [`caught`]) and only logged.
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

/// Signals that are never blocked: a fault (the kernel delivers it whatever the mask, and a
/// blocked one kills at once), the two that cannot be caught, and those whose default action
/// is harmless (ignore or continue).
const NOT_CAUGHT: [libc::c_int; 9] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGCONT,
    libc::SIGURG,
    libc::SIGWINCH,
];

/// Highest signal number on Linux (`_NSIG - 1`).
const MAX_SIGNAL: libc::c_int = 64;

/// Every signal number the master blocks and reads from its signalfd: [`HANDLED`] and every
/// other signal whose default action would kill or stop the master (SIGALRM, SIGPROF, SIGIO,
/// SIGXCPU, SIGPWR, SIGSYS, SIGTRAP, SIGTSTP, the realtime signals...), so that a stray one
/// is logged instead of ending it silently. glibc's two internal signals (32 and 33) are left
/// to glibc, which handles them itself.
pub fn caught() -> Vec<libc::c_int> {
    (1..=MAX_SIGNAL)
        .filter(|n| !NOT_CAUGHT.contains(n))
        .filter(|n| *n < 32 || *n >= libc::SIGRTMIN())
        .collect()
}

/// One signal read from the signalfd, with who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The signal number (realtime ones included).
    pub number: i32,
    /// The sender's pid (0 for the kernel).
    pub pid: u32,
    /// The sender's real uid.
    pub uid: u32,
}

impl Received {
    /// The signal as nix names it; None for realtime signals.
    pub fn signal(&self) -> Option<Signal> {
        Signal::try_from(self.number).ok()
    }

    /// A name for a log line: `SIGALRM`, `SIGRTMIN+3`.
    pub fn name(&self) -> String {
        signal_name(self.number)
    }
}

/// `SIGALRM`, `SIGRTMIN+3`, or `signal 99`.
pub fn signal_name(number: i32) -> String {
    match Signal::try_from(number) {
        Ok(signal) => signal.as_str().to_string(),
        Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&number) => {
            format!("SIGRTMIN+{}", number - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {number}"),
    }
}

fn caught_set() -> io::Result<SigSet> {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t on our stack; every number
    // passed is a valid signal (1..=64 minus glibc's reserved ones); from_sigset_t_unchecked
    // gets a fully initialised set.
    unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        if libc::sigemptyset(&mut raw) != 0 {
            return Err(io::Error::last_os_error());
        }
        for number in caught() {
            if libc::sigaddset(&mut raw, number) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(SigSet::from_sigset_t_unchecked(raw))
    }
}

/// A nonblocking, close-on-exec signalfd for every signal in [`caught`], which are blocked in
/// the thread that installed it (in the single-threaded master: the whole process). Children
/// get an empty mask and default dispositions back from [`crate::sys::spawn::spawn`].
#[derive(Debug)]
pub struct SignalFd {
    fd: signalfd::SignalFd,
}

impl SignalFd {
    /// Block [`caught`] and open the signalfd. Call first thing, before any child exists.
    pub fn install() -> io::Result<SignalFd> {
        let set = caught_set()?;
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
    pub fn read_pending(&mut self) -> io::Result<Vec<Received>> {
        let mut signals = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
                    if number != libc::SIGPIPE {
                        signals.push(Received {
                            number,
                            pid: info.ssi_pid,
                            uid: info.ssi_uid,
                        });
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
            let Ok(got) = sfd.read_pending() else {
                return false;
            };
            let mut got: Vec<Signal> = got.iter().filter_map(Received::signal).collect();
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
    fn stray_signals_that_would_kill_or_stop_are_caught() {
        let numbers = caught();
        for n in [
            libc::SIGALRM,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGIO,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGPWR,
            libc::SIGSYS,
            libc::SIGSTKFLT,
            libc::SIGTRAP,
            libc::SIGABRT,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert!(numbers.contains(&n), "{} not caught", signal_name(n));
        }
        for n in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 32, 33] {
            assert!(!numbers.contains(&n), "{n} caught");
        }
        assert_eq!(signal_name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert_eq!(signal_name(libc::SIGALRM), "SIGALRM");
    }

    #[test]
    fn a_stray_signal_is_read_with_its_sender_instead_of_killing() {
        let ok = in_forked_child(Duration::from_secs(10), || {
            let Ok(mut sfd) = SignalFd::install() else {
                return false;
            };
            let rt = libc::SIGRTMIN() + 2;
            // SAFETY: raising blocked signals in this single-threaded copy.
            let raised = [libc::SIGALRM, libc::SIGTSTP, rt]
                .into_iter()
                .all(|n| unsafe { libc::raise(n) } == 0);
            let Ok(got) = sfd.read_pending() else {
                return false;
            };
            let mut numbers: Vec<i32> = got.iter().map(|r| r.number).collect();
            numbers.sort_unstable();
            let me = std::process::id();
            raised
                && numbers == vec![libc::SIGALRM, libc::SIGTSTP, rt]
                && got.iter().all(|r| r.pid == me)
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
