//! Every syscall and every `unsafe` of the master: process spawning, signals, epoll, sockets,
//! pipes, reaping, the pidfile, user lookup, daemonizing, local time, syslog and /proc/self.
//!
//! In the master, this is the only module allowed to contain `unsafe`; each block carries a
//! `// SAFETY:` comment (clippy's `undocumented_unsafe_blocks` holds us to it). Elsewhere in
//! the project, `unsafe` lives only in ringmaster-service (a few documented blocks: fds 3 and 4,
//! accepted sockets, the SIGTERM handler) and in the demo worker (resetting SIGSEGV to crash on
//! purpose). Nothing here spawns a thread: the master is single-threaded, which is
//! what makes `fork` sound (see [`signals::assert_single_threaded`]).

pub mod clock;
pub mod control;
pub mod daemonize;
pub mod limits;
pub mod net;
pub mod pidfile;
pub mod pipe;
pub mod poller;
pub mod process;
pub mod procself;
pub mod reportfile;
pub mod signals;
pub mod spawn;
pub mod syslog;
pub mod upgrade;
pub mod users;

#[cfg(test)]
pub(crate) mod testutil;

pub use users::Credentials;
