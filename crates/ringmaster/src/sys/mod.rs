//! Every syscall and every `unsafe` of ringmaster: process spawning, signals, epoll, sockets,
//! pipes, reaping, the pidfile, user lookup, daemonizing, local time and syslog.
//!
//! This is the only module of the project allowed to contain `unsafe`; each block carries a
//! `// SAFETY:` comment. Nothing here spawns a thread: the master is single-threaded, which is
//! what makes `fork` sound (see [`signals::assert_single_threaded`]).

pub mod clock;
pub mod daemonize;
pub mod memory;
pub mod net;
pub mod pidfile;
pub mod pipe;
pub mod poller;
pub mod process;
pub mod signals;
pub mod spawn;
pub mod syslog;
pub mod users;

#[cfg(test)]
pub(crate) mod testutil;

pub use users::Credentials;
