//! A master under test: its temp dir and config files, its start, readiness wait and stop.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, geteuid, Pid, User};

use crate::procfs;

/// Which master program runs the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ringmaster,
    Cyrus,
    /// The policy-free C master (`c/floor_master.c`): started as `PROGRAM HOST PORT WORKER
    /// ARGS...`, not with Cyrus's flags.
    Floor,
    /// The same C master with `-1`: ringmaster's spawning policy (one worker per waiting
    /// connection, none while one is starting), so that only the spawn paths differ.
    FloorSamePolicy,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ringmaster => "ringmaster",
            Kind::Cyrus => "cyrus master",
            Kind::Floor => "floor (C)",
            Kind::FloorSamePolicy => "floor -1 (C)",
        }
    }
}

/// The one service every scenario runs: the demo worker on a loopback port.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub worker: PathBuf,
    pub prefork: u32,
    /// The worker's `-U`; 0 means no limit (the demo worker's meaning, not Cyrus's).
    pub max_uses: u32,
    /// Ringmaster's workers send AVAILABLE when they start (never Cyrus's: see
    /// [`cyrus_conf`]). Off by default, so both masters run the same worker command line.
    pub announce: bool,
    /// Appended to every worker's command line.
    pub extra_args: String,
}

/// A running master and what it needs cleaned up.
pub struct Master {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
    worker: PathBuf,
    program: PathBuf,
    log: PathBuf,
}

static DIR_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A loopback port below the ephemeral range (see [`crate::scale::free_ports`]): a port
/// from port 0, released and bound again by the master, may meanwhile be taken by any
/// outgoing connection on the machine, and clients would then meet someone else's socket.
fn free_port() -> Result<u16, String> {
    crate::scale::free_ports(1)?
        .first()
        .copied()
        .ok_or_else(|| "no free port".to_string())
}

fn make_dir() -> Result<PathBuf, String> {
    let n = DIR_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringmaster-bench.{}.{n}", std::process::id()));
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    fs::create_dir(&dir).map_err(err)?;
    fs::create_dir(dir.join("conf")).map_err(err)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(err)?;
    Ok(dir)
}

/// Cyrus's master switches to user `cyrus` when started as root, so that user must own the
/// config directory. Do the same for ringmaster, which also runs workers as `cyrus`.
fn give_to_cyrus(dir: &Path) -> Result<(), String> {
    if !geteuid().is_root() {
        return Ok(());
    }
    let Ok(Some(user)) = User::from_name("cyrus") else {
        return Ok(());
    };
    for p in [dir.to_path_buf(), dir.join("conf")] {
        chown(&p, Some(user.uid), Some(user.gid))
            .map_err(|e| format!("chown {}: {e}", p.display()))?;
    }
    Ok(())
}

fn cyrus_conf(spec: &ServiceSpec, kind: Kind, port: u16) -> String {
    // Cyrus counts a worker ready from its fork and complains of AVAILABLE from a ready one,
    // so its workers never announce; ringmaster's do the same unless asked otherwise.
    let announce = if kind == Kind::Ringmaster && spec.announce {
        ""
    } else {
        " --no-announce"
    };
    format!(
        "# written by ringmaster-bench\nSERVICES {{\n  demo cmd=\"{worker}{announce} -U {uses} {extra}\" \
         listen=\"127.0.0.1:{port}\" prefork={prefork}\n}}\n",
        worker = spec.worker.display(),
        uses = spec.max_uses,
        extra = spec.extra_args,
        prefork = spec.prefork,
    )
}

impl Master {
    /// Write the configs, start `program`, and wait (bounded) until a client gets a banner.
    pub fn start(kind: Kind, program: &Path, spec: &ServiceSpec) -> Result<Master, String> {
        let port = free_port()?;
        let conf = cyrus_conf(spec, kind, port);
        let mut master = Master::launch(kind, program, &conf, port, spec)?;
        if let Err(e) = master.wait_ready(Duration::from_secs(5)) {
            master.stop();
            return Err(e);
        }
        if let Err(e) = master.wait_children(spec.prefork as usize, Duration::from_secs(10)) {
            master.stop();
            return Err(e);
        }
        Ok(master)
    }

    /// Write `conf` as cyrus.conf (and an imapd.conf) to a new temp dir and start `program`
    /// on it, without waiting for anything. `port` is the address clients use; the floor
    /// master, which reads no config, serves `spec`'s worker there.
    pub fn launch(
        kind: Kind,
        program: &Path,
        conf: &str,
        port: u16,
        spec: &ServiceSpec,
    ) -> Result<Master, String> {
        if !program.exists() {
            return Err(format!("{} does not exist", program.display()));
        }
        let dir = make_dir()?;
        let conf_path = dir.join("cyrus.conf");
        let imapd = dir.join("imapd.conf");
        let write = |p: &Path, text: String| {
            fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
        };
        write(&conf_path, conf.to_string())?;
        write(
            &imapd,
            format!("configdirectory: {}\n", dir.join("conf").display()),
        )?;
        give_to_cyrus(&dir)?;
        let log = dir.join("master.log");
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(program);
        if matches!(kind, Kind::Floor | Kind::FloorSamePolicy) {
            command
                .args((kind == Kind::FloorSamePolicy).then_some("-1"))
                .arg("127.0.0.1")
                .arg(port.to_string())
                .arg(&spec.worker)
                .args((!spec.announce).then_some("--no-announce"))
                .args(["-U", &spec.max_uses.to_string()])
                .args(spec.extra_args.split_whitespace());
        } else {
            command
                .arg("-D")
                .arg("-M")
                .arg(&conf_path)
                .arg("-C")
                .arg(&imapd)
                .arg("-p")
                .arg(dir.join("master.pid"));
            // Its own control socket, not the host's default (/run/ringmaster as root), which
            // a master already running there would keep; idle, it costs nothing.
            if kind == Kind::Ringmaster {
                command.arg("-S").arg(dir.join("control.sock"));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        Ok(Master {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
            worker: spec.worker.clone(),
            program: program.to_path_buf(),
            log,
        })
    }

    /// The master's exit status, once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its directory (configs, pidfile, control socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n    ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\n    {tail}")
        }
    }

    /// Bounded: the master must accept and a worker must greet within `limit`.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("nothing tried");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = self.log_tail();
                let hint = if tail.is_empty() {
                    " with no output; does it run services yet? (it is started as \
                     `-D -M <cyrus.conf> -C <imapd.conf> -p <pidfile>`)"
                } else {
                    ""
                };
                return Err(format!(
                    "{} {} exited before accepting on {} ({status}){hint}{tail}",
                    self.kind.label(),
                    self.program.display(),
                    self.addr,
                ));
            }
            match greet(self.addr, Duration::from_millis(500)) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{} gave no banner on {} within {limit:?} (last: {last}){}",
            self.kind.label(),
            self.addr,
            self.log_tail()
        ))
    }

    /// Bounded: wait until the master has at least `n` live children.
    pub fn wait_children(&self, n: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let have = procfs::children(self.pid()).len();
            if have >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} has {have} children, not {n}, after {limit:?}",
                    self.kind.label()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        kill(Pid::from_raw(self.pid()), signal).map_err(|e| format!("kill {signal}: {e}"))
    }

    /// Resident size now and at its peak, in kB.
    pub fn rss_kb(&self) -> (Option<u64>, Option<u64>) {
        (
            procfs::status_kb(self.pid(), "VmRSS"),
            procfs::status_kb(self.pid(), "VmHWM"),
        )
    }

    /// SIGTERM the master and wait up to `limit` for it to exit, reading its CPU time
    /// meanwhile: how long it took (None: not within `limit`), and the last CPU seconds seen.
    pub fn terminate(&mut self, limit: Duration) -> (Option<Duration>, Option<f64>) {
        let mut cpu = procfs::cpu_seconds(self.pid());
        let start = Instant::now();
        if self.signal(Signal::SIGTERM).is_err() {
            return (None, cpu);
        }
        while start.elapsed() < limit {
            if self.exited().is_some() {
                return (Some(start.elapsed()), cpu);
            }
            cpu = procfs::cpu_seconds(self.pid()).or(cpu);
            std::thread::sleep(Duration::from_millis(5));
        }
        (None, cpu)
    }

    /// SIGTERM the master (SIGKILL after 5 s), then SIGKILL any of its workers left behind.
    pub fn stop(&mut self) {
        let workers = procfs::children(self.pid());
        let _ = self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let worker = self.worker.display().to_string();
        for pid in workers {
            // Only our worker binary: the pid may have been reused since.
            if procfs::cmdline(pid).is_some_and(|c| c.starts_with(&worker)) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Connect and read one line that looks like a greeting.
fn greet(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.starts_with("* OK") {
        Ok(())
    } else {
        Err(format!("unexpected greeting {line:?}"))
    }
}
