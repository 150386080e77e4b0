//! The master's own resource use, from /proc/self: resident memory and open descriptors, for
//! the metrics.

use std::fs;

/// Resident set size in bytes (/proc/self/statm's second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * u64::try_from(page).ok()?)
}

/// Open descriptors, not counting the one that lists them.
pub fn open_fds() -> Option<u64> {
    let listed = fs::read_dir("/proc/self/fd").ok()?.count();
    u64::try_from(listed.saturating_sub(1)).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_test_process_has_memory_and_descriptors() {
        assert!(super::resident_bytes().is_some_and(|b| b > 0));
        // stdin, stdout and stderr at least.
        assert!(super::open_fds().is_some_and(|n| n >= 3));
    }
}
