//! Helpers shared by the tests of `sys`: scratch directories, waiting for a child by pid,
//! running a closure in a forked single-threaded copy of the test process, and skipping a test
//! whose requirement is missing (never in CI).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ringmaster-sys-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a test whose requirement `what` is missing must skip: true (with the reason printed)
/// when `available` is false outside CI; with `CI=true` a missing requirement fails the test,
/// since CI (root, IPv6 loopback, the usual users and groups) must run every test.
pub fn skip_unless(available: bool, what: &str) -> bool {
    if available {
        return false;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "CI=true but {what} is not available"
    );
    eprintln!("SKIPPED: {what} is not available");
    true
}

/// Wait (bounded) for one child to end; kill it if it overstays.
pub fn wait_for(pid: Pid, limit: Duration) -> WaitStatus {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return status,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("waitpid({pid}): {e}"),
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let status = waitpid(pid, None);
            panic!("child {pid} did not end within {limit:?}: killed ({status:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run `body` in a forked child (a single-threaded copy of this test), so it may touch
/// process-wide state (signal mask, children, umask, session) without disturbing other tests.
/// The child exits 0 when `body` returns true; returns whether it did.
pub fn in_forked_child(limit: Duration, body: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child runs only `body` and then `_exit`s; glibc's malloc is usable after fork
    // (its atfork handlers reset the arena locks), and `body` must not print (stdout's lock may
    // be held by another test thread at the time of the fork).
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(false);
            // SAFETY: leaving the forked copy at once, running no destructors or atexit hooks.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => matches!(
            wait_for(Pid::from_raw(pid), limit),
            WaitStatus::Exited(_, 0)
        ),
    }
}
