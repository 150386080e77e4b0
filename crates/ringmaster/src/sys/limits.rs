//! The master's resource limits: RLIMIT_NOFILE raised to what the configuration needs (the
//! limits it started with kept for its children), and the kernel's pid_max.

use std::io;
use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// RLIMIT_NOFILE as the master was started with: what its children get back.
static ORIGINAL_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// The current RLIMIT_NOFILE, (soft, hard).
pub fn nofile() -> io::Result<(u64, u64)> {
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?)
}

/// Raises the soft RLIMIT_NOFILE to `wanted`, and the hard limit too when it is lower and
/// the master may (root, up to /proc/sys/fs/nr_open); else as far as the hard limit goes.
/// Never lowers anything. Returns the limits now in force.
pub fn raise_nofile(wanted: u64) -> io::Result<(u64, u64)> {
    let (soft, hard) = nofile()?;
    if soft >= wanted {
        return Ok((soft, hard));
    }
    let _ = ORIGINAL_NOFILE.set((soft, hard));
    if hard < wanted {
        let ceiling = nr_open().unwrap_or(wanted);
        let target = wanted.min(ceiling).max(hard);
        if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_ok() {
            return nofile();
        }
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard)?;
    nofile()
}

/// The RLIMIT_NOFILE the master started with, if it changed it since: a child that sets
/// none of its own (maxfds) gets it back. None: nothing to restore.
pub fn original_nofile() -> Option<(u64, u64)> {
    ORIGINAL_NOFILE.get().copied()
}

/// /proc/sys/kernel/pid_max: no more processes than this can exist at once.
pub fn pid_max() -> Option<u64> {
    read_number("/proc/sys/kernel/pid_max")
}

/// /proc/sys/fs/nr_open: the highest RLIMIT_NOFILE the kernel allows.
fn nr_open() -> Option<u64> {
    read_number("/proc/sys/fs/nr_open")
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_already_high_enough_is_left_alone() {
        let before = nofile().expect("getrlimit");
        assert_eq!(raise_nofile(before.0).expect("raise"), before);
        assert_eq!(raise_nofile(1).expect("raise"), before);
    }

    #[test]
    fn pid_max_is_read() {
        assert!(pid_max().is_some_and(|n| n > 300));
    }
}
