//! Cyrus's own master report: with `prometheus_enabled: yes` in imapd.conf, the `cyrus_master_*`
//! series written where and as Cyrus 3.6's master writes them, so that `promstatsd` (which
//! gathers every process's report for Prometheus) keeps the same series under ringmaster.
//!
//! As in Cyrus's `master/master.c` (`init_prom_report`, `do_prom_report`): the file is
//! `<prometheus_stats_dir>/master.txt` when that is an absolute path, else
//! `<configdirectory>/stats/master.txt`; it is rewritten every `prometheus_update_freq`
//! (a duration, default 10 s), first at start-up; each sample carries a timestamp in
//! milliseconds; the file is 0600, written under a non-blocking POSIX write lock (a turn is
//! skipped while a reader holds it), and owned by the user the workers run as (Cyrus's master
//! runs as that user, and promstatsd reads the file as that user). Per `service` and `family`
//! (`ipv4`, `ipv6`, `unix`, and `daemon` for DAEMON entries).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ringmaster_core::{ImapdConf, Status};
use tracing::{debug, error, info};

use crate::metrics::{escape, Families};
use crate::sys::reportfile::{self, Owner};

/// `prometheus_update_freq`'s default in Cyrus 3.6.
const DEFAULT_FREQUENCY: Duration = Duration::from_secs(10);
const FILE_NAME: &str = "master.txt";
/// What Cyrus's master reports as a DAEMON entry's `max_forks_per_second`.
const DAEMON_MAXFORKRATE: u32 = 10;

/// Where and how often, from imapd.conf; None when the report is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub path: PathBuf,
    pub every: Duration,
}

impl Settings {
    /// The report's settings, or None when `prometheus_enabled` is off, the frequency is
    /// below a second, or there is nowhere to write (each logged as Cyrus does).
    pub fn from_imapd(imapd: &ImapdConf) -> Option<Settings> {
        if !imapd.get("prometheus_enabled").is_some_and(switch_on) {
            return None;
        }
        // 3.6 reads `prometheus_update_freq`; later Cyrus versions name the master's own
        // `prometheus_master_update_freq`, which wins when both are set.
        let setting = ["prometheus_master_update_freq", "prometheus_update_freq"]
            .into_iter()
            .find_map(|key| imapd.get(key).map(|text| (key, text)));
        let every = match setting {
            None => DEFAULT_FREQUENCY,
            Some((key, text)) => match parse_duration(text) {
                Some(d) => d,
                None => {
                    error!("{key}: `{text}` is not a duration: using 10s");
                    DEFAULT_FREQUENCY
                }
            },
        };
        if every < Duration::from_secs(1) {
            return None;
        }
        let path = match (imapd.get("prometheus_stats_dir"), imapd.configdirectory()) {
            (Some(dir), _) if dir.starts_with('/') && dir.len() > 1 => {
                Path::new(dir).join(FILE_NAME)
            }
            (Some(_), _) | (None, None) => {
                info!("couldn't find somewhere to write prometheus report to - disabling master prometheus report");
                return None;
            }
            (None, Some(config)) => Path::new(config).join("stats").join(FILE_NAME),
        };
        Some(Settings { path, every })
    }
}

fn switch_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "yes" | "y" | "on" | "t" | "true"
    )
}

/// A Cyrus duration: a number with an optional unit (`d`, `h`, `m`, `s`), possibly several
/// (`1h30m`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if let Some(n) = number {
        total = total.checked_add(n)?;
    }
    Some(Duration::from_secs(total))
}

/// The report and its schedule.
#[derive(Debug)]
pub struct CyrusReport {
    settings: Settings,
    owner: Owner,
    next: Instant,
    /// Turned off after a write fails (as Cyrus does, until the next start).
    failed: bool,
}

impl CyrusReport {
    /// Creates the directory now; the first report is due at once.
    pub fn new(settings: Settings, owner: Owner) -> CyrusReport {
        if let Some(dir) = settings.path.parent() {
            if let Err(err) = reportfile::make_dirs(dir, owner) {
                error!("cannot create {}: {err}", dir.display());
            }
        }
        debug!(
            "updating {} every {} seconds",
            settings.path.display(),
            settings.every.as_secs()
        );
        CyrusReport {
            settings,
            owner,
            next: Instant::now(),
            failed: false,
        }
    }

    pub fn next_at(&self) -> Instant {
        self.next
    }

    /// Writes the report (unless a reader holds the lock) and schedules the next.
    pub fn write(&mut self, status: &Status, families: &Families, now: Instant) {
        self.next = now + self.settings.every;
        if self.failed {
            self.next = now + Duration::from_secs(86_400 * 365);
            return;
        }
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let text = render(status, families, millis);
        match reportfile::write_locked(&self.settings.path, text.as_bytes(), self.owner) {
            Ok(true) => {}
            Ok(false) => debug!("{} is locked: report skipped", self.settings.path.display()),
            Err(err) => {
                error!(
                    "{}: {err} - disabling master prometheus report",
                    self.settings.path.display()
                );
                self.failed = true;
            }
        }
    }
}

/// One row: a service's address family, or a daemon.
#[derive(Default)]
struct Row {
    ready: u64,
    forks: u64,
    active: u64,
    max: u64,
    forkrate: u64,
    maxforkrate: u32,
    ready_fails: u64,
}

/// A series: name, help, type, and its value in a row.
type Series = (&'static str, &'static str, &'static str, fn(&Row) -> u64);

/// One row per service and address family, and per daemon.
fn rows(status: &Status, families: &Families) -> BTreeMap<(String, &'static str), Row> {
    let mut rows: BTreeMap<(String, &'static str), Row> = BTreeMap::new();
    for pool in &status.pools {
        let row = rows
            .entry((pool.service.clone(), families.of(pool)))
            .or_default();
        let w = pool.workers;
        // Cyrus counts a worker ready from the moment it is forked until it takes a client.
        row.ready += u64::from(w.starting + w.ready);
        row.active += u64::from(w.total());
        row.forks = row.forks.max(pool.counters.forks);
        row.ready_fails = row.ready_fails.max(pool.counters.ready_fails);
        row.forkrate += u64::from(pool.forks_last_second);
        row.max = pool.maxchild.map_or(i32::MAX as u64, u64::from);
        row.maxforkrate = pool.maxforkrate;
    }
    for daemon in &status.daemons {
        let up = u64::from(daemon.pid.is_some());
        let started = daemon.restarts + u64::from(daemon.pid.is_some() || daemon.restarts > 0);
        rows.insert(
            (daemon.name.clone(), "daemon"),
            Row {
                ready: up,
                forks: started,
                active: up,
                max: 1,
                forkrate: 0,
                maxforkrate: DAEMON_MAXFORKRATE,
                ready_fails: 0,
            },
        );
    }
    rows
}

/// The report's text, at `millis` since the epoch.
pub fn render(status: &Status, families: &Families, millis: u128) -> String {
    let rows = rows(status, families);
    let mut out = String::with_capacity(1024 + rows.len() * 600);
    let series: [Series; 7] = [
        (
            "cyrus_master_ready_workers",
            "The number of ready workers",
            "gauge",
            |r| r.ready,
        ),
        (
            "cyrus_master_forks_total",
            "The number of children spawned",
            "counter",
            |r| r.forks,
        ),
        (
            "cyrus_master_active_children",
            "The number of children servicing clients",
            "gauge",
            |r| r.active,
        ),
        (
            "cyrus_master_max_children",
            "The maximum number of child processes",
            "gauge",
            |r| r.max,
        ),
        (
            "cyrus_master_forks_per_second",
            "The rate at which we're spawning children",
            "gauge",
            |r| r.forkrate,
        ),
        (
            "cyrus_master_max_forks_per_second",
            "The maximum rate at which we will spawn children",
            "gauge",
            |r| u64::from(r.maxforkrate),
        ),
        (
            "cyrus_master_ready_fails_total",
            "The number of failures in READY state",
            "counter",
            |r| r.ready_fails,
        ),
    ];
    for (name, help, kind, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for ((service, family), row) in &rows {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",family=\"{family}\"}} {} {millis}",
                escape(service),
                value(row)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmaster_core::parse_imapd_conf;

    fn settings(text: &str) -> Option<Settings> {
        let (conf, diags) = parse_imapd_conf("imapd.conf", text);
        assert!(diags.is_empty(), "{diags:?}");
        Settings::from_imapd(&conf)
    }

    #[test]
    fn the_report_goes_where_cyrus_puts_it() {
        assert_eq!(settings("configdirectory: /var/lib/cyrus\n"), None);
        let on = "configdirectory: /var/lib/cyrus\nprometheus_enabled: yes\n";
        assert_eq!(
            settings(on),
            Some(Settings {
                path: "/var/lib/cyrus/stats/master.txt".into(),
                every: Duration::from_secs(10)
            })
        );
        let dir =
            format!("{on}prometheus_stats_dir: /run/cyrus/stats/\nprometheus_update_freq: 1m30s\n");
        assert_eq!(
            settings(&dir),
            Some(Settings {
                path: "/run/cyrus/stats/master.txt".into(),
                every: Duration::from_secs(90)
            })
        );
        // A relative directory leaves nowhere to write, as in Cyrus.
        assert_eq!(
            settings(&format!("{on}prometheus_stats_dir: stats\n")),
            None
        );
        assert_eq!(settings(&format!("{on}prometheus_update_freq: 0\n")), None);
        let newer = settings(&format!(
            "{on}prometheus_update_freq: 1m\nprometheus_master_update_freq: 5s\n"
        ));
        assert_eq!(newer.map(|s| s.every), Some(Duration::from_secs(5)));
    }

    #[test]
    fn durations_read_as_cyrus_reads_them() {
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("1d1h1m1s"),
            Some(Duration::from_secs(90_061))
        );
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5x"), None);
    }
}
