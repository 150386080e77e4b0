//! Prometheus text exposition (format 0.0.4) of the master's status: per service workers by
//! state, forks, exits by reason, connections waiting, paused; reloads; the master's own
//! memory and descriptors. Served by `--metrics-listen` and by `ringmaster metrics`.
//!
//! Pure: it renders a [`Status`] snapshot and a [`MasterInfo`] the shell fills.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Instant;

use ringmaster_core::{ExitReason, PoolStatus, Status};

/// What the shell knows of the master process itself.
#[derive(Debug, Clone)]
pub struct MasterInfo {
    /// The address family of each pool's socket.
    pub families: Families,
    /// Resident set size, from /proc/self/statm.
    pub resident_bytes: Option<u64>,
    /// Open descriptors, from /proc/self/fd.
    pub open_fds: Option<u64>,
    /// The moment the snapshot was taken, on both clocks: reloads are timed on the monotonic
    /// clock and shown on the wall clock.
    pub now: Instant,
    pub unix_now: f64,
}

/// The `family` label of each pool, as Cyrus's master names address families (`ipv4`,
/// `ipv6`, `unix`): the supervisor numbers a service's sockets (`CYRUS_ID`), only the shell
/// knows what each is bound to.
#[derive(Debug, Clone, Default)]
pub struct Families(HashMap<(String, u8), &'static str>);

impl Families {
    /// Records the family of a service's socket number `id`.
    pub fn insert(&mut self, service: &str, id: u8, family: &'static str) {
        self.0.insert((service.to_string(), id), family);
    }

    /// The family of a pool; for a socket the shell did not name, what its `listen=` says.
    pub fn of(&self, pool: &PoolStatus) -> &'static str {
        match self.0.get(&(pool.service.clone(), pool.family)) {
            Some(name) => name,
            None if pool.listen.starts_with('/') => "unix",
            None => "inet",
        }
    }
}

/// One service's series, summed over the pools that share its labels (a service being
/// handed over by a reload has an old and a new pool on the same address for a moment).
#[derive(Default)]
struct ServiceSeries {
    workers: [u64; 4],
    forks: u64,
    exits: [u64; 4],
    ready_fails: u64,
    waiting: u64,
    paused: bool,
}

const STATES: [&str; 4] = ["starting", "ready", "busy", "draining"];

type Labels = (String, &'static str, String);

fn per_service(status: &Status, master: &MasterInfo) -> BTreeMap<Labels, ServiceSeries> {
    let mut out: BTreeMap<Labels, ServiceSeries> = BTreeMap::new();
    for pool in &status.pools {
        let key = (
            pool.service.clone(),
            master.families.of(pool),
            pool.listen.clone(),
        );
        add_pool(out.entry(key).or_default(), pool, master.now);
    }
    out
}

fn add_pool(s: &mut ServiceSeries, pool: &PoolStatus, now: Instant) {
    let w = pool.workers;
    for (slot, n) in s
        .workers
        .iter_mut()
        .zip([w.starting, w.ready, w.busy, w.draining])
    {
        *slot += u64::from(n);
    }
    // Counters follow the service's name and family across a reload: the new pool starts
    // from the old one's, so the larger is the count (a sum would count twice).
    s.forks = s.forks.max(pool.counters.forks);
    for (slot, reason) in s.exits.iter_mut().zip(ExitReason::ALL) {
        *slot = (*slot).max(pool.counters.exits(reason));
    }
    s.ready_fails = s.ready_fails.max(pool.counters.ready_fails);
    s.waiting += u64::from(pool.waiting);
    s.paused |= pool.paused_until.is_some_and(|t| t > now);
}

/// A per-service series with one value: name, type, help, value.
type OneValue = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ServiceSeries) -> u64,
);

const ONE_VALUE: [OneValue; 4] = [
    (
        "ringmaster_forks_total",
        "counter",
        "Workers forked since the master started.",
        |s| s.forks,
    ),
    (
        "ringmaster_ready_fails_total",
        "counter",
        "Workers that failed before serving a client.",
        |s| s.ready_fails,
    ),
    (
        "ringmaster_connections_waiting",
        "gauge",
        "Connections in the accept queue when the listener was last seen readable.",
        |s| s.waiting,
    ),
    (
        "ringmaster_paused",
        "gauge",
        "1 while the service is throttled after its workers kept failing.",
        |s| u64::from(s.paused),
    ),
];

fn labels((service, family, listen): &Labels) -> String {
    format!(
        "service=\"{}\",family=\"{family}\",listen=\"{}\"",
        escape(service),
        escape(listen)
    )
}

/// The exposition text, HELP and TYPE before each family of series.
pub fn render(status: &Status, master: &MasterInfo) -> String {
    let services = per_service(status, master);
    let mut out = String::with_capacity(512 + services.len() * 1200);
    header(
        &mut out,
        "ringmaster_workers",
        "gauge",
        "Workers of a service by state (draining: of an older generation, or told to exit).",
    );
    for (key, s) in &services {
        for (state, n) in STATES.iter().zip(s.workers) {
            let _ = writeln!(
                out,
                "ringmaster_workers{{{},state=\"{state}\"}} {n}",
                labels(key)
            );
        }
    }
    header(
        &mut out,
        "ringmaster_exits_total",
        "counter",
        "Workers that ended, by reason (normal, crash, signal, recycled).",
    );
    for (key, s) in &services {
        for (reason, n) in ExitReason::ALL.iter().zip(s.exits) {
            let _ = writeln!(
                out,
                "ringmaster_exits_total{{{},reason=\"{}\"}} {n}",
                labels(key),
                reason.as_str()
            );
        }
    }
    for (name, kind, help, value) in ONE_VALUE {
        header(&mut out, name, kind, help);
        for (key, s) in &services {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(key), value(s));
        }
    }
    header(
        &mut out,
        "ringmaster_services_down",
        "gauge",
        "Services whose socket could not be bound.",
    );
    let _ = writeln!(out, "ringmaster_services_down {}", status.down.len());
    render_reloads(&mut out, status, master);
    render_process(&mut out, master);
    out
}

fn render_process(out: &mut String, master: &MasterInfo) {
    header(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the master process.",
    );
    if let Some(rss) = master.resident_bytes {
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    header(
        out,
        "process_open_fds",
        "gauge",
        "Open descriptors of the master process.",
    );
    if let Some(fds) = master.open_fds {
        let _ = writeln!(out, "process_open_fds {fds}");
    }
}

fn render_reloads(out: &mut String, status: &Status, master: &MasterInfo) {
    let r = &status.reloads;
    header(out, "ringmaster_reloads_total", "counter", "Reloads by result: applied, partial (a new socket could not be bound), rejected (invalid configuration).");
    for (result, n) in [
        ("applied", r.applied),
        ("partial", r.partial),
        ("rejected", r.rejected),
    ] {
        let _ = writeln!(out, "ringmaster_reloads_total{{result=\"{result}\"}} {n}");
    }
    header(
        out,
        "ringmaster_reload_in_progress",
        "gauge",
        "1 while a reload is being applied or settling.",
    );
    let _ = writeln!(
        out,
        "ringmaster_reload_in_progress {}",
        u8::from(status.reload_in_progress.is_some())
    );
    let last = r.last.as_ref();
    header(
        out,
        "ringmaster_last_reload_duration_seconds",
        "gauge",
        "How long the last reload took, from SIGHUP to settled (or rejected).",
    );
    if let Some(last) = last {
        let took = last
            .finished
            .saturating_duration_since(last.started)
            .as_secs_f64();
        let _ = writeln!(out, "ringmaster_last_reload_duration_seconds {took:.6}");
    }
    header(
        out,
        "ringmaster_last_reload_timestamp_seconds",
        "gauge",
        "When the last reload finished, in seconds since the epoch.",
    );
    if let Some(last) = last {
        let ago = master
            .now
            .saturating_duration_since(last.finished)
            .as_secs_f64();
        let _ = writeln!(
            out,
            "ringmaster_last_reload_timestamp_seconds {:.3}",
            master.unix_now - ago
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the exposition format wants it: backslash, double quote and newline
/// escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
