//! Keeping the master's resident set small: once start-up is over, the code that only ran
//! then (argument and config parsing) need not stay mapped for the master's whole life.

use std::io;

/// Tells the kernel that the master's own code and read-only data are read at random
/// (no fault-around) and may be paged out now: what the loop still uses faults back in, one
/// page at a time. Shared libraries are left alone. Best effort: an old kernel that lacks
/// MADV_PAGEOUT only loses the saving.
pub fn trim_resident_code() -> io::Result<()> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if path != exe.as_os_str() || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        for advice in [libc::MADV_RANDOM, libc::MADV_PAGEOUT] {
            // SAFETY: the range is one of our own file-backed, non-writable mappings, read
            // from /proc/self/maps; these advices change no contents, only residency.
            let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
        }
    }
    Ok(())
}
