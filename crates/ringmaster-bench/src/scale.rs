//! `ringmaster-bench scale`, pools: S services x prefork P of the minimal C worker under
//! each master; times start (until all S x P workers reported ready), a SIGHUP recycle (until
//! no old worker is left, reaped, and S x P new ones reported ready) and a SIGTERM stop (until
//! the master exited), with the master's own CPU time for each. Every wait is bounded: what
//! did not finish reads "not done after ...".
//!
//! A light client load (see [`LoadCounts`]) runs from the end of the start until the recycle
//! is done, and again through the stop, each counted apart.

use std::collections::HashSet;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::limits::{self, Limits};
use crate::load::{self, Background, Stats};
use crate::master::{Kind, Master, ServiceSpec};
use crate::procfs;
use crate::ready::Ready;

/// A finished measurement in seconds, or why it did not finish.
pub type Outcome = Result<f64, String>;

/// S services x P preforked workers each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub services: u32,
    pub prefork: u32,
}

impl Shape {
    pub fn parse(text: &str) -> Result<Shape, String> {
        let (s, p) = text
            .split_once('x')
            .ok_or_else(|| format!("{text:?}: want SERVICESxPREFORK, e.g. 50x50"))?;
        let n = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|e| format!("{text:?}: {e}"))
        };
        Ok(Shape {
            services: n(s)?,
            prefork: n(p)?,
        })
    }

    pub fn workers(&self) -> u64 {
        self.services as u64 * self.prefork as u64
    }
}

/// What one run of one shape under one master measured.
#[derive(Debug, Clone)]
pub struct PoolRun {
    pub start: Outcome,
    pub recycle: Outcome,
    /// The recycle ran into the time limit (rather than failing otherwise).
    pub recycle_not_done: bool,
    pub stop: Outcome,
    pub cpu_start: Option<f64>,
    pub cpu_recycle: Option<f64>,
    pub cpu_stop: Option<f64>,
    /// The bench's own CPU time (all its threads, the load's included) while it waited for
    /// the recycle: what the bench took from the cores the master and its workers need.
    pub bench_cpu_recycle: Option<f64>,
    /// Of that, the waiting thread's alone.
    pub wait_cpu_recycle: Option<f64>,
    /// The client load from the end of the start until the recycle was done.
    pub load_recycle: Option<LoadCounts>,
    /// The client load from the SIGTERM until the master exited.
    pub load_stop: Option<LoadCounts>,
    /// The master's peak resident size, read after the recycle, in kB.
    pub master_hwm_kb: Option<f64>,
}

impl PoolRun {
    fn not_started() -> PoolRun {
        PoolRun {
            start: Err("not started".into()),
            recycle: Err("not started".into()),
            recycle_not_done: false,
            stop: Err("not started".into()),
            cpu_start: None,
            cpu_recycle: None,
            cpu_stop: None,
            bench_cpu_recycle: None,
            wait_cpu_recycle: None,
            load_recycle: None,
            load_stop: None,
            master_hwm_kb: None,
        }
    }
}

/// Settings shared by every run.
pub struct Setup {
    pub worker: PathBuf,
    /// Client threads of the load through recycle and stop; 0: no load.
    pub load_clients: usize,
    /// Each load client's pause after every connection.
    pub load_pause: Duration,
    /// The load also runs through the stop (else it stays paused from the end of the
    /// recycle, and the stop is timed as without a load).
    pub load_in_stop: bool,
    pub announce: bool,
    pub limit: Duration,
    pub stop_limit: Duration,
    pub limits: Limits,
}

/// What the client load saw in one phase of a run: each connection is connect, read the
/// banner line, close.
///
/// Through the recycle every connection that did not get its whole banner is lost: the
/// master must keep its listeners and enough workers throughout. Through the stop, refusals
/// (listeners closed) and resets before any of the banner (the connection sat in a closed
/// listener's queue: no worker had taken it) are expected and only reported; a connection
/// cut after part of its banner (a worker took it and left it) is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadCounts {
    pub ok: u64,
    /// Nothing listened.
    pub refused: u64,
    /// Connected, then reset or closed before the whole banner line, `cut` included.
    pub reset: u64,
    /// Of `reset`: after part of the banner.
    pub cut: u64,
    /// No connection or no banner within the client's bound.
    pub timeout: u64,
    pub other: u64,
    /// Connect to banner, 99th percentile of the connections that got one.
    pub p99_ms: Option<f64>,
}

impl LoadCounts {
    pub fn of(stats: &Stats) -> LoadCounts {
        LoadCounts {
            ok: stats.ok,
            refused: stats.refused,
            reset: stats.reset,
            cut: stats.cut,
            timeout: stats.timeout,
            other: stats.other,
            p99_ms: stats.percentile_ms(99.0),
        }
    }

    /// Every connection that did not get its banner: lost, through a recycle.
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.other
    }

    /// Lost through a stop: only what a worker had taken and cut off.
    pub fn lost_in_stop(&self) -> u64 {
        self.cut
    }
}

/// The load's windows: an attempt counts in the one open when it began.
const THROUGH_RECYCLE: usize = 0;
const THROUGH_STOP: usize = 1;

/// The load over every service's port, round-robin, its threads waiting for a window.
fn start_load(setup: &Setup, ports: &[u16]) -> Option<Background> {
    if setup.load_clients == 0 {
        return None;
    }
    let addrs = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    Some(Background::start(
        addrs,
        setup.load_clients,
        setup.load_pause,
        THROUGH_STOP + 1,
    ))
}

/// Let every load client get through a connection or so, so that the load is under way
/// when the SIGHUP goes.
fn warm_up(load: &Background, clients: usize) {
    let deadline = Instant::now() + load::CLIENT_TIMEOUT * 2;
    while load.done() < clients as u64 && Instant::now() < deadline {
        std::thread::sleep(TICK);
    }
}

static RUN_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A temp dir for one run's readiness socket, searchable by the workers' user.
pub fn run_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let n = RUN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringmaster-bench-run.{}.{n}", std::process::id()));
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    fs::create_dir_all(&dir).map_err(err)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(err)?;
    Ok(dir)
}

/// `n` loopback ports free at the time of asking (all held at once, so they differ), taken
/// below the kernel's ephemeral range: a port in that range, free when asked, may be taken
/// by any outgoing connection on the machine before the master binds it.
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    // Spread concurrent benches apart, and each call after the last one's ports (a master's
    // port is not used again at once); any port that is taken is skipped.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let after = NEXT.fetch_add(n as u32, std::sync::atomic::Ordering::Relaxed);
    let first = 10_000 + ((std::process::id() % 8) * 2_500 + after) % 22_000;
    let first = first as u16;
    let mut held = Vec::with_capacity(n);
    for port in (first..32_000).chain(10_000..first) {
        if held.len() == n {
            break;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        return Err(format!(
            "only {} free ports below 32000, not {n}",
            held.len()
        ));
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| format!("no free port: {e}"))
        })
        .collect()
}

/// A cyrus.conf of one service per port, each running `cmd` with `prefork`.
pub fn services_conf(ports: &[u16], cmd: &str, prefork: u32) -> String {
    let mut conf = String::from("# written by ringmaster-bench scale\nSERVICES {\n");
    for (i, port) in ports.iter().enumerate() {
        conf.push_str(&format!(
            "  s{i} cmd=\"{cmd}\" listen=\"127.0.0.1:{port}\" prefork={prefork}\n"
        ));
    }
    conf.push_str("}\n");
    conf
}

/// The worker command line, the same for every master.
pub fn worker_cmd(setup: &Setup, uses: u32, report: Option<&Path>) -> String {
    let mut cmd = setup.worker.display().to_string();
    if !setup.announce {
        cmd.push_str(" --no-announce");
    }
    cmd.push_str(&format!(" -U {uses}"));
    if let Some(p) = report {
        cmd.push_str(&format!(" -r {}", p.display()));
    }
    cmd
}

fn cpu(master: &Master) -> Option<f64> {
    procfs::cpu_seconds(master.pid())
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

/// How often the bench looks at progress while it waits. It sleeps between looks and reads
/// everything that arrived meanwhile, so waiting costs it the same under every master however
/// fast the workers report; a finish is seen up to one tick late under any master alike.
pub const TICK: Duration = Duration::from_millis(5);

/// Of the time the bench waits for a recycle, at most 1/READ_SHARE goes to reading the
/// master's children (see [`OldWorkers::update`]).
const READ_SHARE: u32 = 20;

/// Wake-ups on a fixed schedule, [`TICK`] apart. A late wake-up skips the ticks it missed
/// rather than making up for them in a burst.
struct Ticker {
    next: Instant,
}

impl Ticker {
    fn new() -> Ticker {
        Ticker {
            next: Instant::now() + TICK,
        }
    }

    fn sleep(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        let late = Instant::now().saturating_duration_since(self.next);
        let missed = (late.as_nanos() / TICK.as_nanos()) as u32;
        self.next += TICK * (missed + 1);
    }
}

/// Wait until `want` pids reported ready since `since`, bounded by `limit`.
fn wait_started(
    master: &mut Master,
    ready: &mut Ready,
    want: usize,
    since: Instant,
    limit: Duration,
) -> Outcome {
    ready.mark(since);
    let mut tick = Ticker::new();
    loop {
        tick.sleep();
        ready.drain();
        let have = ready.fresh();
        if have >= want {
            return Ok(since.elapsed().as_secs_f64());
        }
        if let Some(status) = master.exited() {
            return Err(format!(
                "master exited ({status}) with {have} of {want} ready{}",
                master.log_tail()
            ));
        }
        if since.elapsed() > limit {
            let children = procfs::child_list(master.pid()).len();
            return Err(format!(
                "not done after {} s: {have} of {want} ready, {children} children",
                limit.as_secs()
            ));
        }
    }
}

/// The workers a master had before a SIGHUP that the bench has not yet seen go: a pid that
/// is no longer the master's child, or that reported ready after the SIGHUP (a new worker
/// with an old number), is gone.
struct OldWorkers {
    left: HashSet<i32>,
    before: usize,
    /// Children of the master at the last read.
    children: usize,
    /// No paced read before this.
    next_read: Instant,
}

impl OldWorkers {
    fn new(children: Vec<i32>) -> OldWorkers {
        let left: HashSet<i32> = children.into_iter().collect();
        OldWorkers {
            before: left.len(),
            children: left.len(),
            left,
            next_read: Instant::now(),
        }
    }

    /// Read the master's children now.
    fn read(&mut self, master: i32, ready: &Ready) {
        let started = Instant::now();
        let listed = procfs::child_list(master);
        self.children = listed.len();
        // A pid missing from the list was reaped and stays gone: should its number come
        // back, it is a new worker, which reports ready.
        self.left = listed
            .into_iter()
            .filter(|p| self.left.contains(p) && !ready.is_fresh(*p))
            .collect();
        self.next_read = Instant::now() + started.elapsed() * (READ_SHARE - 1);
    }

    /// [`Self::read`], unless the last read was too recent. The list holds every child
    /// (both pools while ringmaster keeps the old one, up to 40,000 pids of text): read on
    /// every tick, it would cost the bench more under the master with more children alive,
    /// and take from the cores both masters need.
    fn update(&mut self, master: i32, ready: &Ready) {
        if Instant::now() >= self.next_read {
            self.read(master, ready);
        }
    }
}

/// SIGHUP, then wait until no pid of the old pool is a child any more and `want` new ones
/// reported.
fn wait_recycled(master: &mut Master, ready: &mut Ready, want: usize, limit: Duration) -> Outcome {
    // Reports still queued are from the old pool: read them before the mark.
    ready.drain();
    let mut old = OldWorkers::new(procfs::child_list(master.pid()));
    let since = Instant::now();
    ready.mark(since);
    master.signal(Signal::SIGHUP)?;
    let mut tick = Ticker::new();
    loop {
        tick.sleep();
        ready.drain();
        let fresh = ready.fresh();
        // Until `want` new workers reported the recycle cannot be over, so the children
        // need not be read before.
        if fresh >= want {
            old.update(master.pid(), ready);
            if old.left.is_empty() {
                return Ok(since.elapsed().as_secs_f64());
            }
        }
        if let Some(status) = master.exited() {
            return Err(format!("master exited ({status}) during the recycle"));
        }
        if since.elapsed() > limit {
            old.read(master.pid(), ready);
            return Err(format!(
                "not done after {} s: {} of {} old workers left, {fresh} new ready, \
                 {} children",
                limit.as_secs(),
                old.left.len(),
                old.before,
                old.children
            ));
        }
    }
}

/// The recycle of a started pool, under the client load (returned, paused, for the stop).
fn recycle(
    master: &mut Master,
    ready: &mut Ready,
    want: usize,
    setup: &Setup,
    ports: &[u16],
    run: &mut PoolRun,
) -> Option<Background> {
    let load = start_load(setup, ports);
    if let Some(load) = &load {
        load.open(THROUGH_RECYCLE);
        warm_up(load, setup.load_clients);
    }
    let cpu_before = cpu(master);
    let bench_cpu_before = procfs::own_cpu_seconds();
    let wait_cpu_before = procfs::thread_cpu_seconds();
    run.recycle = wait_recycled(master, ready, want, setup.limit);
    run.bench_cpu_recycle = delta(bench_cpu_before, procfs::own_cpu_seconds());
    run.wait_cpu_recycle = delta(wait_cpu_before, procfs::thread_cpu_seconds());
    run.recycle_not_done = run
        .recycle
        .as_ref()
        .is_err_and(|e| e.starts_with("not done"));
    run.cpu_recycle = delta(cpu_before, cpu(master));
    if let Some(load) = &load {
        // What began during the recycle ends before the SIGTERM, so that nothing the stop
        // did is laid at the recycle's door.
        if !load.pause(load::CLIENT_TIMEOUT * 3) {
            eprintln!(
                "{}: load clients still busy after the recycle",
                master.kind.label()
            );
        }
    }
    load
}

/// One run of `shape` under one master: start, recycle, stop; cleaned up whatever happens.
pub fn run_pools(kind: Kind, program: &Path, shape: Shape, setup: &Setup) -> PoolRun {
    let mut run = PoolRun::not_started();
    let prepared = run_dir().and_then(|dir| {
        let ready = Ready::bind(&dir)?;
        let ports = free_ports(shape.services as usize)?;
        Ok((dir, ready, ports))
    });
    let (dir, mut ready, ports) = match prepared {
        Ok(p) => p,
        Err(e) => {
            run.start = Err(e);
            return run;
        }
    };
    let cmd = worker_cmd(setup, 0, Some(ready.path()));
    let conf = services_conf(&ports, &cmd, shape.prefork);
    let spec = ServiceSpec {
        worker: setup.worker.clone(),
        prefork: shape.prefork,
        max_uses: 0,
        announce: setup.announce,
        extra_args: String::new(),
    };
    let want = shape.workers() as usize;
    let since = Instant::now();
    let mut master = match Master::launch(kind, program, &conf, ports[0], &spec) {
        Ok(m) => m,
        Err(e) => {
            run.start = Err(e);
            let _ = fs::remove_dir_all(&dir);
            return run;
        }
    };
    run.start = wait_started(&mut master, &mut ready, want, since, setup.limit);
    run.cpu_start = cpu(&master);
    let misfit = setup.limits.misfit(shape.workers());
    let mut load = None;
    if let (Kind::Ringmaster, Some(why)) = (kind, &misfit) {
        // It keeps the old pool until the new one is up: forking into pid exhaustion would
        // make every other process on the machine fail to fork too.
        run.recycle = Err(format!("not run: {why}"));
    } else if run.start.is_ok() {
        load = recycle(&mut master, &mut ready, want, setup, &ports, &mut run);
    } else {
        run.recycle = Err("no start".into());
    }
    run.master_hwm_kb = master.rss_kb().1.map(|v| v as f64);
    let cpu_before_stop = cpu(&master);
    if let (Some(load), true) = (&load, setup.load_in_stop) {
        load.open(THROUGH_STOP);
    }
    let (took, cpu_last) = master.terminate(setup.stop_limit);
    if let Some(load) = load {
        let windows = load.finish();
        run.load_recycle = windows.get(THROUGH_RECYCLE).map(LoadCounts::of);
        if setup.load_in_stop {
            run.load_stop = windows.get(THROUGH_STOP).map(LoadCounts::of);
        }
    }
    run.stop = took.map(|d| d.as_secs_f64()).ok_or_else(|| {
        format!(
            "not done after {} s (then SIGKILL)",
            setup.stop_limit.as_secs()
        )
    });
    run.cpu_stop = delta(cpu_before_stop, cpu_last);
    master.stop();
    let swept = limits::sweep_orphans(&setup.worker.display().to_string(), &HashSet::new());
    if swept > 0 {
        eprintln!("{}: killed {swept} workers left behind", kind.label());
    }
    let _ = fs::remove_dir_all(&dir);
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = Shape::parse("100x50").unwrap();
        assert_eq!((s.services, s.prefork, s.workers()), (100, 50, 5000));
        assert!(Shape::parse("100").is_err());
        assert!(Shape::parse("ax5").is_err());
    }

    #[test]
    fn one_service_per_port() {
        let conf = services_conf(&[1000, 1001], "/w -U 0", 5);
        assert!(conf.contains("s0 cmd=\"/w -U 0\" listen=\"127.0.0.1:1000\" prefork=5"));
        assert!(conf.contains("s1 cmd=\"/w -U 0\" listen=\"127.0.0.1:1001\" prefork=5"));
        assert_eq!(free_ports(3).unwrap().len(), 3);
    }
}
