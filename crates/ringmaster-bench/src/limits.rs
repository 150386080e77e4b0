//! What bounds the largest scale run on this machine (pid_max, threads-max, open files,
//! memory), raising RLIMIT_NOFILE for the bench and the masters it starts; and the sweep that
//! kills workers a stopped master left behind, found as the bench's own orphans.

use std::collections::HashSet;
use std::fs;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::procfs;

/// The machine's limits, read once at the start of `scale`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub pid_max: u64,
    pub threads_max: u64,
    pub nofile: u64,
    /// Processes (threads included) alive when the bench started.
    pub tasks_now: u64,
    pub mem_available_kb: u64,
}

fn read_u64(path: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// `MemAvailable` of /proc/meminfo, in kB.
pub fn mem_available_kb() -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    procfs::parse_status_kb(&text, "MemAvailable").unwrap_or(0)
}

/// Open files wanted for the masters: 5,000 services take about 20,000 (a listener and two
/// pipe ends each, and more), the default hard limit of many machines (20,000 here).
const NOFILE_WANTED: u64 = 65_536;

/// Raise RLIMIT_NOFILE to [`NOFILE_WANTED`] where allowed (root may raise the hard limit up
/// to fs.nr_open), else the soft limit to the hard one; the masters inherit it, both alike.
/// Also
/// make the bench a child subreaper (so that workers of a killed master become ours to
/// kill), and read the limits.
pub fn prepare() -> Limits {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let nr_open = read_u64("/proc/sys/fs/nr_open");
        let want = NOFILE_WANTED.min(if nr_open > 0 { nr_open } else { hard });
        if want <= hard || setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("note: cannot become a child subreaper ({e}); orphans go to init");
    }
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let tasks_now = loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Limits {
        pid_max: read_u64("/proc/sys/kernel/pid_max"),
        threads_max: read_u64("/proc/sys/kernel/threads-max"),
        nofile: getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(0),
        tasks_now,
        mem_available_kb: mem_available_kb(),
    }
}

impl Limits {
    /// Print the limits and what they allow.
    pub fn describe(&self) {
        let free = self
            .pid_max
            .min(self.threads_max)
            .saturating_sub(self.tasks_now);
        println!(
            "limits: pid_max {}, threads-max {}, RLIMIT_NOFILE {} (soft and hard, for both masters), \
             {} tasks already running, MemAvailable {} MB",
            self.pid_max,
            self.threads_max,
            self.nofile,
            self.tasks_now,
            self.mem_available_kb / 1024
        );
        println!(
            "  room for about {free} more processes: a master that keeps the old pool until \
             the new one is up (ringmaster) needs 2 x workers during a reload, so about {} \
             workers fit; one that lets the old go first (Cyrus), about {free}",
            free / 2
        );
    }

    /// Why `workers` may not fit, if it may not.
    pub fn misfit(&self, workers: u64) -> Option<String> {
        let room = self
            .pid_max
            .min(self.threads_max)
            .saturating_sub(self.tasks_now);
        (2 * workers > room).then(|| {
            format!(
                "{workers} workers: a reload that keeps both generations needs {} pids, \
                 {room} are free under pid_max {}",
                2 * workers,
                self.pid_max
            )
        })
    }
}

/// Children of the bench itself (every thread's list: orphans are handed to any of them).
fn own_children() -> Vec<i32> {
    let me = std::process::id();
    let Ok(tasks) = fs::read_dir(format!("/proc/{me}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// SIGKILL and reap every child of the bench that runs `worker` (orphans of a master that
/// was killed or exited before them), except `keep`. Returns how many there were.
pub fn sweep_orphans(worker: &str, keep: &HashSet<i32>) -> usize {
    let mut killed = Vec::new();
    for pid in own_children() {
        if keep.contains(&pid) {
            continue;
        }
        // Only our worker binary: anything else is not ours to end.
        if procfs::cmdline(pid).is_some_and(|c| c.starts_with(worker))
            || procfs::stat(pid).is_some_and(|s| s.state == 'Z')
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    for &pid in &killed {
        // A killed process is reaped at once; a bounded number of tries all the same.
        for _ in 0..100 {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => break,
            }
        }
    }
    killed.len()
}
