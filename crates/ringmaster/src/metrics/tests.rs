//! Unit tests of the exposition: parsed back with a real parser (prometheus-parse), checked
//! strictly line by line (its parser skips what it does not understand).

use super::*;
use ringmaster_core::{
    MasterPhase, PoolCounters, ReloadCounters, ReloadReport, ReloadResult, WorkerCounts,
};
use std::collections::HashSet;
use std::time::Duration;

fn pool(service: &str, family: u8, listen: &str, generation: u64) -> PoolStatus {
    PoolStatus {
        service: service.into(),
        family,
        listen: listen.into(),
        proto: "tcp".into(),
        generation,
        retiring: false,
        workers: WorkerCounts {
            starting: 1,
            ready: 2,
            busy: 3,
            draining: 0,
        },
        prefork: 2,
        maxchild: None,
        maxforkrate: 0,
        forks_last_second: 0,
        counters: PoolCounters {
            forks: 7,
            exits: [1, 2, 3, 4],
            ready_fails: 0,
            last_exec_error: None,
        },
        waiting: 5,
        paused_until: None,
    }
}

fn status(now: Instant) -> Status {
    let mut old = pool("imap", 4, "127.0.0.1:143", 1);
    old.retiring = true;
    old.workers = WorkerCounts {
        draining: 4,
        ..WorkerCounts::default()
    };
    old.counters.forks = 5;
    let mut odd = pool("we\"ird\\name\n", 0, "/run/x.sock", 0);
    odd.paused_until = Some(now + Duration::from_secs(3));
    Status {
        phase: MasterPhase::Running,
        pools: vec![pool("imap", 4, "127.0.0.1:143", 2), old, odd],
        down: vec![],
        daemons: vec![],
        events: vec![],
        reloads: ReloadCounters {
            applied: 2,
            partial: 0,
            rejected: 1,
            last: Some(ReloadReport {
                id: 3,
                started: now - Duration::from_millis(2500),
                finished: now - Duration::from_secs(2),
                result: ReloadResult::Rejected { errors: vec![] },
                draining: 0,
            }),
        },
        reload_in_progress: None,
        all_listening: true,
    }
}

/// Checks the text strictly: every line a HELP, a TYPE, or a sample of the family typed last;
/// no family typed twice; no series twice. Returns the samples parsed by prometheus-parse.
pub(crate) fn parse_strictly(text: &str) -> Vec<prometheus_parse::Sample> {
    use prometheus_parse::LineInfo;
    let mut typed = HashSet::new();
    let mut current = String::new();
    let mut series = HashSet::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type { metric_name, .. } => {
                assert!(typed.insert(metric_name.clone()), "typed twice: {line}");
                current = metric_name;
            }
            LineInfo::Sample {
                metric_name,
                labels,
                ..
            } => {
                assert_eq!(metric_name, current, "sample outside its family: {line}");
                assert!(
                    series.insert((metric_name.to_string(), labels.map(str::to_string))),
                    "series twice: {line}"
                );
            }
            other => panic!("not exposition: {line:?} ({other:?})"),
        }
    }
    assert!(text.ends_with('\n'));
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("parses")
        .samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match found[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{other:?}"),
    }
}

/// The status above, rendered, checked strictly and parsed.
fn rendered() -> Vec<prometheus_parse::Sample> {
    let now = Instant::now();
    let mut families = Families::default();
    families.insert("imap", 4, "ipv4");
    let info = MasterInfo {
        families,
        resident_bytes: Some(4096),
        open_fds: Some(12),
        now,
        unix_now: 1_000_000.0,
    };
    parse_strictly(&render(&status(now), &info))
}

#[test]
fn render_is_valid_exposition_with_the_expected_series() {
    let samples = rendered();
    let imap = [
        ("service", "imap"),
        ("family", "ipv4"),
        ("listen", "127.0.0.1:143"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = imap.to_vec();
        l.push(extra);
        l
    };
    // The retiring pool and the new one on the same labels are one series.
    assert_eq!(
        value(&samples, "ringmaster_workers", &with(("state", "ready"))),
        2.0
    );
    assert_eq!(
        value(&samples, "ringmaster_workers", &with(("state", "draining"))),
        4.0
    );
    assert_eq!(value(&samples, "ringmaster_forks_total", &imap), 7.0);
    assert_eq!(
        value(
            &samples,
            "ringmaster_exits_total",
            &with(("reason", "crash"))
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "ringmaster_exits_total",
            &with(("reason", "recycled"))
        ),
        4.0
    );
    assert_eq!(
        value(&samples, "ringmaster_connections_waiting", &imap),
        10.0
    );
    assert_eq!(value(&samples, "ringmaster_paused", &imap), 0.0);
    // Label values are escaped (prometheus-parse hands them back still escaped).
    let odd = [("service", r#"we\"ird\\name\n"#), ("family", "unix")];
    assert_eq!(value(&samples, "ringmaster_paused", &odd), 1.0);
}

#[test]
fn reloads_and_the_process_are_rendered() {
    let samples = rendered();
    assert_eq!(
        value(
            &samples,
            "ringmaster_reloads_total",
            &[("result", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "ringmaster_reloads_total",
            &[("result", "applied")]
        ),
        2.0
    );
    assert_eq!(
        value(&samples, "ringmaster_last_reload_duration_seconds", &[]),
        0.5
    );
    assert_eq!(
        value(&samples, "ringmaster_last_reload_timestamp_seconds", &[]),
        999_998.0
    );
    assert_eq!(
        value(&samples, "process_resident_memory_bytes", &[]),
        4096.0
    );
    assert_eq!(value(&samples, "process_open_fds", &[]), 12.0);
}

#[test]
fn a_master_with_nothing_renders_valid_text() {
    let now = Instant::now();
    let mut s = status(now);
    s.pools.clear();
    s.reloads = ReloadCounters::default();
    let info = MasterInfo {
        families: Families::default(),
        resident_bytes: None,
        open_fds: None,
        now,
        unix_now: 0.0,
    };
    let samples = parse_strictly(&render(&s, &info));
    assert!(samples.iter().all(|s| !s.metric.starts_with("process_")));
    assert_eq!(value(&samples, "ringmaster_services_down", &[]), 0.0);
}
