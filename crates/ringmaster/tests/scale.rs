//! At scale: 2,000 workers over a few services, all recycled by one SIGHUP; fails if any old
//! worker is left once the reload has settled.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const SERVICES: usize = 20;
const PREFORK: usize = 100;
const WORKERS: usize = SERVICES * PREFORK;
/// Thousands of forks and execs of a debug build on a 2-core machine shared with compiles:
/// generous, and only ever waited for a condition.
const SCALE_WAIT: Duration = Duration::from_secs(180);

/// A process as (pid, start time in clock ticks since boot): a pid the kernel reuses for a
/// new worker is not mistaken for an old one.
type Proc = (i32, u64);

/// The master's live children, read from its own children list (cheaper than a walk of
/// /proc when there are thousands), with their start times; zombies left out.
fn children(master: i32) -> BTreeSet<Proc> {
    let list =
        fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
    list.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command's closing parenthesis: state is the 1st, start time
            // the 20th.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            (rest.first() != Some(&"Z")).then_some(())?;
            Some((pid, rest.get(19)?.parse().ok()?))
        })
        .collect()
}

fn alive(p: &Proc) -> bool {
    start_time(p.0) == Some(p.1)
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    rest.get(19)?.parse().ok()
}

#[test]
fn two_thousand_workers_are_all_recycled_by_one_sighup() {
    let dir = TestDir::new("scale");
    let mut conf = String::from("SERVICES {\n");
    for (i, port) in free_ports(SERVICES).into_iter().enumerate() {
        conf.push_str(&format!(
            "  s{i} cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork={PREFORK}\n"
        ));
    }
    conf.push_str("}\n");
    let mut m = Start::new(&dir, &conf).spawn();
    m.wait_ready_for(SCALE_WAIT);
    let master = m.pid;

    let mut old = BTreeSet::new();
    let started = wait_until(SCALE_WAIT, || {
        old = children(master);
        old.len() == WORKERS
    });
    assert!(started, "{} of {WORKERS} workers started", old.len());
    // Everything the harness must clean up if the test fails half-way.
    m.children();

    m.signal(Signal::SIGHUP);
    let mut now = BTreeSet::new();
    let recycled = wait_until(SCALE_WAIT, || {
        now = children(master);
        now.len() == WORKERS && now.is_disjoint(&old)
    });
    let left: Vec<&Proc> = old.iter().filter(|p| alive(p)).collect();
    assert!(
        recycled,
        "after the reload: {} workers, {} old ones left (e.g. {:?})\n{}",
        now.len(),
        left.len(),
        left.iter().take(5).collect::<Vec<_>>(),
        tail(&m.log_text())
    );
    assert!(left.is_empty(), "old workers still running: {left:?}");
    m.children();
    // The new generation holds at its prefork, none more.
    assert_eq!(children(master).len(), WORKERS);
    assert!(!m.log_text().contains("too many failures"));
    assert!(
        m.stop().is_some_and(|s| s.success()),
        "{}",
        tail(&m.log_text())
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
