//! Children after the fork: reaping every exited child at once (with its process group, and
//! whether that group lives on), sending signals to them and their groups, and the
//! child-subreaper role that brings escaped grandchildren back to the master.

use std::collections::HashSet;
use std::io;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
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

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    pub kind: ExitKind,
    /// Its process group, read while it was a zombie; None if that failed.
    pub pgid: Option<Pid>,
    /// That group still had members once the whole batch was reaped.
    pub group_alive: bool,
}

/// Reap every child that has ended, without blocking, until none is left (SIGCHLDs coalesce,
/// so one signal may stand for many children). No children at all (ECHILD) is an empty
/// result, not an error. Call once at startup too.
///
/// Each child is first looked at without reaping it (waitid with WNOWAIT) to read its process
/// group, which a reaped process no longer has; once the batch is reaped, one `kill(-pgid, 0)`
/// per child says whether its group lives on (processes it left behind).
pub fn reap_all() -> Vec<Reaped> {
    let mut reaped = Vec::new();
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, flags) {
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => break, // StillAlive: nothing more has ended
            },
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: nothing left to wait for
        };
        let pgid = nix::unistd::getpgid(Some(pid)).ok();
        let kind = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, status)) => ExitKind::Exited(status),
            Ok(WaitStatus::Signaled(_, signal, core)) => ExitKind::Signaled {
                signal: signal as i32,
                core,
            },
            Err(Errno::EINTR) => continue,
            // Without WUNTRACED/WCONTINUED nothing else is reported; never loop on it.
            Ok(_) | Err(_) => break,
        };
        reaped.push(Reaped {
            pid,
            kind,
            pgid,
            group_alive: false,
        });
    }
    for child in &mut reaped {
        child.group_alive = child.pgid.is_some_and(group_alive);
    }
    reaped
}

/// Whether any process (zombies included) is left in process group `pgid`.
pub fn group_alive(pgid: Pid) -> bool {
    // EPERM: members exist that we may not signal; they are there all the same.
    !matches!(nix::sys::signal::killpg(pgid, None), Err(Errno::ESRCH))
}

/// Send `signal` to every process of group `pgid`. Ok(false) when the group is empty (ESRCH).
pub fn signal_group(pgid: Pid, signal: Signal) -> io::Result<bool> {
    if pgid.as_raw() <= 1 {
        // Never the caller's own group (0) nor every process (-1 would be 1).
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    match nix::sys::signal::killpg(pgid, signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Makes the master the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER): a
/// process a worker leaves behind comes back to the master when the worker exits, instead of
/// going to PID 1 out of sight.
pub fn become_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; it changes an attribute of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Live children of the master (escaped descendants included, the master being their
/// subreaper), from /proc/self/task/<pid>/children; the master is single-threaded, so its
/// one task has every child.
pub fn live_children() -> Vec<Pid> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/self/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect()
}

/// The process groups of the master's live children (zombies included: until reaped, a child
/// keeps its group's number from being reused). Every process a worker leaves behind comes
/// back to the master, its subreaper, so a group left behind that is in none of these holds
/// nothing the master is responsible for, and its number may belong to someone else now.
pub fn groups_of_children() -> HashSet<Pid> {
    live_children()
        .into_iter()
        .filter_map(|pid| nix::unistd::getpgid(Some(pid)).ok())
        .collect()
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
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::time::{Duration, Instant};

    /// The read end of a pipe for a forked test process (set before the fork: `child` takes
    /// a plain fn, which captures nothing).
    static PIPE_READ: AtomicI32 = AtomicI32::new(-1);

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
            // SAFETY: _exit in the forked child, which owns nothing to clean up.
            let exit3 = child(|| unsafe { libc::_exit(3) });
            // SAFETY: as above.
            let exit0 = child(|| unsafe { libc::_exit(0) });
            // SAFETY: the child kills itself; the _exit is only reached if that failed.
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
                all.extend(reap_all().into_iter().map(|r| (r.pid, r.kind)));
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
    fn a_subreaper_reaps_what_a_child_leaves_behind_with_its_group() {
        let ok = in_forked_child(Duration::from_secs(10), || {
            if become_child_subreaper().is_err() {
                return false;
            }
            // SAFETY: the child makes its own group, forks a grandchild that pauses until a
            // signal ends it, and exits: async-signal-safe calls only.
            let Some(leaver) = child(|| unsafe {
                libc::setpgid(0, 0);
                if libc::fork() == 0 {
                    loop {
                        libc::pause();
                    }
                }
                libc::_exit(0)
            }) else {
                return false;
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut all = Vec::new();
            let reaped = |all: &mut Vec<Reaped>, want: usize| {
                while all.len() < want && Instant::now() < deadline {
                    all.extend(reap_all());
                    std::thread::sleep(Duration::from_millis(2));
                }
            };
            reaped(&mut all, 1);
            let first = all.first().copied();
            let left = first.is_some_and(|r| {
                r.pid == leaver
                    && r.kind == ExitKind::Exited(0)
                    && r.pgid == Some(leaver)
                    && r.group_alive
            });
            let killed = matches!(signal_group(leaver, Signal::SIGKILL), Ok(true));
            // The grandchild came back to us: it is reaped here, in the same group, now empty.
            reaped(&mut all, 2);
            let second = all.get(1).copied();
            let back =
                second.is_some_and(|r| r.pid != leaver && r.pgid == Some(leaver) && !r.group_alive);
            left && killed && back && !group_alive(leaver)
        });
        assert!(ok);
    }

    #[test]
    fn a_group_whose_last_member_leaves_is_no_group_of_our_children() {
        let ok = in_forked_child(Duration::from_secs(10), || {
            if become_child_subreaper().is_err() {
                return false;
            }
            let mut fds = [0; 2];
            // SAFETY: pipe writes two descriptors into the array it is given.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                return false;
            }
            // The child makes its own group and leaves a grandchild in it, which, once told
            // (a byte on the pipe), leaves the group (setsid) and waits to be killed.
            fn leaver() -> ! {
                let fd = PIPE_READ.load(Ordering::Relaxed);
                // SAFETY: async-signal-safe calls only; `read` fills one byte of a local.
                unsafe {
                    libc::setpgid(0, 0);
                    if libc::fork() == 0 {
                        let mut byte = 0u8;
                        libc::read(fd, (&mut byte as *mut u8).cast(), 1);
                        libc::setsid();
                        loop {
                            libc::pause();
                        }
                    }
                    libc::_exit(0)
                }
            }
            PIPE_READ.store(fds[0], Ordering::Relaxed);
            let Some(group) = child(leaver) else {
                return false;
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut left_behind = None;
            while left_behind.is_none() && Instant::now() < deadline {
                left_behind = reap_all().into_iter().find(|r| r.pid == group);
                std::thread::sleep(Duration::from_millis(2));
            }
            let held =
                left_behind.is_some_and(|r| r.group_alive) && groups_of_children().contains(&group);
            // SAFETY: writes one byte from a local to the pipe's write end.
            let told = unsafe { libc::write(fds[1], [1u8].as_ptr().cast(), 1) } == 1;
            let mut gone = false;
            while !gone && Instant::now() < deadline {
                gone = !groups_of_children().contains(&group);
                std::thread::sleep(Duration::from_millis(2));
            }
            // The grandchild lives on, one of our children, in a session of its own.
            let escaped = live_children();
            let alive = escaped.len() == 1;
            for pid in escaped {
                let _ = send_signal(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            held && told && gone && alive && !group_alive(group)
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
