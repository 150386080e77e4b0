//! Benchmarks for ringmaster, side by side with Cyrus's own master where it is installed.
//!
//! Each subcommand writes a cyrus.conf for the demo worker to a temp dir, starts the master
//! under test as a child (`-D -M conf -C imapd.conf -p pidfile`), drives loopback clients
//! against it, stops everything it started (by pid) and prints one column per master.
//!
//! Fair by default: both masters run the same worker command line (`--no-announce`, as
//! Cyrus's master needs), at the priority the bench was started with, and each scenario runs
//! `--runs` times per master, alternated; tables show the median and the spread (min-max).

mod cbuild;
mod limits;
mod load;
mod master;
mod nginx;
mod ondemand;
mod plot;
mod procfs;
mod ready;
mod recycle;
mod scale;
mod scalecmd;
mod table;
mod upgradecmd;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;

use master::{Kind, Master, ServiceSpec};
use recycle::recycle_scenario;
use table::{fmt_value, median_spread, report, row, Better, Column, Row};

const CYRUS_MASTER: &str = "/usr/lib/cyrus/bin/master";

#[derive(Parser, Debug)]
#[command(
    name = "ringmaster-bench",
    about = "Benchmarks ringmaster against Cyrus's master"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// On-demand spawning: prefork=0, one connection per worker (-U 1); beside the masters,
    /// the policy-free floor master (c/floor_master.c) on the same worker.
    Spawn {
        #[command(flatten)]
        common: Common,
        /// Skip the floor master.
        #[arg(long)]
        no_floor: bool,
        /// Also run the floor master with ringmaster's spawning policy (`-1`: one worker per
        /// waiting connection, none while one is starting), which leaves only the spawn paths
        /// to compare.
        #[arg(long)]
        floor_same_policy: bool,
    },
    /// Thousands of workers and services: start, SIGHUP recycle, stop and master CPU per
    /// pool size; start and on-demand connect latency per number of services.
    Scale(scalecmd::ScaleArgs),
    /// Binary upgrades (`ringmaster upgrade`) under load: connections lost, longest pause.
    Upgrade(upgradecmd::UpgradeArgs),
    /// A preforked pool of workers with no use limit.
    Prefork {
        #[command(flatten)]
        common: Common,
        /// Workers kept ready.
        #[arg(long, default_value_t = 10)]
        prefork: u32,
    },
    /// SIGHUP storms under load, and the time to recycle an idle pool.
    Reload {
        #[command(flatten)]
        common: Common,
        /// Workers kept ready under the storm.
        #[arg(long, default_value_t = 10)]
        prefork: u32,
        /// Interval between SIGHUPs to the master, in ms.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// Size of the idle pool whose recycling is timed.
        #[arg(long, default_value_t = 50)]
        recycle_prefork: u32,
        /// Timed recycles of that pool.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// What reloads cost clients: the same load with and without a SIGHUP every interval,
    /// alternated over several runs; medians with their spread, and the ratios.
    ReloadLatency {
        #[command(flatten)]
        common: Common,
        /// Workers kept ready.
        #[arg(long, default_value_t = 4)]
        prefork: u32,
        /// Interval between SIGHUPs to the master, in ms.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// Measure the floor as worker turnover instead of bare process starts: no reloads,
        /// each worker exiting after this many connections. Pick it so that the pool is
        /// renewed about as often as the reloads renew it (connections/s x interval / prefork).
        #[arg(long, value_name = "USES")]
        turnover_uses: Option<u32>,
    },
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The ringmaster binary (default: `ringmaster` next to this program).
    #[arg(long)]
    master: Option<PathBuf>,
    /// Cyrus's master, run on the same scenario when it exists.
    #[arg(long, default_value = CYRUS_MASTER)]
    cyrus: PathBuf,
    /// Skip Cyrus's master.
    #[arg(long)]
    no_cyrus: bool,
    /// Skip ringmaster.
    #[arg(long)]
    no_ringmaster: bool,
    /// The worker binary (default: `ringmaster-demo-worker` next to this program).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Runs of each scenario per master, alternated between the masters (for reload-latency:
    /// runs of each kind). Tables show the median and the spread (min-max).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Ringmaster only, and unfair on purpose: ringmaster's workers send AVAILABLE when they
    /// start (without `--no-announce`), which Cyrus's master cannot take, so its workers keep
    /// `--no-announce`. The two columns then differ in worker behaviour; titles say so.
    #[arg(long)]
    announcing_workers: bool,
    /// Accepted so that the commands of older figures still run: what it asked for (the same
    /// workers for both masters) is now the default.
    #[arg(long, hide = true)]
    cyrus_style_workers: bool,
    /// Use the minimal C worker (c/min_worker.c, compiled with cc at run time) instead of
    /// the demo worker (`scale` always does, unless --worker is given).
    #[arg(long)]
    c_worker: bool,
    /// Extra arguments for every worker, e.g. "--start-delay-ms 20" for slow starters.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    worker_args: String,
}

pub(crate) fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

impl Common {
    /// The service every master runs in a scenario.
    fn spec(&self, prefork: u32, max_uses: u32) -> ServiceSpec {
        ServiceSpec {
            worker: self.worker(),
            prefork,
            max_uses,
            announce: self.announcing_workers,
            extra_args: self.worker_args.clone(),
        }
    }

    /// How the workers were started, for every title.
    fn worker_flags(&self) -> &'static str {
        if self.announcing_workers {
            "UNEQUAL workers: ringmaster's announce (--announcing-workers), Cyrus's cannot"
        } else {
            "same worker flags for both masters (--no-announce)"
        }
    }

    /// Run `scenario` `--runs` times under every master, alternating masters run by run.
    fn columns(
        &self,
        scenario: impl FnMut(Kind, &Path) -> Result<Vec<Row>, String>,
    ) -> Vec<Column> {
        self.columns_of(self.masters(), scenario)
    }

    /// [`Common::columns`] over the given masters.
    fn columns_of(
        &self,
        masters: Vec<(Kind, PathBuf)>,
        mut scenario: impl FnMut(Kind, &Path) -> Result<Vec<Row>, String>,
    ) -> Vec<Column> {
        let mut columns: Vec<Column> = masters
            .iter()
            .map(|(kind, _)| Column {
                kind: *kind,
                runs: Vec::new(),
                error: None,
                tried: 0,
            })
            .collect();
        for _ in 0..self.runs.max(1) {
            for ((kind, program), column) in masters.iter().zip(columns.iter_mut()) {
                column.tried += 1;
                match scenario(*kind, program) {
                    Ok(rows) => column.runs.push(rows),
                    Err(e) => {
                        column.error.get_or_insert(e);
                    }
                }
            }
        }
        columns
    }

    fn worker(&self) -> PathBuf {
        self.worker
            .clone()
            .unwrap_or_else(|| sibling("ringmaster-demo-worker"))
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.clamp(0.1, 3600.0))
    }

    /// The masters to run, each with its program.
    fn masters(&self) -> Vec<(Kind, PathBuf)> {
        let mut out = Vec::new();
        if !self.no_ringmaster {
            let m = self.master.clone().unwrap_or_else(|| sibling("ringmaster"));
            out.push((Kind::Ringmaster, m));
        }
        if !self.no_cyrus {
            if self.cyrus.exists() {
                out.push((Kind::Cyrus, self.cyrus.clone()));
            } else {
                eprintln!("note: {} not found; no Cyrus column", self.cyrus.display());
            }
        }
        out
    }
}

/// What a load run does to the master meanwhile.
#[derive(Debug, Clone, Copy)]
enum Disturb {
    Nothing,
    /// SIGHUP every interval.
    Hup(Duration),
    /// No reloads, but the bench itself starts (and reaps) this many copies of the worker
    /// binary every interval, exiting at once: the CPU that starting processes costs on this
    /// machine, with no master involved (the floor a reload's new workers cannot go under).
    Starts(Duration, u32),
}

/// Start a master, run the client load (disturbed as asked meanwhile), stop it.
fn load_scenario(
    kind: Kind,
    program: &Path,
    spec: &ServiceSpec,
    common: &Common,
    hup: Option<Duration>,
) -> Result<Vec<Row>, String> {
    let disturb = match hup {
        Some(every) => Disturb::Hup(every),
        None => Disturb::Nothing,
    };
    load_scenario_disturbed(kind, program, spec, common, disturb)
}

fn load_scenario_disturbed(
    kind: Kind,
    program: &Path,
    spec: &ServiceSpec,
    common: &Common,
    disturb: Disturb,
) -> Result<Vec<Row>, String> {
    let mut master = Master::start(kind, program, spec)?;
    let mut hups = 0u32;
    let mut hup_error = None;
    let worker = common.worker();
    let stats = load::run(master.addr, common.clients, common.duration(), |deadline| {
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let left = deadline - now;
            match disturb {
                Disturb::Hup(every) if every < left => {
                    std::thread::sleep(every);
                    if let Err(e) = master.signal(Signal::SIGHUP) {
                        hup_error.get_or_insert(e);
                    } else {
                        hups += 1;
                    }
                }
                Disturb::Starts(every, count) if every < left => {
                    std::thread::sleep(every);
                    let children: Vec<_> = (0..count)
                        .filter_map(|_| {
                            std::process::Command::new(&worker)
                                .arg("--crash-at-start")
                                .stdin(std::process::Stdio::null())
                                .stdout(std::process::Stdio::null())
                                .stderr(std::process::Stdio::null())
                                .spawn()
                                .ok()
                        })
                        .collect();
                    for mut child in children {
                        let _ = child.wait();
                    }
                }
                _ => std::thread::sleep(left),
            }
        }
    });
    let hup = matches!(disturb, Disturb::Hup(_)).then_some(());
    let (rss, hwm) = master.rss_kb();
    let nice = procfs::nice(master.pid());
    let alive = procfs::stat(master.pid()).is_some();
    if stats.failures() > 0 {
        eprintln!(
            "{}: {} failed connections; the master's log ends:{}",
            kind.label(),
            stats.failures(),
            master.log_tail()
        );
    }
    master.stop();
    if !alive {
        return Err(format!("{} died during the load", kind.label()));
    }
    if let Some(e) = hup_error {
        return Err(e);
    }
    if let Some(e) = &stats.first_other {
        eprintln!("{}: first unclassified client error: {e}", kind.label());
    }
    Ok(load_rows(&stats, (rss, hwm), nice, hup.map(|()| hups)))
}

/// The figures of one load run, rows of the table.
fn load_rows(
    stats: &load::Stats,
    (rss, hwm): (Option<u64>, Option<u64>),
    nice: Option<i64>,
    hups: Option<u32>,
) -> Vec<Row> {
    use Better::{Higher, Lower, Neither};
    let mut rows = vec![
        row("connections/s", stats.per_second(), Higher),
        row("connections ok", stats.ok as f64, Higher),
        row("failures", stats.failures() as f64, Lower),
        row("  refused", stats.refused as f64, Lower),
        row("  reset/closed", stats.reset as f64, Lower),
        row("  timeout", stats.timeout as f64, Lower),
        row("  other", stats.other as f64, Lower),
        row("latency p50 ms", stats.percentile_ms(50.0), Lower),
        row("latency p99 ms", stats.percentile_ms(99.0), Lower),
        row("latency max ms", stats.percentile_ms(100.0), Lower),
        row("master VmRSS kB, at the end", rss.map(|v| v as f64), Lower),
        row("master VmHWM kB, the peak", hwm.map(|v| v as f64), Lower),
        row("master nice", nice.map(|v| v as f64), Neither),
    ];
    if let Some(hups) = hups {
        rows.push(row("SIGHUPs sent", hups as f64, Neither));
    }
    rows
}

/// Runs a client-load scenario under every master and prints the columns.
fn load_report(common: &Common, spec: &ServiceSpec, title: &str) {
    let cols = common.columns(|k, p| load_scenario(k, p, spec, common, None));
    report(&format!("{title}; {}", common.worker_flags()), &cols);
}

/// The figures of one load run that the reload-latency comparison uses.
#[derive(Debug, Clone, Copy)]
struct LoadFigures {
    per_second: f64,
    p99_ms: f64,
    max_ms: f64,
    failures: f64,
}

fn figures(rows: &[Row]) -> Option<LoadFigures> {
    let get = |name: &str| rows.iter().find(|r| r.name == name).and_then(|r| r.value);
    Some(LoadFigures {
        per_second: get("connections/s")?,
        p99_ms: get("latency p99 ms")?,
        max_ms: get("latency max ms")?,
        failures: get("failures")?,
    })
}

/// A figure of a run: its name, how to read it, and the target for the ratio.
type Metric = (&'static str, fn(&LoadFigures) -> f64, &'static str);

fn reload_latency(
    common: &Common,
    spec: &ServiceSpec,
    every: Duration,
    turnover_uses: Option<u32>,
) {
    let runs = common.runs;
    let turnover = turnover_uses.map(|uses| ServiceSpec {
        max_uses: uses,
        ..spec.clone()
    });
    println!(
        "\n== reload latency: {} clients, prefork={}, {:.1} s per run, SIGHUP every {} ms, {} runs of each kind, alternated; {}",
        common.clients,
        spec.prefork,
        common.duration,
        every.as_millis(),
        runs,
        common.worker_flags()
    );
    for (kind, program) in common.masters() {
        let mut quiet = Vec::new();
        let mut reloading = Vec::new();
        let mut starting = Vec::new();
        let mut error = None;
        for _ in 0..runs.max(1) {
            let floor = match &turnover {
                Some(t) => (t, Disturb::Nothing),
                None => (spec, Disturb::Starts(every, spec.prefork)),
            };
            for (spec, disturb, into) in [
                (spec, Disturb::Nothing, &mut quiet),
                (spec, Disturb::Hup(every), &mut reloading),
                (floor.0, floor.1, &mut starting),
            ] {
                match load_scenario_disturbed(kind, &program, spec, common, disturb) {
                    Ok(rows) => {
                        if let Some(f) = figures(&rows) {
                            into.push(f);
                        }
                    }
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
        }
        println!("\n{}:", kind.label());
        if let Some(e) = error {
            println!("  FAILED (some runs): {e}");
        }
        print_reload_table(&quiet, &reloading, &starting, turnover.is_some());
    }
}

/// Medians and spreads of the runs without reloads, with reloads and of the floor, and
/// their ratios to the runs without reloads.
fn print_reload_table(
    quiet: &[LoadFigures],
    reloading: &[LoadFigures],
    starting: &[LoadFigures],
    turnover: bool,
) {
    println!(
        "  {:<16}{:>28}{:>28}{:>8}{:>28}{:>8}",
        "",
        "no reloads: median [min-max]",
        "reloads: median [min-max]",
        "ratio*",
        if turnover {
            "floor: turnover, no reloads"
        } else {
            "floor: starts, no reloads"
        },
        "ratio*"
    );
    println!("  (* ratio to no reloads; the target says which way is better)");
    let metrics: [Metric; 4] = [
        (
            "connections/s",
            |f| f.per_second,
            ">= 0.95; higher is better",
        ),
        ("latency p99 ms", |f| f.p99_ms, "<= 1.1; lower is better"),
        ("latency max ms", |f| f.max_ms, "<= 1.2; lower is better"),
        ("failures", |f| f.failures, "0; lower is better"),
    ];
    for (name, get, target) in metrics {
        let (qm, qlo, qhi) = median_spread(quiet.iter().map(get).collect());
        let (rm, rlo, rhi) = median_spread(reloading.iter().map(get).collect());
        let (fm, flo, fhi) = median_spread(starting.iter().map(get).collect());
        let ratio = |x: f64| {
            if qm > 0.0 {
                format!("{:.2}", x / qm)
            } else {
                "-".into()
            }
        };
        let spread = |m: f64, lo: f64, hi: f64| {
            format!(
                "{} [{}-{}]",
                fmt_value(Some(m)),
                fmt_value(Some(lo)),
                fmt_value(Some(hi))
            )
        };
        println!(
            "  {name:<16}{:>28}{:>28}{:>8}{:>28}{:>8}  (target {target})",
            spread(qm, qlo, qhi),
            spread(rm, rlo, rhi),
            ratio(rm),
            spread(fm, flo, fhi),
            ratio(fm),
        );
    }
}

/// On-demand spawning under every master and, unless `no_floor`, the floor master (also
/// with ringmaster's policy when `floor_same_policy`).
fn spawn(mut common: Common, no_floor: bool, floor_same_policy: bool) {
    if common.c_worker && common.worker.is_none() {
        match cbuild::min_worker() {
            Ok(w) => common.worker = Some(w),
            Err(e) => {
                eprintln!("spawn: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut masters = common.masters();
    if !no_floor || floor_same_policy {
        match cbuild::floor_master() {
            Ok(floor) => {
                if !no_floor {
                    masters.push((Kind::Floor, floor.clone()));
                }
                if floor_same_policy {
                    masters.push((Kind::FloorSamePolicy, floor));
                }
            }
            Err(e) => eprintln!("note: no floor column: {e}"),
        }
    }
    let spec = common.spec(0, 1);
    let title = format!(
        "spawn: prefork=0, -U 1, {} clients, {:.1} s; worker {}; {}",
        common.clients,
        common.duration,
        spec.worker.display(),
        common.worker_flags()
    );
    let cols = common.columns_of(masters, |k, p| load_scenario(k, p, &spec, &common, None));
    report(&title, &cols);
    cbuild::clean();
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::ReloadLatency {
            common,
            prefork,
            interval_ms,
            turnover_uses,
        } => {
            let every = Duration::from_millis(interval_ms.max(1));
            reload_latency(&common, &common.spec(prefork, 0), every, turnover_uses);
        }
        Cmd::Spawn {
            common,
            no_floor,
            floor_same_policy,
        } => spawn(common, no_floor, floor_same_policy),
        Cmd::Scale(args) => scalecmd::run(args),
        Cmd::Upgrade(args) => {
            if let Err(e) = upgradecmd::run(args) {
                eprintln!("ringmaster-bench upgrade: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Prefork { common, prefork } => {
            let title = format!(
                "prefork: prefork={prefork}, no use limit, {} clients, {:.1} s",
                common.clients, common.duration
            );
            load_report(&common, &common.spec(prefork, 0), &title);
        }
        Cmd::Reload {
            common,
            prefork,
            interval_ms,
            recycle_prefork,
            rounds,
        } => {
            let every = Duration::from_millis(interval_ms.max(1));
            let spec = common.spec(prefork, 0);
            let cols = common.columns(|k, p| load_scenario(k, p, &spec, &common, Some(every)));
            report(
                &format!(
                    "reload storm: SIGHUP every {interval_ms} ms, prefork={prefork}, {} clients, {:.1} s; {}",
                    common.clients, common.duration, common.worker_flags()
                ),
                &cols,
            );
            let spec = ServiceSpec {
                prefork: recycle_prefork,
                ..spec
            };
            let cols = common.columns(|k, p| recycle_scenario(k, p, &spec, rounds));
            report(
                &format!(
                    "recycle: idle prefork={recycle_prefork}, SIGHUP -> all {recycle_prefork} replaced; {}",
                    common.worker_flags()
                ),
                &cols,
            );
        }
    }
}
