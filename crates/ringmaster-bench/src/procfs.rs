//! What the bench reads from /proc: a process's children, state and resident size.

use std::fs;

/// Fields of `/proc/<pid>/stat` the bench needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
}

/// Parse `/proc/<pid>/stat` text: the command sits in parentheses and may hold anything, so
/// the fields are read after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { pid, ppid, state })
}

/// The stat of one process, if it still exists.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The nice value of a process (field 19 of `/proc/<pid>/stat`), to check that both masters
/// run at the same priority.
pub fn nice(pid: i32) -> Option<i64> {
    parse_nice(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn parse_nice(text: &str) -> Option<i64> {
    // After the command: state is field 3, so nice (19) is the 17th.
    text[text.rfind(')')? + 1..]
        .split_whitespace()
        .nth(16)?
        .parse()
        .ok()
}

/// User plus system CPU time of a process itself (fields 14 and 15 of `/proc/<pid>/stat`,
/// not its children's), in seconds.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    parse_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
        .map(|t| t as f64 / clock_ticks())
}

/// User plus system CPU time of the bench itself, all its threads, in seconds.
pub fn own_cpu_seconds() -> Option<f64> {
    parse_cpu_ticks(&fs::read_to_string("/proc/self/stat").ok()?).map(|t| t as f64 / clock_ticks())
}

/// User plus system CPU time of the calling thread alone, in seconds.
pub fn thread_cpu_seconds() -> Option<f64> {
    parse_cpu_ticks(&fs::read_to_string("/proc/thread-self/stat").ok()?)
        .map(|t| t as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

pub fn parse_cpu_ticks(text: &str) -> Option<u64> {
    // After the command: state is field 3, so utime (14) is the 12th and stime the 13th.
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The pids listed as children of `parent`, zombies included (one file read: cheap enough
/// to poll with 20,000 children). Empty when the list cannot be read.
pub fn child_list(parent: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Children of `parent` that are alive (not zombies).
///
/// The kernel's list of the master's children is read first (one file, so that polling it
/// every few milliseconds takes little of the CPU the measured recycle needs); each listed
/// child's state is then checked. Without that list (a kernel built without
/// CONFIG_PROC_CHILDREN) every process is scanned.
pub fn children(parent: i32) -> Vec<i32> {
    let listed = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"));
    let Ok(listed) = listed else {
        return scan_children(parent);
    };
    let mut out: Vec<i32> = listed
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.ppid == parent && s.state != 'Z'))
        .collect();
    out.sort_unstable();
    out
}

/// [`children`] by reading the stat of every process.
fn scan_children(parent: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(s) = stat(pid) {
            if s.ppid == parent && s.state != 'Z' {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in kB.
pub fn status_kb(pid: i32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&text, key)
}

pub fn parse_status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One line for a stuck process: pid, state, signal masks and where it sleeps.
pub fn describe(pid: i32) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let fields: Vec<&str> = status
        .lines()
        .filter(|l| {
            ["State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    format!(
        "pid {pid} {} wchan {wchan}",
        fields.join(" ").replace('\t', " ")
    )
}

/// The command line of a process, arguments joined by spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let s = parse_stat("42 (a) b (c)) S 7 42 42 0 -1").unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 42,
                ppid: 7,
                state: 'S'
            }
        );
    }

    #[test]
    fn nice_is_field_19() {
        let text = "42 (a b) S 1 42 42 0 -1 4194560 10 0 0 0 1 2 0 0 20 -5 1 0 100";
        assert_eq!(parse_nice(text), Some(-5));
        assert!(nice(std::process::id() as i32).is_some());
    }

    #[test]
    fn cpu_is_utime_plus_stime() {
        let text = "42 (a b) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 100 100 20 0 1 0 100";
        assert_eq!(parse_cpu_ticks(text), Some(10));
        assert!(cpu_seconds(std::process::id() as i32).is_some());
    }

    #[test]
    fn status_lines() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
    }

    #[test]
    fn we_are_our_parents_child() {
        let me = std::process::id() as i32;
        let parent = stat(me).unwrap().ppid;
        assert!(children(parent).contains(&me));
    }
}
