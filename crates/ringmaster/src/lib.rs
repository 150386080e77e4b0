//! ringmaster: a Unix service master that does the job of Cyrus IMAP's `master`.
//!
//! `config` reads cyrus.conf, `supervisor` decides (a pure state machine), `sys` does every
//! syscall, `runtime` is the thin loop that joins them, `launch` prepares what gets forked.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod launch;
pub mod logging;
pub mod ratelimit;
pub mod run;
pub mod runtime;
pub mod supervisor;
pub mod sys;
