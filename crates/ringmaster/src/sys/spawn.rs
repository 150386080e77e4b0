//! Turning a spawn request (plain data) into a running child: clone, the worker fd layout
//! (3 = status pipe, 4 = listener), CLOEXEC on everything else, RLIMIT_NOFILE, a clean signal
//! state, credentials, the parent-death signal, then execve. A failure in the child, exec's
//! included, comes back to the parent as an `io::Error`.
//!
//! Why a raw clone and not `std::process::Command`: std reports exec errors through a CLOEXEC
//! pipe whose write end takes the lowest free descriptor, which can be 3 or 4, exactly where the
//! worker's status pipe and listener must go; a `pre_exec` closure cannot move std's pipe out of
//! the way. Here the child shares the master's memory until exec and reports a failure in it,
//! as glibc's posix_spawn does: no pipe at all.
//!
//! Between clone and exec the child runs in the master's memory (CLONE_VM, see [`spawn`]) and
//! runs only async-signal-safe libc calls on data prepared in the parent: no allocation, no
//! locks, no logging, no write to anything but its own stack and the one report word. It
//! starts on the master's descriptor table too, and its first step takes a copy of only the
//! few lowest entries (see `slots`), so a spawn costs the same with 15,000 descriptors open.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::os::raw::c_char;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use ringmaster_proto::{LISTEN_FD, STATUS_FD};

use super::users::Credentials;

mod dispositions;
mod slots;
mod stack;

pub use dispositions::disposition_changed;
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
pub(super) use dispositions::KernelSigaction;
#[cfg(test)]
use slots::go_without as go_without_descriptor_slots;
pub use slots::reserve as reserve_descriptor_slots;

/// The first descriptor the child does not keep across exec.
const FIRST_CLOSED_FD: RawFd = LISTEN_FD + 1;
/// Where the child parks descriptors while it lays out 3 and 4.
const PARKING_FD: RawFd = 10;
/// Exit status of a child that could not exec.
const EXEC_FAILED_STATUS: libc::c_int = 127;

/// Everything needed to start one process, as plain data (tests can inspect it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Absolute path of the program to execute (no PATH search is done).
    pub program: CString,
    /// The full argv, argv\[0\] included (Cyrus passes `cmd=` split on whitespace, unchanged).
    pub argv: Vec<CString>,
    /// The whole environment, each entry `KEY=VALUE`; nothing is inherited from the master.
    pub env: Vec<CString>,
    /// Placed on fd 3 with CLOEXEC cleared; None leaves fd 3 closed in the child.
    pub status_fd: Option<RawFd>,
    /// Placed on fd 4 with CLOEXEC cleared; None leaves fd 4 closed in the child.
    pub listen_fd: Option<RawFd>,
    /// RLIMIT_NOFILE (soft, hard) for the child; an unprivileged master that cannot raise
    /// the hard limit gets the soft limit clamped to it instead.
    pub nofile_limit: Option<(u64, u64)>,
    /// Identity to take before exec; None keeps the master's. A master that is not root may
    /// pass its own identity (nothing is changed then); anything else fails with EPERM.
    pub credentials: Option<Credentials>,
    /// Ask the kernel to send SIGTERM to the child when the master dies, and refuse to exec
    /// when the master is already gone by then. (The kernel ties this to the forking thread,
    /// which in the single-threaded master is the master itself.)
    pub parent_death_signal: bool,
    /// Directory to change to, after the identity change (so as the child's user).
    pub cwd: Option<CString>,
    /// Scheduling priority (nice value) the child gets once it has exec'd, when the master
    /// runs at another one than its children should. Until then it has the master's, so
    /// that the master, waiting for the exec, is not held up by a busy machine.
    pub nice: Option<i32>,
    /// Start the child in a process group of its own (setpgid(0, 0)), so that whatever it
    /// leaves behind when it exits can be found, and signalled, by that group.
    pub own_process_group: bool,
}

/// The step of the child's setup that failed, as reported back to the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Stage {
    StatusFd = 1,
    ListenFd,
    CloseOnExec,
    FileLimit,
    SignalMask,
    Groups,
    Gid,
    Uid,
    RegainedRoot,
    DeathSignal,
    ParentGone,
    Chdir,
    Exec,
    ProcessGroup,
    FdTable,
}

impl Stage {
    fn from_code(code: i32) -> Option<Stage> {
        use Stage::*;
        [
            StatusFd,
            ListenFd,
            CloseOnExec,
            FileLimit,
            SignalMask,
            Groups,
            Gid,
            Uid,
            RegainedRoot,
            DeathSignal,
            ParentGone,
            Chdir,
            Exec,
            ProcessGroup,
            FdTable,
        ]
        .into_iter()
        .find(|s| *s as i32 == code)
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::StatusFd => "placing the status pipe on fd 3",
            Stage::ListenFd => "placing the listener on fd 4",
            Stage::CloseOnExec => "marking inherited descriptors close-on-exec",
            Stage::FileLimit => "setting RLIMIT_NOFILE",
            Stage::SignalMask => "clearing the signal mask",
            Stage::Groups => "setgroups",
            Stage::Gid => "setgid",
            Stage::Uid => "setuid",
            Stage::RegainedRoot => "root could be regained after setuid",
            Stage::DeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Stage::ParentGone => "the master exited before the child could exec",
            Stage::Chdir => "chdir",
            Stage::Exec => "execve",
            Stage::ProcessGroup => "setpgid",
            Stage::FdTable => "unsharing the descriptor table",
        }
    }
}

/// What the child needs, prepared in the parent so the child allocates nothing.
struct ChildPlan<'a> {
    program: &'a CStr,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    status_fd: Option<RawFd>,
    listen_fd: Option<RawFd>,
    nofile_limit: Option<(libc::rlim_t, libc::rlim_t)>,
    credentials: Option<&'a Credentials>,
    death_signal: bool,
    cwd: Option<&'a CStr>,
    own_process_group: bool,
    /// Set when the child starts on the master's descriptor table (CLONE_FILES): its first
    /// step unshares it, keeping only the descriptors below this number.
    unshare_from: Option<RawFd>,
    /// The master's pid, for the getppid check after PR_SET_PDEATHSIG.
    parent: libc::pid_t,
    /// Upper bound of the fcntl loop used when close_range is unavailable.
    fd_scan_limit: RawFd,
    /// Signals to set back to SIG_DFL (bit n-1 for signal n).
    reset_signals: u64,
}

/// Start `spec` and return the child's pid once it is past exec's point of no return.
///
/// The child shares the master's memory until it execs and the master waits meanwhile
/// (CLONE_VM | CLONE_VFORK, as posix_spawn does): no page tables are copied and no page is
/// copied on write afterwards, so a pool of workers forks several times faster than with
/// fork(). The child runs on a stack of its own and only reads the plan prepared here.
///
/// The kernel resumes the master when the child has either exited or released the master's
/// memory inside execve, which it does only past the point of no return. So when `clone`
/// returns, a child that failed has written its report (see [`ChildStart::report`]) and
/// exited, or there will never be a report: nothing is waited for beyond that, which under a
/// burst of starting workers could wait behind them for a CPU.
///
/// A child whose setup failed has already exited when this returns; it is reaped here, so the
/// caller never sees its exit. An exec failure is returned as the bare OS error
/// (`raw_os_error()` is the execve errno); other steps wrap the errno with a description of
/// the step.
pub fn spawn(spec: &ExecSpec) -> io::Result<Pid> {
    validate(spec)?;
    // Kept until clone has returned: dropping it takes the staged copies back.
    let staged = slots::stage(spec.status_fd, spec.listen_fd)?;
    let (status_fd, listen_fd, unshare_from) = match &staged {
        Some(s) => (s.status_fd, s.listen_fd, Some(s.unshare_from)),
        None => (spec.status_fd, spec.listen_fd, None),
    };
    let plan = ChildPlan {
        program: &spec.program,
        argv: null_terminated(&spec.argv),
        envp: null_terminated(&spec.env),
        status_fd,
        listen_fd,
        unshare_from,
        nofile_limit: spec.nofile_limit,
        credentials: spec.credentials.as_ref(),
        death_signal: spec.parent_death_signal,
        cwd: spec.cwd.as_deref(),
        own_process_group: spec.own_process_group,
        parent: nix::unistd::getpid().as_raw(),
        fd_scan_limit: fd_scan_limit(),
        reset_signals: dispositions::to_reset(),
    };
    let start = ChildStart {
        plan: &plan,
        report: AtomicU64::new(0),
    };
    let top = stack::top()?;
    let shared_table = if unshare_from.is_some() {
        libc::CLONE_FILES
    } else {
        0
    };
    // SAFETY: CLONE_VFORK suspends us until the child has exec'd or exited, so `plan`,
    // `start` and the stack outlive every use the child makes of them (the stack is this
    // thread's, and this thread is the one suspended); the child runs only `run_child`, which
    // reads the plan, writes nothing of ours but `start.report` (its locals live on its own
    // stack), calls async-signal-safe functions and never returns. Without CLONE_SIGHAND the
    // dispositions it resets are its own. With CLONE_FILES its first step unshares the
    // descriptor table before it changes any descriptor, so ours are left as they are.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | shared_table | libc::SIGCHLD,
            &start as *const ChildStart<'_> as *mut libc::c_void,
        )
    };
    // Read before the slots are restored: a failed dup3 there would overwrite errno.
    let clone_error = (pid < 0).then(io::Error::last_os_error);
    drop(staged);
    if let Some(err) = clone_error {
        return Err(err);
    }
    let child = Pid::from_raw(pid);
    match decode_report(start.report.load(Ordering::Acquire)) {
        Ok(()) => {
            // The child went into exec at the master's priority (we waited for it); now it
            // gets its own. It may have exited already (ESRCH): nothing to do then.
            if let Some(nice) = spec.nice {
                // SAFETY: a plain syscall on a process id; no memory is passed.
                let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) };
            }
            Ok(child)
        }
        Err(e) => {
            reap(child);
            Err(e)
        }
    }
}

/// What [`child_entry`] gets: the plan, and where to report a failed step.
struct ChildStart<'a> {
    plan: &'a ChildPlan<'a>,
    /// 0, or the failed step and its errno (`stage << 32 | errno`), written by the child
    /// just before it exits. The parent reads it once `clone` has returned, that is once the
    /// child has exited or is past exec's point of no return and writes nothing any more.
    report: AtomicU64,
}

/// The child's first function, on its own stack.
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildStart` the parent passed to clone; the parent is suspended
    // (CLONE_VFORK) until we exec or exit, so it is alive and unchanged.
    let start = unsafe { &*(arg as *const ChildStart<'_>) };
    // SAFETY: we are the freshly cloned child; see `run_child`.
    unsafe { run_child(start.plan, &start.report) }
}

/// Decodes a report: 0 means the exec happened.
fn decode_report(report: u64) -> io::Result<()> {
    if report == 0 {
        return Ok(());
    }
    let stage = (report >> 32) as i32;
    let os = io::Error::from_raw_os_error(report as u32 as i32);
    match Stage::from_code(stage) {
        Some(Stage::Exec) => Err(os),
        Some(stage) => Err(io::Error::new(
            os.kind(),
            format!("in the child before exec: {}: {os}", stage.describe()),
        )),
        None => Err(io::Error::other(format!(
            "child sent an unknown failure report ({stage}, {os})"
        ))),
    }
}

fn validate(spec: &ExecSpec) -> io::Result<()> {
    let invalid = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()));
    if spec.program.as_bytes().first() != Some(&b'/') {
        return invalid("program must be an absolute path");
    }
    if spec.argv.is_empty() {
        return invalid("argv must not be empty");
    }
    if spec.env.iter().any(|e| !e.as_bytes().contains(&b'=')) {
        return invalid("environment entries must be KEY=VALUE");
    }
    if spec.status_fd.is_some_and(|fd| fd < 0) || spec.listen_fd.is_some_and(|fd| fd < 0) {
        return invalid("descriptors must not be negative");
    }
    Ok(())
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// How far the fallback loop marks descriptors CLOEXEC: the soft RLIMIT_NOFILE at the first
/// spawn (the master sets its own limit at start-up, before), at least 1024, at most 65536.
fn fd_scan_limit() -> RawFd {
    static LIMIT: OnceLock<RawFd> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        RawFd::try_from(soft.clamp(1024, 65536)).unwrap_or(65536)
    })
}

/// Wait for a child that reported a failure (it `_exit`s right after reporting).
fn reap(child: Pid) {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => {}
            _ => return,
        }
    }
}

/// The cloned child: set up and exec, or report the failed step and `_exit(127)`.
///
/// # Safety
///
/// Call only in the child that [`spawn`] starts with `clone(CLONE_VM | CLONE_VFORK)`, on the
/// stack mapped for it. That child is not a copy: it runs in the master's own memory while the
/// master is suspended in `clone`. So it must write no memory but its own stack, `report` and
/// the kernel's (no allocation, no locks, no std I/O), call only async-signal-safe functions,
/// and never return (it ends in `execve` or `_exit`).
unsafe fn run_child(plan: &ChildPlan<'_>, report: &AtomicU64) -> ! {
    // SAFETY: `plan` points into the suspended master's memory, which nobody changes until we
    // exec or exit; `child_steps` only reads it, keeps its own state in this stack, and calls
    // raw syscalls and async-signal-safe libc functions. It writes two words of shared memory:
    // `report`, an atomic the master reads only once we have exited, and libc's errno, which is
    // the master's (same thread pointer): the master reads errno after `clone` only when
    // `clone` failed, that is when there was no child.
    unsafe { child_steps(plan, report) }
}

/// Step (c) of [`child_steps`], with its safety contract: RLIMIT_NOFILE to (`limit`, `hard`),
/// or the soft one clamped to the current hard limit when an unprivileged master may not
/// raise it.
#[allow(unsafe_op_in_unsafe_fn)]
unsafe fn set_file_limit(limit: libc::rlim_t, hard: libc::rlim_t, report: &AtomicU64) {
    let wanted = libc::rlimit {
        rlim_cur: limit,
        rlim_max: hard,
    };
    if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if Errno::last_raw() != libc::EPERM
            || libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) != 0
        {
            fail(report, Stage::FileLimit);
        }
        let clamped = libc::rlimit {
            rlim_cur: limit.min(current.rlim_max),
            rlim_max: current.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &clamped) != 0 {
            fail(report, Stage::FileLimit);
        }
    }
}

/// Step (e) of [`child_steps`], with its safety contract: groups, gid, uid, in that order; then
/// make sure root cannot come back. Raw syscalls: glibc's wrappers run a broadcast to "all
/// threads" that has no business in this child.
#[allow(unsafe_op_in_unsafe_fn)]
unsafe fn change_identity(creds: &Credentials, report: &AtomicU64) {
    let unchanged = libc::geteuid() != 0
        && libc::getuid() == creds.uid
        && libc::geteuid() == creds.uid
        && libc::getgid() == creds.gid
        && libc::getegid() == creds.gid;
    if !unchanged {
        if libc::syscall(
            libc::SYS_setgroups,
            creds.groups.len(),
            creds.groups.as_ptr(),
        ) != 0
        {
            fail(report, Stage::Groups);
        }
        if libc::syscall(libc::SYS_setgid, creds.gid) != 0 {
            fail(report, Stage::Gid);
        }
        if libc::syscall(libc::SYS_setuid, creds.uid) != 0 {
            fail(report, Stage::Uid);
        }
        if creds.uid != 0 && libc::syscall(libc::SYS_setuid, 0) == 0 {
            fail_with(report, Stage::RegainedRoot, libc::EPERM);
        }
    }
}

/// The body of [`run_child`].
///
/// # Safety
///
/// As [`run_child`].
#[allow(unsafe_op_in_unsafe_fn)]
unsafe fn child_steps(plan: &ChildPlan<'_>, report: &AtomicU64) -> ! {
    // (0) a table of our own, before anything in it changes: the master's is shared until
    // now. Only the few descriptors below the staged ones are copied (Linux 5.9+); an older
    // kernel copies them all.
    // Past a successful close_range nothing at or above `first` is open any more, which
    // bounds the fallback loop of (b).
    let mut scan_limit = plan.fd_scan_limit;
    if let Some(first) = plan.unshare_from {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        ) == 0
        {
            scan_limit = scan_limit.min(first);
        } else if libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) != 0 {
            fail(report, Stage::FdTable);
        }
    }

    // (a) fds 3 and 4: a source that already is 3 or 4 is first parked above 9, so that it is
    // neither clobbered by the other dup2 nor left with CLOEXEC set by a no-op dup2.
    let parked_status = park(plan.status_fd, report, Stage::StatusFd);
    let parked_listen = park(plan.listen_fd, report, Stage::ListenFd);
    place(parked_status, STATUS_FD, report, Stage::StatusFd);
    place(parked_listen, LISTEN_FD, report, Stage::ListenFd);

    // (b) every other descriptor closes at exec.
    if libc::syscall(
        libc::SYS_close_range,
        FIRST_CLOSED_FD as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) != 0
    {
        for fd in FIRST_CLOSED_FD..scan_limit {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0
                && flags & libc::FD_CLOEXEC == 0
                && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) != 0
            {
                fail(report, Stage::CloseOnExec);
            }
        }
    }

    // (b2) a process group of its own, before the identity change (as root or not, a
    // process may always make itself a group leader).
    if plan.own_process_group && libc::setpgid(0, 0) != 0 {
        fail(report, Stage::ProcessGroup);
    }

    // (c) RLIMIT_NOFILE.
    if let Some((limit, hard)) = plan.nofile_limit {
        set_file_limit(limit, hard, report);
    }

    // (d) default dispositions for every signal the master does not leave at SIG_DFL. The
    // mask is emptied last, just before exec, so nothing pending reaches a handler.
    dispositions::reset(plan.reset_signals);

    // (e) groups, gid, uid, in that order; then make sure root cannot come back.
    if let Some(creds) = plan.credentials {
        change_identity(creds, report);
    }

    // (f) the death signal is cleared by the kernel on a uid change, so it comes after.
    if plan.death_signal {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
            fail(report, Stage::DeathSignal);
        }
        if libc::getppid() != plan.parent {
            fail_with(report, Stage::ParentGone, libc::ESRCH);
        }
    }

    if let Some(dir) = plan.cwd {
        if libc::chdir(dir.as_ptr()) != 0 {
            fail(report, Stage::Chdir);
        }
    }

    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    if libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut()) != 0 {
        fail(report, Stage::SignalMask);
    }

    libc::execve(
        plan.program.as_ptr(),
        plan.argv.as_ptr(),
        plan.envp.as_ptr(),
    );
    fail(report, Stage::Exec)
}

/// `fd` (if any) as it is, or, when it is 3 or 4, a CLOEXEC copy of it above 9.
///
/// # Safety
///
/// Only in the cloned child (see [`run_child`]): async-signal-safe calls only.
unsafe fn park(fd: Option<RawFd>, report: &AtomicU64, stage: Stage) -> Option<RawFd> {
    let fd = fd?;
    if fd != STATUS_FD && fd != LISTEN_FD {
        return Some(fd);
    }
    // SAFETY: fcntl on an integer descriptor; a bad one just fails with EBADF.
    let parked = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, PARKING_FD) };
    if parked < 0 {
        // SAFETY: still in the child.
        unsafe { fail(report, stage) }
    }
    Some(parked)
}

/// Put a parked descriptor on `target` (dup2 leaves the copy without CLOEXEC), or make sure
/// `target` is closed when there is none.
///
/// # Safety
///
/// Only in the cloned child (see [`run_child`]): async-signal-safe calls only.
unsafe fn place(parked: Option<RawFd>, target: RawFd, report: &AtomicU64, stage: Stage) {
    match parked {
        Some(fd) => {
            // SAFETY: dup2 onto a number we own in the child; the other source is not on it
            // (it was parked if it was 3 or 4).
            if unsafe { libc::dup2(fd, target) } < 0 {
                // SAFETY: still in the child.
                unsafe { fail(report, stage) }
            }
        }
        // SAFETY: closing a number that may or may not be open; EBADF is fine.
        None => unsafe {
            libc::close(target);
        },
    }
}

/// Report the current errno for `stage` and `_exit`.
///
/// # Safety
///
/// Only in the cloned child (see [`run_child`]).
unsafe fn fail(report: &AtomicU64, stage: Stage) -> ! {
    // SAFETY: still in the child.
    unsafe { fail_with(report, stage, Errno::last_raw()) }
}

/// Report `errno` for `stage` to the parent and `_exit(127)`.
///
/// # Safety
///
/// Only in the cloned child (see [`run_child`]).
unsafe fn fail_with(report: &AtomicU64, stage: Stage, errno: i32) -> ! {
    // Stage codes start at 1, so a report is never 0.
    report.store(
        (stage as u64) << 32 | u64::from(errno as u32),
        Ordering::Release,
    );
    // SAFETY: leaving the child without running anything of the parent's (no atexit, no
    // destructors, no stdio flush).
    unsafe { libc::_exit(EXEC_FAILED_STATUS) }
}

#[cfg(test)]
mod tests;
