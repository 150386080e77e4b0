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

mod config;
mod ratelimit;
mod supervisor;

pub use config::{
    describe_cron, load_cyrus_conf_with, load_imapd_conf_all, parse_cyrus_conf, parse_imapd_conf,
    render, render_capped, Command, Config, CronSpec, DaemonEntry, Diagnostic, EventEntry,
    ImapdConf, Listen, Loaded, Location, ParseEnv, Proto, RunAs, Schedule, ServiceEntry,
    ServicesDb, Severity, StartEntry, TimeOfDay, Transport, Unresolved,
};
pub use ratelimit::{escape, RateLimiter, Verdict};
pub use supervisor::{
    utc, Action, ChildFds, ExitStatus, Input, LocalClock, LocalTime, Now, Pid, PoolId, Role,
    ServiceKey, Settings, Sig, SpawnRequest, Supervisor, EXIT_BIND_FAILED, EXIT_CONFIG,
    EXIT_START_FAILED,
};
// What `Supervisor::status` reports (status, metrics, systemd).
pub use supervisor::{
    DaemonStatus, DownService, EventStatus, ExitReason, MasterPhase, PoolCounters, PoolStatus,
    ReloadCounters, ReloadReport, ReloadResult, Status, WorkerCounts,
};
