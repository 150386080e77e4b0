//! `ringmaster-bench upgrade`: binary upgrades under load. One ringmaster serves the demo
//! worker to loopback clients while `ringmaster upgrade` re-executes it N times (alternating
//! between two copies of the binary); the table gives connections lost, the longest wait for
//! a banner (the longest pause in accepting) beside the same load without upgrades, and how
//! long each upgrade took until the new image answered. Beside it, when nginx is installed,
//! the same over HTTP with nginx's USR2+QUIT upgrade (nginx.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;

use std::net::SocketAddr;

use crate::load;
use crate::master::{Kind, Master};
use crate::nginx::{self, Nginx};

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
    /// Skip nginx even when it is installed.
    #[arg(long)]
    no_nginx: bool,
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// What one master did: the load without and with upgrades, and each upgrade's time.
struct Measured {
    base: load::Stats,
    up: load::Stats,
    times: Vec<Duration>,
}

/// Runs the load against `addr` (each client sending `request`), with `upgrades` calls of
/// `upgrade` meanwhile (0: the baseline); returns the load's figures and each upgrade's time.
fn measure(
    addr: SocketAddr,
    request: &'static [u8],
    args: &UpgradeArgs,
    upgrades: u32,
    mut upgrade: impl FnMut(u32) -> Result<(), String>,
) -> Result<(load::Stats, Vec<Duration>), String> {
    let per = Duration::from_millis(args.interval_ms) + Duration::from_millis(200);
    let duration = per * args.upgrades.max(1) + Duration::from_secs(2);
    let mut times = Vec::new();
    let mut error = None;
    let stats = load::run_with(addr, args.clients, duration, request, |deadline| {
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..upgrades {
            let start = Instant::now();
            if let Err(e) = upgrade(i) {
                error = Some(format!("upgrade {} failed: {e}", i + 1));
                break;
            }
            times.push(start.elapsed());
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    });
    match error {
        Some(e) => Err(e),
        None => Ok((stats, times)),
    }
}

/// `ringmaster upgrade --binary` to one of the two copies, alternately.
fn ringmaster_upgrade(program: &Path, binary: &Path, socket: &Path) -> Result<(), String> {
    let out = Command::new(program)
        .arg("upgrade")
        .arg("--binary")
        .arg(binary)
        .arg("-S")
        .arg(socket)
        .args(["--timeout", "20"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ringmaster(args: &UpgradeArgs) -> Result<Measured, String> {
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
    let socket = master.dir().join("control.sock");
    let none = |_| Ok(());
    let base = measure(master.addr, b"", args, 0, none);
    let up = measure(master.addr, b"", args, args.upgrades, |i| {
        ringmaster_upgrade(&program, &binaries[(i % 2) as usize], &socket)
    });
    master.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let (base, _) = base?;
    let (up, times) = up?;
    Ok(Measured { base, up, times })
}

fn nginx(args: &UpgradeArgs) -> Result<Measured, String> {
    let port = crate::scale::free_ports(1)?
        .first()
        .copied()
        .ok_or("no free port")?;
    let server = Nginx::start(port)?;
    let base = measure(server.addr, nginx::REQUEST, args, 0, |_| Ok(()));
    let up = measure(server.addr, nginx::REQUEST, args, args.upgrades, |_| {
        server.upgrade()
    });
    server.stop();
    let (base, _) = base?;
    let (up, times) = up?;
    Ok(Measured { base, up, times })
}

pub fn run(args: UpgradeArgs) -> Result<(), String> {
    let ours = ringmaster(&args)?;
    let theirs = if Path::new(nginx::NGINX).exists() && !args.no_nginx {
        Some(nginx(&args))
    } else {
        None
    };
    print_table(&args, &ours, theirs.as_ref());
    Ok(())
}

/// One row's figure, from a load's stats.
type Figure<'a> = &'a dyn Fn(&load::Stats) -> String;

fn cells(m: &Measured, f: impl Fn(&load::Stats) -> String) -> [String; 2] {
    [f(&m.base), f(&m.up)]
}

fn print_table(args: &UpgradeArgs, ours: &Measured, theirs: Option<&Result<Measured, String>>) {
    let longest = |s: &load::Stats| ms(s.latencies.last().copied().unwrap_or_default());
    let p99 = |s: &load::Stats| format!("{:.2}", s.percentile_ms(99.0).unwrap_or(f64::NAN));
    let nginx = theirs.and_then(|r| r.as_ref().ok());
    println!(
        "\n== upgrade: {} upgrades under load, {} clients; ringmaster prefork={}, nginx 2 workers",
        args.upgrades, args.clients, args.prefork
    );
    println!(
        "{:<36} {:>12} {:>12} {:>12} {:>12}",
        "", "ringmaster", "+upgrades", "nginx", "+USR2/QUIT"
    );
    let rows: [(&str, Figure<'_>); 4] = [
        ("connections served", &|s| s.ok.to_string()),
        ("connections lost (lower is better)", &|s| {
            s.failures().to_string()
        }),
        ("longest wait, ms (lower is better)", &longest),
        ("p99 wait, ms", &p99),
    ];
    for (name, f) in rows {
        let [a, b] = cells(ours, f);
        let [c, d] = nginx.map_or(["-".into(), "-".into()], |m| cells(m, f));
        println!("{name:<36} {a:>12} {b:>12} {c:>12} {d:>12}");
    }
    for (label, m) in [("ringmaster", Some(ours)), ("nginx", nginx)] {
        let Some(m) = m else { continue };
        let mut sorted = m.times.clone();
        sorted.sort_unstable();
        if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
            println!(
                "{label}: one upgrade took, ms: median {}, min {}, max {}",
                ms(sorted[sorted.len() / 2]),
                ms(*first),
                ms(*last)
            );
        }
    }
    match theirs {
        None => println!("nginx: not installed ({}), not measured", nginx::NGINX),
        Some(Err(e)) => println!("nginx: FAILED: {e}"),
        Some(Ok(_)) => {}
    }
}
