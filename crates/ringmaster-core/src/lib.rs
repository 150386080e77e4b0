//! ringmaster-core: the pure core of ringmaster, everything that decides and nothing that acts.
//!
//! `config` reads cyrus.conf and imapd.conf into a validated model; `supervisor` is the state
//! machine that turns what happened into what to do (`handle(input, now) -> actions`);
//! `ratelimit` keeps one noisy source from flooding the log. The core makes no syscall of its
//! own: it depends on no nix, libc or socket2, and the compiler forbids it raw pointers. The
//! one exception to purity is that config files are read with `std::fs` (the `load_*`
//! functions); that is reading input, not wrapping the operating system, and the pure
//! `parse_*` functions take text.
//!
//! The modules are private; what the shell (the `ringmaster` crate) needs is exported here.

#![forbid(unsafe_code)]
// No function over 80 lines (clippy.toml): split it, or say why a table-like one is not.
#![warn(clippy::too_many_lines)]

mod config;
mod ratelimit;
mod supervisor;
mod wording;

pub use config::{
    describe_cron, load_cyrus_conf_with, load_imapd_conf_all, parse_cyrus_conf, parse_imapd_conf,
    render, render_capped, Command, Config, CronSpec, DaemonEntry, Diagnostic, EventEntry,
    ImapdConf, Listen, Loaded, Location, ParseEnv, Proto, RunAs, Schedule, ServiceEntry,
    ServicesDb, Severity, StartEntry, TimeOfDay, Transport, Unresolved,
};
pub use ratelimit::{escape, RateLimiter, Verdict};
pub use supervisor::{
    handover, readiness, utc, Action, ChildFds, ExitStatus, Field, Input, Level, LocalClock,
    LocalTime, LogEvent, LogRecord, Now, Pid, PoolId, Readiness, Role, ServiceKey, Settings, Sig,
    SpawnRequest, Supervisor, EXIT_BIND_FAILED, EXIT_CONFIG, EXIT_START_FAILED,
};
pub use wording::counted;
// What `Supervisor::status` reports (status, metrics, systemd) and what `Supervisor::plan`
// plans (reload --dry-run).
pub use supervisor::{
    DaemonStatus, DownService, EntryChange, EntryPlan, EventStatus, ExitReason, MasterPhase,
    PoolCounters, PoolStatus, ReloadCounters, ReloadPlan, ReloadReport, ReloadResult,
    ServiceChange, ServicePlan, Status, WorkerCounts,
};
// What a binary upgrade hands from one image of the master to the next.
pub use supervisor::{
    AdoptError, DaemonSnapshot, EventSnapshot, PoolSnapshot, RecycleSnapshot, ReloadSnapshot,
    ServiceState, SupervisorState, WorkerPhase, WorkerSnapshot,
};
