//! The `scale` subcommand: its options, the order of runs (masters alternated run by run),
//! and its output: markdown tables of medians with spread and ratios, and the SVG plot.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cbuild;
use crate::limits;
use crate::master::Kind;
use crate::ondemand::{self, DemandRun};
use crate::plot::{self, Series};
use crate::scale::{self, LoadCounts, Outcome, PoolRun, Setup, Shape};
use crate::table::{fmt_ratio, fmt_spread, median_spread, Better};
use crate::Common;

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    common: Common,
    /// Pools to run, SERVICESxPREFORK, comma-separated (workers = services x prefork).
    #[arg(long, value_delimiter = ',', default_value = "2x50,20x50,50x50,100x50")]
    shapes: Vec<String>,
    /// Numbers of on-demand services (prefork=0) to start and connect to; comma-separated
    /// ("" for none).
    #[arg(long, value_delimiter = ',', default_value = "10,300,5000")]
    services: Vec<String>,
    /// Connections, one at a time, to random services of each on-demand run.
    #[arg(long, default_value_t = 200)]
    connects: u32,
    /// Bound on start and on recycle, in seconds: past it the cell reads "not done".
    #[arg(long, default_value_t = 120.0)]
    limit: f64,
    /// Bound on a SIGTERM stop, in seconds, before the bench SIGKILLs what is left.
    #[arg(long, default_value_t = 30.0)]
    stop_limit: f64,
    /// Workers send no AVAILABLE when they start (both masters alike). By default they do,
    /// as in the runs; Cyrus's master then logs a warning for each.
    #[arg(long)]
    no_announce: bool,
    /// Client threads of the load run through each pool's recycle and stop (connect from a
    /// 127.0.0.x address to each service's port in turn, read the banner, close, pause);
    /// 0 runs none.
    #[arg(long, default_value_t = 2)]
    load_clients: usize,
    /// Each load client's pause after every connection, in milliseconds.
    #[arg(long, default_value_t = 10)]
    load_pause_ms: u64,
    /// Keep the load paused through the SIGTERM stop, so that the stop is timed as without
    /// a load (Cyrus's master may not exit while clients keep connecting).
    #[arg(long)]
    no_stop_load: bool,
    /// Write the plot of recycle time and master CPU against workers here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.clamp(1.0, 3600.0))
}

/// The median of the finished outcomes, and the cell text: `median [min-max]`, with how
/// many did not finish, or the first reason when none did.
fn outcome_cell(outcomes: &[Outcome]) -> (f64, String) {
    let done: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .copied()
        .collect();
    let first_err = outcomes.iter().find_map(|o| o.as_ref().err());
    match (done.is_empty(), first_err) {
        (true, Some(e)) => (f64::NAN, format!("**{e}**")),
        (true, None) => (f64::NAN, "-".into()),
        (false, None) => fmt_spread(done),
        (false, Some(e)) => {
            let (m, text) = fmt_spread(done.clone());
            let missed = outcomes.len() - done.len();
            (m, format!("{text} (**{missed} not done**: {e})"))
        }
    }
}

fn option_cell(values: &[Option<f64>]) -> (f64, String) {
    fmt_spread(values.iter().flatten().copied().collect())
}

type Cells = Vec<(f64, String)>;

fn print_row(label: &str, what: &str, cells: &Cells, better: Better) {
    let mut line = format!("| {label} | {what} |");
    for (_, text) in cells {
        // A master's log tail would end the markdown row.
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        line.push_str(&format!(" {text} |"));
    }
    if let [a, b] = &cells[..] {
        line.push_str(&format!(" {} |", fmt_ratio(a.0, b.0, better)));
    }
    println!("{line}");
}

fn print_header(first: &str, masters: &[(Kind, PathBuf)]) {
    let mut head = format!("| {first} | measure |");
    let mut rule = String::from("| --- | --- |");
    for (k, _) in masters {
        head.push_str(&format!(" {} |", k.label()));
        rule.push_str(" ---: |");
    }
    if masters.len() == 2 {
        head.push_str(" ringmaster/cyrus |");
        rule.push_str(" ---: |");
    }
    println!("{head}\n{rule}");
}

/// Run every shape under every master, print the table and write the plot.
fn pools(args: &ScaleArgs, setup: &Setup, masters: &[(Kind, PathBuf)]) {
    let shapes: Vec<Shape> = args
        .shapes
        .iter()
        .filter_map(|s| Shape::parse(s).map_err(|e| eprintln!("skipped: {e}")).ok())
        .collect();
    println!(
        "\n## pools: start, SIGHUP recycle, SIGTERM stop; seconds, median [min-max] of {} runs; {}",
        args.common.runs.max(1),
        load_words(args)
    );
    let mut table = Vec::new();
    for shape in &shapes {
        if let Some(why) = setup.limits.misfit(shape.workers()) {
            println!("note: may not fit: {why}");
        }
        let mut runs: Vec<Vec<PoolRun>> = vec![Vec::new(); masters.len()];
        for _ in 0..args.common.runs.max(1) {
            for (i, (kind, program)) in masters.iter().enumerate() {
                let run = scale::run_pools(*kind, program, *shape, setup);
                eprintln!("{} {shape:?}: {run:?}", kind.label());
                runs[i].push(run);
            }
        }
        table.push((*shape, runs));
    }
    print_header("services x prefork (workers)", masters);
    for (shape, runs) in &table {
        let label = format!(
            "{} x {} ({})",
            shape.services,
            shape.prefork,
            shape.workers()
        );
        type Get = fn(&PoolRun) -> Outcome;
        let outcomes: [(&str, Get); 3] = [
            ("start s", |r| r.start.clone()),
            ("SIGHUP recycle s", |r| r.recycle.clone()),
            ("SIGTERM stop s", |r| r.stop.clone()),
        ];
        for (what, get) in outcomes {
            let cells: Cells = runs
                .iter()
                .map(|rs| outcome_cell(&rs.iter().map(get).collect::<Vec<_>>()))
                .collect();
            print_row(&label, what, &cells, Better::Lower);
        }
        type GetCpu = fn(&PoolRun) -> Option<f64>;
        let cpus: [(&str, GetCpu); 4] = [
            ("master CPU s, start", |r| r.cpu_start),
            ("master CPU s, recycle", |r| r.cpu_recycle),
            ("master CPU s, stop", |r| r.cpu_stop),
            ("master VmHWM kB", |r| r.master_hwm_kb),
        ];
        for (what, get) in cpus {
            let cells: Cells = runs
                .iter()
                .map(|rs| option_cell(&rs.iter().map(get).collect::<Vec<_>>()))
                .collect();
            print_row(&label, what, &cells, Better::Lower);
        }
        let bench_cpu: Cells = runs
            .iter()
            .map(|rs| option_cell(&rs.iter().map(|r| r.bench_cpu_recycle).collect::<Vec<_>>()))
            .collect();
        print_row(
            &label,
            "bench CPU s, recycle (load included)",
            &bench_cpu,
            Better::Neither,
        );
        print_load_rows(&label, runs);
    }
    plot_series(args, masters, &table);
}

/// How much load the pools ran under, for the title.
fn load_words(args: &ScaleArgs) -> String {
    if args.load_clients == 0 {
        return "no client load (--load-clients 0)".into();
    }
    format!(
        "a client load of {} threads, {} ms pause after each connection, from the end of \
         the start until the recycle is done{}",
        args.load_clients,
        args.load_pause_ms,
        if args.no_stop_load {
            " (not through the stop: --no-stop-load)"
        } else {
            " and through the stop"
        }
    )
}

/// The load's rows, when it ran: connections that got a banner, and those that did not,
/// through the recycle and through the stop (failures summed over the runs, so that a
/// single loss shows).
fn print_load_rows(label: &str, runs: &[Vec<PoolRun>]) {
    type Phase = fn(&PoolRun) -> Option<LoadCounts>;
    let phases: [(&str, Phase); 2] = [("recycle", |r| r.load_recycle), ("stop", |r| r.load_stop)];
    for (phase, get) in phases {
        if runs.iter().flatten().all(|r| get(r).is_none()) {
            continue;
        }
        let ok: Cells = runs
            .iter()
            .map(|rs| {
                option_cell(
                    &rs.iter()
                        .map(|r| get(r).map(|c| c.ok as f64))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        print_row(
            label,
            &format!("load through {phase}: connections ok"),
            &ok,
            Better::Neither,
        );
        if phase == "recycle" {
            // A master that lets the old pool go first makes clients wait for a new worker.
            let p99: Cells = runs
                .iter()
                .map(|rs| {
                    option_cell(
                        &rs.iter()
                            .map(|r| get(r).and_then(|c| c.p99_ms))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            print_row(
                label,
                "load through recycle: connect to banner p99 ms",
                &p99,
                Better::Lower,
            );
        }
        let failed: Cells = runs
            .iter()
            .map(|rs| {
                failed_cell(
                    &rs.iter().filter_map(get).collect::<Vec<_>>(),
                    phase == "stop",
                )
            })
            .collect();
        let what = if phase == "stop" {
            "load through stop: lost; not lost: refused/reset/timeout (all runs)"
        } else {
            "load through recycle: failed (refused/reset/timeout) (all runs)"
        };
        print_row(label, what, &failed, Better::Lower);
    }
}

/// Failures summed over `runs`: through a recycle every one is lost, `total (refused/reset
/// /timeout)`; through a stop only a connection cut after part of its banner is, `lost;
/// refused/reset before any banner/timeout` (see [`LoadCounts`]).
fn failed_cell(runs: &[LoadCounts], stop: bool) -> (f64, String) {
    if runs.is_empty() {
        return (f64::NAN, "-".into());
    }
    let sum = |f: fn(&LoadCounts) -> u64| runs.iter().map(f).sum::<u64>();
    let (refused, reset, timeout) = (sum(|c| c.refused), sum(|c| c.reset), sum(|c| c.timeout));
    let other = sum(|c| c.other);
    let other = if other > 0 {
        format!(", {other} other")
    } else {
        String::new()
    };
    if stop {
        let lost = sum(LoadCounts::lost_in_stop);
        // `reset` counts the cut ones too; here they are the lost, apart.
        let reset_untaken = reset - lost;
        (
            lost as f64,
            format!("{lost}; {refused}/{reset_untaken}/{timeout}{other}"),
        )
    } else {
        let failed = sum(LoadCounts::failed);
        (
            failed as f64,
            format!("{failed} ({refused}/{reset}/{timeout}{other})"),
        )
    }
}

/// The plot's points (median of finished runs per shape) and the file.
fn plot_series(
    args: &ScaleArgs,
    masters: &[(Kind, PathBuf)],
    table: &[(Shape, Vec<Vec<PoolRun>>)],
) {
    let Some(path) = &args.plot else {
        return;
    };
    let series: Vec<Series> = masters
        .iter()
        .enumerate()
        .map(|(i, (kind, _))| {
            let mut s = Series {
                label: kind.label().to_string(),
                recycle: Vec::new(),
                cpu: Vec::new(),
                not_done: Vec::new(),
            };
            for (shape, runs) in table {
                let x = shape.workers() as f64;
                let done: Vec<&PoolRun> = runs[i].iter().filter(|r| r.recycle.is_ok()).collect();
                if done.is_empty() {
                    if runs[i].iter().any(|r| r.recycle_not_done) {
                        s.not_done.push((x, args.limit));
                    }
                    continue;
                }
                let rec =
                    median_spread(done.iter().filter_map(|r| r.recycle.clone().ok()).collect()).0;
                let cpu = median_spread(done.iter().filter_map(|r| r.cpu_recycle).collect()).0;
                s.recycle.push((x, rec));
                if !cpu.is_nan() {
                    s.cpu.push((x, cpu));
                }
            }
            s
        })
        .collect();
    let title = "ringmaster-bench scale: SIGHUP recycle of S x P idle workers (median; x = not done within the limit)";
    match plot::write(path, title, &series) {
        Ok(()) => println!("\nplot written to {}", path.display()),
        Err(e) => eprintln!("cannot write the plot {}: {e}", path.display()),
    }
}

/// Run every number of on-demand services under every master and print the table.
fn services(args: &ScaleArgs, setup: &Setup, masters: &[(Kind, PathBuf)]) {
    println!(
        "\n## on-demand services (prefork=0, -U 1): start until all ports listen, then {} \
         connections one at a time to random services; median [min-max] of {} runs",
        args.connects,
        args.common.runs.max(1)
    );
    let mut table = Vec::new();
    for text in &args.services {
        let Ok(n) = text.trim().parse::<u32>() else {
            eprintln!("skipped: {text:?} is not a number of services");
            continue;
        };
        let mut runs: Vec<Vec<DemandRun>> = vec![Vec::new(); masters.len()];
        for _ in 0..args.common.runs.max(1) {
            for (i, (kind, program)) in masters.iter().enumerate() {
                let run = ondemand::run_services(*kind, program, n, args.connects, setup);
                eprintln!("{} {n} services: {run:?}", kind.label());
                runs[i].push(run);
            }
        }
        table.push((n, runs));
    }
    print_header("services", masters);
    for (n, runs) in &table {
        let label = n.to_string();
        let start: Cells = runs
            .iter()
            .map(|rs| outcome_cell(&rs.iter().map(|r| r.start.clone()).collect::<Vec<_>>()))
            .collect();
        print_row(&label, "start s", &start, Better::Lower);
        type Get = fn(&DemandRun) -> Option<f64>;
        let rows: [(&str, Get); 3] = [
            ("connect to banner p50 ms", |r| r.p50_ms),
            ("connect to banner p99 ms", |r| r.p99_ms),
            ("failed connections", |r| Some(r.failures as f64)),
        ];
        for (what, get) in rows {
            let cells: Cells = runs
                .iter()
                .map(|rs| option_cell(&rs.iter().map(get).collect::<Vec<_>>()))
                .collect();
            print_row(&label, what, &cells, Better::Lower);
        }
    }
}

/// `ringmaster-bench scale`.
pub fn run(mut args: ScaleArgs) {
    let worker = match args.common.worker.clone() {
        Some(w) => Ok(w),
        None => cbuild::min_worker(),
    };
    let worker = match worker {
        Ok(w) => w,
        Err(e) => {
            eprintln!("scale: {e}");
            std::process::exit(1);
        }
    };
    args.common.worker = Some(worker.clone());
    let limits = limits::prepare();
    limits.describe();
    let setup = Setup {
        worker,
        load_clients: args.load_clients,
        load_pause: Duration::from_millis(args.load_pause_ms),
        load_in_stop: !args.no_stop_load,
        announce: !args.no_announce,
        limit: secs(args.limit),
        stop_limit: secs(args.stop_limit),
        limits,
    };
    println!(
        "worker: {} {}; both masters are children of the bench at its nice value",
        setup.worker.display(),
        if setup.announce {
            "(announces AVAILABLE at start)"
        } else {
            "--no-announce"
        }
    );
    let masters = args.common.masters();
    if args.shapes.iter().any(|s| !s.trim().is_empty()) {
        pools(&args, &setup, &masters);
    }
    if args.services.iter().any(|s| !s.trim().is_empty()) {
        services(&args, &setup, &masters);
    }
    cbuild::clean();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_say_what_did_not_finish() {
        let all: Vec<Outcome> = vec![Ok(1.0), Ok(3.0), Ok(2.0)];
        assert_eq!(outcome_cell(&all).1, "2 [1-3]");
        let some: Vec<Outcome> = vec![Ok(1.0), Err("not done after 9 s".into())];
        assert_eq!(
            outcome_cell(&some).1,
            "1 (**1 not done**: not done after 9 s)"
        );
        let none: Vec<Outcome> = vec![Err("not done after 9 s".into())];
        assert!(outcome_cell(&none).0.is_nan());
        assert_eq!(outcome_cell(&none).1, "**not done after 9 s**");
    }

    #[test]
    fn load_failures_are_summed_and_a_stop_loses_only_cut_connections() {
        let clean = LoadCounts {
            ok: 100,
            ..LoadCounts::default()
        };
        let lossy = LoadCounts {
            ok: 90,
            refused: 3,
            reset: 2,
            cut: 1,
            timeout: 1,
            ..LoadCounts::default()
        };
        assert_eq!(
            failed_cell(&[clean, lossy], false),
            (6.0, "6 (3/2/1)".into())
        );
        assert_eq!(failed_cell(&[clean, lossy], true), (1.0, "1; 3/1/1".into()));
        assert_eq!(failed_cell(&[clean], false), (0.0, "0 (0/0/0)".into()));
        assert!(failed_cell(&[], false).0.is_nan());
    }
}
