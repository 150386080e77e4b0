//! ringmaster: a Unix service master that does the job of Cyrus IMAP's `master`.
//!
//! `config` reads cyrus.conf, `supervisor` decides (a pure state machine), `sys` does every
//! syscall, `runtime` is the thin loop that joins them.

pub mod check;
pub mod cli;
pub mod config;
pub mod sys;
