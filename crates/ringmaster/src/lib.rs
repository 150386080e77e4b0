//! ringmaster: a Unix service master that does the job of Cyrus IMAP's `master`.
//!
//! The shell around the pure core ([`ringmaster_core`]: config, supervisor): `sys` does every
//! syscall, `runtime` is the thin loop that joins them, `launch` prepares what gets forked.

#![warn(clippy::undocumented_unsafe_blocks)]
// No function over 80 lines (clippy.toml), save those that say why.
#![warn(clippy::too_many_lines)]

pub mod assets;
pub mod check;
pub mod cli;
pub mod control;
pub mod cyrus_prom;
pub mod demo;
pub mod exec;
pub mod launch;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod metrics_http;
pub mod notify;
pub mod run;
pub mod runtime;
pub mod sys;
pub mod upgrade;

/// The version and git revision, as `--version` prints them and the master logs at start.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("RINGMASTER_GIT_REV"),
    ")"
);
