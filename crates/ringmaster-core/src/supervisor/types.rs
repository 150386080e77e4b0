//! The vocabulary of the supervisor: what comes in (inputs), what goes out (actions).

use std::time::Instant;

use ringmaster_proto::RawNote;

use super::log::LogRecord;
use super::status::ReloadReport;
use crate::config::{Config, Listen, Proto, RunAs};

pub type Pid = i32;

/// One SERVICES entry as bound: keeps its identity (and sockets) across reloads while its
/// name, listen and proto stay the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey(pub u32);

/// One listening socket of a service, with its own workers: Cyrus gives each address family
/// of an entry its own pool, told apart by `CYRUS_ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId {
    pub service: ServiceKey,
    pub family: u8,
}

/// What a child process is to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Start { index: usize },
    Worker { pool: PoolId },
    Event { name: String },
    Daemon { name: String },
}

/// How a child ended, from waitpid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal { signal: i32, core: bool },
}

impl ExitStatus {
    /// Cyrus counts exit 0 and 75 (EX_TEMPFAIL, its answer to SIGTERM) as clean.
    pub fn is_clean(self) -> bool {
        matches!(self, ExitStatus::Code(0) | ExitStatus::Code(75))
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signal { signal, core } => {
                write!(f, "signal {signal}")?;
                if *core {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Signals the supervisor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Hup,
    Term,
    Kill,
}

/// Which descriptors a child gets besides stdio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildFds {
    None,
    /// The pool's status pipe on fd 3 and its listener on fd 4.
    Worker(PoolId),
    /// A fresh pipe on fd 3 on which a `wait=y` daemon says "ok\r\n".
    DaemonReadyPipe,
}

/// A process to start, as plain data; `sys` turns it into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    pub role: Role,
    /// The entry's name (for logs and CYRUS_SERVICE).
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub run_as: RunAs,
    /// RLIMIT_NOFILE to apply; 0 leaves it alone.
    pub maxfds: u64,
    pub fds: ChildFds,
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Input {
    /// Start-up: run START, then daemons, then services.
    Boot,
    /// A deadline passed (or we just woke up): check timers.
    Tick,
    /// A watched listener has pending connections (`waiting` of them, when the kernel says;
    /// 1 when it cannot tell) or a datagram.
    ListenerReadable { pool: PoolId, waiting: u32 },
    /// A status note arrived on a pool's pipe.
    Note { pool: PoolId, note: RawNote },
    /// Every note one read of a pool's pipe brought, in order: timers and pools are seen to
    /// once for the lot, so a worker writing garbage costs little per note.
    Notes { pool: PoolId, notes: Vec<RawNote> },
    /// A child was reaped: one we started, or one of their descendants that came back to us
    /// (the master is their subreaper). `pgid`: its process group, when it could be read;
    /// `group_alive`: that group still has members (it left processes behind).
    Exited {
        pid: Pid,
        status: ExitStatus,
        pgid: Option<Pid>,
        group_alive: bool,
    },
    /// A spawn request became a process.
    Spawned { role: Role, pid: Pid },
    /// A group left behind was found to hold none of the master's children any more (its
    /// last members left it or were reaped unseen): the runtime did not signal it, and it is
    /// to be forgotten before its number is reused.
    GroupGone { pgid: Pid },
    /// A spawn request failed (fork or exec); the error is for the log.
    SpawnFailed { role: Role, error: String },
    /// A service's listeners were bound: one pool per family index listed.
    Bound {
        service: ServiceKey,
        families: Vec<u8>,
    },
    /// Nothing could be bound for a service.
    BindFailed { service: ServiceKey, error: String },
    /// A `wait=y` daemon said "ok\r\n".
    DaemonReady { name: String },
    /// A `wait=y` daemon said something else, or closed its pipe.
    DaemonNotReady { name: String, reason: String },
    /// SIGHUP.
    ReloadRequested,
    /// The config asked for by [`Action::LoadConfig`], valid.
    ConfigLoaded(Box<Config>),
    /// The config asked for by [`Action::LoadConfig`] was unreadable or invalid (already
    /// logged); `errors`: each problem, rendered with its file:line:col.
    ConfigRejected { errors: Vec<String> },
    /// SIGTERM/SIGINT (`graceful: false`) or SIGQUIT (`graceful: true`).
    Stop { graceful: bool },
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bind a service's listeners and make a status pipe per socket; answer with
    /// [`Input::Bound`] or [`Input::BindFailed`].
    /// A socket of a service in `take_over` (being retired by this same reload) that is
    /// bound to the same address is handed over instead of bound again, so that moving a
    /// socket between entries refuses nothing. Any other clash is a bind error, as in Cyrus.
    Bind {
        service: ServiceKey,
        name: String,
        listen: Listen,
        proto: Proto,
        take_over: Vec<ServiceKey>,
    },
    /// Start a process; answer with [`Input::Spawned`] or [`Input::SpawnFailed`].
    Spawn(SpawnRequest),
    Signal {
        pid: Pid,
        signal: Sig,
    },
    /// Signal every process of a group a worker left behind (never the master's own). The
    /// runtime first checks that a child of the master is still in the group (else the number
    /// may have been reused) and answers [`Input::GroupGone`] when none is.
    SignalGroup {
        pgid: Pid,
        signal: Sig,
    },
    /// Signal every live child of the master that is not in `known`: processes that escaped
    /// from their workers' groups (setsid) and came back to the master as their subreaper.
    SignalEscaped {
        signal: Sig,
        known: Vec<Pid>,
    },
    /// Watch (or stop watching) a pool's listener for readability.
    Watch {
        pool: PoolId,
        on: bool,
    },
    /// Refuse connections on a pool's listener (throttled) without closing it.
    Pause {
        pool: PoolId,
    },
    /// Accept connections again on a paused listener.
    Resume {
        pool: PoolId,
    },
    /// The service is gone: close its sockets once no kept service shares them, and its
    /// pipes. `refuse`: stop listening at once (new connections are refused even while
    /// busy workers still hold the socket); without it, the socket closes with its last
    /// holder (a fast stop, whose workers are all told to exit).
    Release {
        service: ServiceKey,
        refuse: bool,
    },
    /// Remove the per-process files a crashed Cyrus worker leaves (proc file, idle socket).
    CleanupAfterCrash {
        pid: Pid,
    },
    /// Read and validate the config again; answer with [`Input::ConfigLoaded`] or
    /// [`Input::ConfigRejected`].
    LoadConfig,
    /// Start-up is complete (sent once, when every service's first bind has an outcome;
    /// release a daemonized parent); `all_listening`: every service listens (write the
    /// ready file). When some were down, it comes again, with `all_listening`, once they
    /// all listen.
    Ready {
        all_listening: bool,
    },
    /// A reload ended: the config was rejected, or it was applied and has settled (or the
    /// settle cap ran out). Numbered as [`Supervisor::reload_answering_request`] says.
    ReloadFinished(ReloadReport),
    /// Print a log record (with its level, kind and fields).
    Log(LogRecord),
    /// Exit the master with this status (every child is gone).
    Exit(i32),
}

/// The present moment, in both clocks: monotonic for timers, wall for EVENTS.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: i64,
}
