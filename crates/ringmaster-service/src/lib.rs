//! Write ringmaster (and Cyrus master) workers in Rust: accept loop, status notes, graceful exit.
//!
//! A worker started by the master finds the status pipe on fd 3 and the listening socket on
//! fd 4, and its service name and id in `CYRUS_SERVICE` / `CYRUS_ID`.
//!
//! ```no_run
//! use std::io::Write;
//! use ringmaster_service::{Options, Worker};
//!
//! let worker = Worker::from_env_or_exit();
//! worker.run(Options::default(), |stream| {
//!     stream.write_all(b"* OK hello\r\n")
//! });
//! ```
//!
//! [`Worker::serve`] sends AVAILABLE when it starts (unless [`Options::announce`] is off, which
//! is how Cyrus's own services behave), CONNECTION for each client, AVAILABLE after each client;
//! it stops after [`Options::max_uses`] clients or on SIGHUP (at once when idle, after the
//! client when busy). SIGTERM exits 75 at once. When the master set `RINGMASTER_EXIT_NOTES=1`,
//! every exit through this crate is preceded by the `Exiting` note.
//!
//! `unsafe` in this crate, each block with a `// SAFETY:` note: taking ownership of fds 3 and
//! 4 ([`Worker::from_env`]) and of each accepted socket (`serve.rs`), borrowing fd 3 to say a
//! daemon is ready, and the SIGTERM handler with its installation (`signals.rs`).

#![warn(clippy::undocumented_unsafe_blocks)]

mod lifecycle;
mod serve;
mod signals;
mod stream;

pub use lifecycle::{Lifecycle, Next, Stop, DEFAULT_MAX_USES, EXIT_NO_ENV, EXIT_TERMINATED};
pub use nix::sys::socket::SockaddrStorage;
pub use ringmaster_proto::Message;
pub use serve::{ACCEPT_GRACE, MAX_DATAGRAM};
pub use signals::{OnHangup, OnTerminate};
pub use stream::Stream;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use ringmaster_proto::{RawNote, DAEMON_READY, ENV_EXIT_NOTES, ENV_ID, ENV_ISDAEMON, ENV_SERVICE};

/// `EX_OSERR`: the exit status of [`Worker::run`] when the accept loop itself fails.
pub const EXIT_OS_ERROR: i32 = 71;

/// How [`Worker::serve`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Send AVAILABLE before the first client. ringmaster counts such a worker ready only
    /// then; Cyrus's master counts every worker ready from its fork, so turn this off there.
    pub announce: bool,
    /// Clients served before exiting 0 (Cyrus `-U`); 0 means no limit.
    pub max_uses: u32,
    /// SIGHUP: recycle (Cyrus) or ignore.
    pub on_hangup: OnHangup,
    /// SIGTERM: exit 75 (Cyrus) or ignore.
    pub on_terminate: OnTerminate,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            announce: true,
            max_uses: DEFAULT_MAX_USES,
            on_hangup: OnHangup::Recycle,
            on_terminate: OnTerminate::Exit,
        }
    }
}

/// Why a worker could not be built from its environment.
#[derive(Debug)]
pub enum EnvError {
    /// `CYRUS_SERVICE` or `CYRUS_ID` is not set (or not unicode).
    Missing(&'static str),
    /// `CYRUS_ID` is not a number.
    BadId(String),
    /// fd 3 (the status pipe) is not open.
    NoStatusFd,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::Missing(name) => write!(f, "could not getenv({name})"),
            EnvError::BadId(v) => write!(f, "{ENV_ID} is not a number: {v:?}"),
            EnvError::NoStatusFd => write!(f, "fd 3 (the master's status pipe) is not open"),
        }
    }
}

impl std::error::Error for EnvError {}

/// One worker process: who it is, its status pipe and, for services, its listening socket.
#[derive(Debug)]
pub struct Worker {
    service: String,
    id: u32,
    pid: i32,
    daemon: bool,
    exit_notes: bool,
    status: OwnedFd,
    listener: Option<OwnedFd>,
}

fn fd_is_open(fd: RawFd) -> bool {
    // A raw number, not a BorrowedFd: a borrow promises the fd is open, which is the question.
    fcntl(fd, FcntlArg::F_GETFD).is_ok()
}

fn set_cloexec(fd: BorrowedFd<'_>) {
    // Best effort, as in Cyrus: a failure leaves the fd to the handler's children.
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
}

/// A DAEMON entry with `wait=y` that is not otherwise a [`Worker`]: write `ok\r\n` on fd 3.
pub fn announce_daemon_ready() -> io::Result<()> {
    if !fd_is_open(ringmaster_proto::STATUS_FD) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            EnvError::NoStatusFd,
        ));
    }
    // SAFETY: fd 3 is open (checked above); we only borrow it for this one write.
    let fd = unsafe { BorrowedFd::borrow_raw(ringmaster_proto::STATUS_FD) };
    let n = nix::unistd::write(fd, DAEMON_READY)?;
    if n != DAEMON_READY.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write on fd 3",
        ));
    }
    Ok(())
}

impl Worker {
    /// The worker the master started: env `CYRUS_SERVICE`, `CYRUS_ID`, `CYRUS_ISDAEMON`,
    /// `RINGMASTER_EXIT_NOTES`, fd 3 and (when open) fd 4. Takes ownership of fds 3 and 4 and
    /// marks them close-on-exec, so programs the handler runs do not inherit them.
    pub fn from_env() -> Result<Worker, EnvError> {
        let service = std::env::var(ENV_SERVICE).map_err(|_| EnvError::Missing(ENV_SERVICE))?;
        let id_text = std::env::var(ENV_ID).map_err(|_| EnvError::Missing(ENV_ID))?;
        let id = id_text
            .trim()
            .parse::<u32>()
            .map_err(|_| EnvError::BadId(id_text.clone()))?;
        let flag = |name: &str| std::env::var(name).map(|v| v == "1").unwrap_or(false);
        if !fd_is_open(ringmaster_proto::STATUS_FD) {
            return Err(EnvError::NoStatusFd);
        }
        // SAFETY: fd 3 is open (checked above) and, by the master/worker protocol, ours; this
        // is the only place that takes ownership of it.
        let status = unsafe { OwnedFd::from_raw_fd(ringmaster_proto::STATUS_FD) };
        let listener = fd_is_open(ringmaster_proto::LISTEN_FD).then(|| {
            // SAFETY: fd 4 is open (checked) and by the protocol the listener the master gave
            // us; this is the only place that takes ownership of it.
            unsafe { OwnedFd::from_raw_fd(ringmaster_proto::LISTEN_FD) }
        });
        let mut worker = Worker::with_fds(service, id, status, listener);
        worker.daemon = flag(ENV_ISDAEMON);
        worker.exit_notes = flag(ENV_EXIT_NOTES);
        set_cloexec(worker.status.as_fd());
        if let Some(l) = &worker.listener {
            set_cloexec(l.as_fd());
        }
        Ok(worker)
    }

    /// [`Worker::from_env`], or a message on stderr and exit 70 (`EX_SOFTWARE`), like Cyrus.
    pub fn from_env_or_exit() -> Worker {
        match Worker::from_env() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("{e}; exiting");
                std::process::exit(EXIT_NO_ENV);
            }
        }
    }

    /// A worker on fds of your choosing (tests, or workers started some other way).
    pub fn with_fds(
        service: impl Into<String>,
        id: u32,
        status: OwnedFd,
        listener: Option<OwnedFd>,
    ) -> Worker {
        Worker {
            service: service.into(),
            id,
            pid: std::process::id() as i32,
            daemon: false,
            exit_notes: false,
            status,
            listener,
        }
    }

    /// Send `Exiting` notes before exits (what `RINGMASTER_EXIT_NOTES=1` turns on).
    pub fn set_exit_notes(&mut self, on: bool) {
        self.exit_notes = on;
    }

    /// The cyrus.conf entry this worker serves.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// 0 for the entry's first address family, 1 for a second.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// This process's pid, as sent in notes.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the master started this as a DAEMON entry.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether the master wants `Exiting` notes.
    pub fn exit_notes(&self) -> bool {
        self.exit_notes
    }

    /// The listening socket, if the master gave one.
    pub fn listener(&self) -> Option<BorrowedFd<'_>> {
        self.listener.as_ref().map(|l| l.as_fd())
    }

    /// Send one status note (one `write(2)` of 8 bytes).
    pub fn note(&self, message: Message) -> io::Result<()> {
        self.write_status(&RawNote::new(message, self.pid).encode())
    }

    /// A DAEMON entry with `wait=y`: tell the master we are ready (`ok\r\n` on fd 3).
    pub fn daemon_ready(&self) -> io::Result<()> {
        self.write_status(DAEMON_READY)
    }

    fn write_status(&self, bytes: &[u8]) -> io::Result<()> {
        let n = nix::unistd::write(&self.status, bytes)?;
        if n != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write to the status pipe: {n} of {}", bytes.len()),
            ));
        }
        Ok(())
    }

    /// Exit the process with `code`, after the `Exiting` note when the master wants one.
    pub fn exit(&self, code: i32) -> ! {
        if self.exit_notes {
            let _ = self.note(Message::Exiting);
        }
        std::process::exit(code)
    }

    /// [`Worker::serve`] until stopped, then exit: 0 when stopped, 71 when the loop failed.
    pub fn run<F>(self, options: Options, handler: F) -> !
    where
        F: FnMut(&mut Stream) -> io::Result<()>,
    {
        match self.serve(options, handler) {
            Ok(stop) => self.exit(stop.exit_code()),
            Err(e) => {
                eprintln!("{}[{}]: accept loop failed: {e}", self.service, self.pid);
                self.exit(EXIT_OS_ERROR)
            }
        }
    }
}
