//! Signals without handlers: the master blocks the signals it acts on and reads them from a
//! nonblocking signalfd in its loop; plus the startup check that the process has one thread.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, Signal};
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

/// Signals that are never blocked: the two that cannot be, and those whose default action is
/// harmless (ignore or continue). The fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE) are
/// blocked like the rest: one sent with kill() is only logged, while a real fault still ends
/// the master, since the kernel unblocks a fault signal it has to deliver.
const NOT_CAUGHT: [libc::c_int; 5] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGCONT,
    libc::SIGURG,
    libc::SIGWINCH,
];

/// Highest signal number on Linux (`_NSIG - 1`).
const MAX_SIGNAL: libc::c_int = 64;

/// Every signal number the master blocks and reads from its signalfd: [`HANDLED`] and every
/// other signal whose default action would kill or stop the master (SIGALRM, SIGPROF, SIGIO,
/// SIGXCPU, SIGPWR, SIGSYS, SIGTRAP, SIGTSTP, the realtime signals...), so that a stray one
/// is logged instead of ending it silently. Not glibc's internal signals ([`GLIBC_INTERNAL`]):
/// glibc unblocks them whenever it restores a mask, so they are ignored instead.
pub fn caught() -> Vec<libc::c_int> {
    (1..=MAX_SIGNAL)
        .filter(|n| !NOT_CAUGHT.contains(n) && !GLIBC_INTERNAL.contains(n))
        .collect()
}

/// glibc's own signals (thread cancellation, set*id broadcast). In a process that never used
/// them they keep their default action, death; glibc's sigprocmask leaves them out of any mask
/// (and its functions that save and restore the mask, such as user lookups, unblock them), so
/// they cannot stay blocked: they are set to SIG_IGN, which glibc does not touch.
pub const GLIBC_INTERNAL: [libc::c_int; 2] = [32, 33];

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
use super::spawn::KernelSigaction;

/// Sets [`GLIBC_INTERNAL`] to SIG_IGN with the raw syscall (glibc's sigaction refuses them).
/// Children get SIG_DFL back from [`crate::sys::spawn::spawn`], which resets every signal
/// this process does not leave at SIG_DFL (told here, in case a spawn came first).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
fn ignore_glibc_internal() -> io::Result<()> {
    let ignore = KernelSigaction {
        handler: libc::SIG_IGN as libc::c_ulong,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in GLIBC_INTERNAL {
        // SAFETY: rt_sigaction reads a kernel-layout struct from our frame (SIG_IGN needs no
        // restorer); no old action is asked for; 8 is the kernel's sigset size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                std::ptr::addr_of!(ignore),
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        super::spawn::disposition_changed(signal);
    }
    Ok(())
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
fn ignore_glibc_internal() -> io::Result<()> {
    Ok(())
}

/// [`caught`] as the kernel's 64-bit signal mask (bit n-1 for signal n).
fn kernel_mask() -> u64 {
    caught().into_iter().fold(0, |mask, n| mask | 1 << (n - 1))
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

/// [`caught`] as a sigset_t for signalfd, built from the kernel mask.
fn caught_set() -> SigSet {
    const _: () = assert!(std::mem::size_of::<libc::sigset_t>() >= std::mem::size_of::<u64>());
    // SAFETY: an all-zero sigset_t is the empty set; on Linux its first 64 bits are the
    // kernel's mask, in the kernel's layout, which is what signalfd4 reads (the size is
    // checked above; unaligned write because sigset_t's alignment is only c_ulong's).
    unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        std::ptr::write_unaligned(std::ptr::addr_of_mut!(raw).cast::<u64>(), kernel_mask());
        SigSet::from_sigset_t_unchecked(raw)
    }
}

/// Blocks [`caught`].
fn block_caught() -> io::Result<()> {
    let mask = kernel_mask();
    // SAFETY: rt_sigprocmask reads 8 bytes (the kernel's sigset size) from `mask` on our
    // stack and writes no old set (null).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::addr_of!(mask),
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
        let set = caught_set();
        block_caught()?;
        ignore_glibc_internal()?;
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
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert!(numbers.contains(&n), "{} not caught", signal_name(n));
        }
        for n in [libc::SIGKILL, libc::SIGSTOP, libc::SIGCONT, 32, 33] {
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
            let me = nix::unistd::getpid();
            let raised = [libc::SIGALRM, libc::SIGTSTP, 32, 33, rt]
                .into_iter()
                // SAFETY: sending blocked (or, 32 and 33, ignored) signals to this
                // single-threaded copy; raise would refuse glibc's own 32 and 33.
                .all(|n| unsafe { libc::kill(me.as_raw(), n) } == 0);
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
    fn abort_still_ends_the_process_with_everything_blocked() {
        use crate::sys::testutil::wait_for;
        use nix::sys::wait::WaitStatus;
        // SAFETY: the child only installs the signalfd and aborts.
        match unsafe { libc::fork() } {
            -1 => panic!("fork"),
            0 => {
                let _sfd = SignalFd::install();
                std::process::abort();
            }
            pid => {
                let status = wait_for(nix::unistd::Pid::from_raw(pid), Duration::from_secs(10));
                assert!(
                    matches!(status, WaitStatus::Signaled(_, Signal::SIGABRT, _)),
                    "{status:?}"
                );
            }
        }
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
