//! `ringmaster-bench upgrade`: binary upgrades under load. One ringmaster serves the demo
//! worker to loopback clients while `ringmaster upgrade` re-executes it N times (alternating
//! between two copies of the binary); the table gives connections lost, the longest wait for
//! a banner (the longest pause in accepting) beside the same load without upgrades, and how
//! long each upgrade took until the new image answered.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;

use crate::load;
use crate::master::{Kind, Master};

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    /// The ringmaster binary (default: `ringmaster` next to this program).
    #[arg(long)]
    master: Option<PathBuf>,
    /// The worker binary (default: `ringmaster-demo-worker` next to this program).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// Upgrades in a row.
    #[arg(long, default_value_t = 20)]
    upgrades: u32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Workers kept ready.
    #[arg(long, default_value_t = 4)]
    prefork: u32,
    /// Pause between two upgrades, in ms.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Runs the load, with `upgrades` upgrades meanwhile (0: the baseline); returns the load's
/// figures and each upgrade's time.
fn scenario(
    master: &Master,
    program: &Path,
    binaries: &[PathBuf; 2],
    args: &UpgradeArgs,
    upgrades: u32,
) -> Result<(load::Stats, Vec<Duration>), String> {
    let per = Duration::from_millis(args.interval_ms) + Duration::from_millis(200);
    let duration = per * args.upgrades.max(1) + Duration::from_secs(2);
    let socket = master.dir().join("control.sock");
    let mut times = Vec::new();
    let mut error = None;
    let stats = load::run(master.addr, args.clients, duration, |deadline| {
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..upgrades {
            let start = Instant::now();
            let out = Command::new(program)
                .arg("upgrade")
                .arg("--binary")
                .arg(&binaries[(i % 2) as usize])
                .arg("-S")
                .arg(&socket)
                .args(["--timeout", "20"])
                .output();
            match out {
                Ok(o) if o.status.success() => times.push(start.elapsed()),
                Ok(o) => {
                    error = Some(String::from_utf8_lossy(&o.stderr).into_owned());
                    break;
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(left);
    });
    match error {
        Some(e) => Err(format!("upgrade {} failed: {e}", times.len() + 1)),
        None => Ok((stats, times)),
    }
}

pub fn run(args: UpgradeArgs) -> Result<(), String> {
    let program = args
        .master
        .clone()
        .unwrap_or_else(|| crate::sibling("ringmaster"));
    let worker = args
        .worker
        .clone()
        .unwrap_or_else(|| crate::sibling("ringmaster-demo-worker"));
    let dir = std::env::temp_dir().join(format!("ringmaster-bench-upgrade.{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let binaries = [dir.join("ringmaster-a"), dir.join("ringmaster-b")];
    for b in &binaries {
        std::fs::copy(&program, b).map_err(|e| format!("{}: {e}", b.display()))?;
    }
    let spec = crate::master::ServiceSpec {
        worker,
        prefork: args.prefork,
        max_uses: 0,
        announce: false,
        extra_args: String::new(),
    };
    let mut master = Master::start(Kind::Ringmaster, &binaries[0], &spec)?;
    let base = scenario(&master, &program, &binaries, &args, 0);
    let up = scenario(&master, &program, &binaries, &args, args.upgrades);
    master.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let (base, _) = base?;
    let (up, times) = up?;
    print_table(&args, &base, &up, &times);
    Ok(())
}

fn print_table(args: &UpgradeArgs, base: &load::Stats, up: &load::Stats, times: &[Duration]) {
    let longest = |s: &load::Stats| s.latencies.last().copied().unwrap_or_default();
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    println!(
        "\n== upgrade: {} upgrades under load, {} clients, prefork={}",
        times.len(),
        args.clients,
        args.prefork
    );
    println!("{:<48} {:>12} {:>12}", "", "no upgrade", "upgrades");
    println!("{:<48} {:>12} {:>12}", "connections served", base.ok, up.ok);
    println!(
        "{:<48} {:>12} {:>12}",
        "connections lost (lower is better)",
        base.failures(),
        up.failures()
    );
    println!(
        "{:<48} {:>12} {:>12}",
        "longest wait for a banner, ms (lower is better)",
        ms(longest(base)),
        ms(longest(up))
    );
    println!(
        "{:<48} {:>12} {:>12}",
        "p99 wait for a banner, ms",
        format!("{:.2}", base.percentile_ms(99.0).unwrap_or(f64::NAN)),
        format!("{:.2}", up.percentile_ms(99.0).unwrap_or(f64::NAN))
    );
    if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
        println!(
            "upgrade until the new image answers, ms: median {}, min {}, max {}",
            ms(sorted[sorted.len() / 2]),
            ms(*first),
            ms(*last)
        );
    }
    println!("nginx (USR2+QUIT): not measured by this bench yet (see docs/benchmarks.md)");
}
