//! Shared harness for the end-to-end tests: a temp dir, the real master binary started on a
//! config, bounded waits on conditions, loopback clients, and cleanup of every process by pid.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const MASTER: &str = env!("CARGO_BIN_EXE_ringmaster");
pub const WORKER: &str = env!("CARGO_BIN_EXE_ringmaster-demo-worker");

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns true) when a requirement is missing, outside CI; fails loudly in CI.
pub fn skip_unless(available: bool, what: &str) -> bool {
    if available {
        return false;
    }
    if in_ci() {
        panic!("CI=true but {what} is not available");
    }
    eprintln!("SKIPPED: {what} is not available");
    true
}

/// Waits until `cond` holds, checking every few milliseconds, for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("rm-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        // Workers run as nobody when the tests run as root: let them write here.
        let _ = Command::new("chmod").arg("0777").arg(&path).status();
        TestDir(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `n` distinct free ports: all held open at once while they are picked (one `free_port`
/// after another may be given the same port twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// Parent pid of a process, from /proc.
pub fn ppid_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// State letter of a process (R, S, Z...), from /proc.
pub fn state_of(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .collect()
}

/// Live (non-zombie) children of `parent`.
pub fn children_of(parent: i32) -> BTreeSet<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| ppid_of(pid) == Some(parent) && state_of(pid) != Some('Z'))
        .collect()
}

/// Pids of live processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> BTreeSet<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(marker)
            }) && state_of(pid) != Some('Z')
        })
        .collect()
}

pub fn kill(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

/// A running master under test.
pub struct Master {
    pub child: Option<Child>,
    pub pid: i32,
    pub conf: PathBuf,
    pub imapd: PathBuf,
    pub pidfile: PathBuf,
    pub ready: PathBuf,
    pub log: PathBuf,
    /// Every worker pid this test has seen, for cleanup.
    seen: BTreeSet<i32>,
}

/// Options for starting a master.
pub struct Start<'a> {
    pub dir: &'a TestDir,
    pub conf: &'a str,
    pub args: Vec<String>,
    pub imapd_extra: &'a str,
    pub pidfile: Option<PathBuf>,
    pub envs: Vec<(String, String)>,
}

impl<'a> Start<'a> {
    pub fn new(dir: &'a TestDir, conf: &'a str) -> Start<'a> {
        Start {
            dir,
            conf,
            args: vec![],
            imapd_extra: "",
            pidfile: None,
            envs: vec![],
        }
    }

    /// Set an environment variable for the master.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Use this pidfile instead of one in the test dir.
    pub fn pidfile(mut self, path: &Path) -> Self {
        self.pidfile = Some(path.to_path_buf());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Starts the master; does not wait for it to be ready.
    pub fn spawn(self) -> Master {
        let dir = self.dir;
        let conf = dir.path("cyrus.conf");
        let imapd = dir.path("imapd.conf");
        fs::write(&conf, self.conf).expect("write cyrus.conf");
        fs::write(
            &imapd,
            format!("configdirectory: {}\n{}", dir.0.display(), self.imapd_extra),
        )
        .expect("write imapd.conf");
        let pidfile = self
            .pidfile
            .clone()
            .unwrap_or_else(|| dir.path("master.pid"));
        let ready = dir.path("master.ready");
        let mut extra: Vec<String> = vec!["-r".into(), ready.display().to_string(), "-v".into()];
        extra.extend(self.args.iter().cloned());
        // A control socket of its own, never the shared default.
        if !self
            .args
            .iter()
            .any(|a| a == "-S" || a == "--control" || a == "--no-control")
        {
            extra.extend(["-S".into(), dir.path("control.sock").display().to_string()]);
        }
        if is_root() && !self.args.iter().any(|a| a == "-u") {
            extra.extend(["-u".into(), "nobody".into()]);
        }
        launch(MASTER, dir, &pidfile, &extra, &self.envs)
    }

    /// Starts the master and waits until it is ready (its ready file exists).
    pub fn start(self) -> Master {
        let mut m = self.spawn();
        m.wait_ready();
        m
    }
}

impl Master {
    pub fn wait_ready(&mut self) {
        self.wait_ready_for(WAIT);
    }

    /// As `wait_ready`, for a start-up that forks thousands of workers.
    pub fn wait_ready_for(&mut self, limit: Duration) {
        let ready = self.ready.clone();
        let ok = wait_until(limit, || ready.exists() || self.exited().is_some());
        assert!(
            ok && ready.exists(),
            "master not ready; log:\n{}",
            self.log_text()
        );
    }

    /// Waits until the master blocks SIGHUP and SIGTERM (it reads them from a signalfd from
    /// then on): the earliest moment a signal is handled rather than fatal.
    pub fn wait_signals_blocked(&mut self) {
        let pid = self.pid;
        let blocked = || {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << 0) != 0 && mask & (1 << 14) != 0)
        };
        assert!(
            wait_until(WAIT, blocked),
            "master never blocked its signals"
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The master's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the master to exit; its status, or None after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.exited();
            status.is_some()
        });
        status
    }

    pub fn children(&mut self) -> BTreeSet<i32> {
        let kids = children_of(self.pid);
        self.seen.extend(kids.iter().copied());
        kids
    }

    /// Waits until the master has exactly `n` children; returns them.
    pub fn wait_children(&mut self, n: usize) -> BTreeSet<i32> {
        let mut kids = BTreeSet::new();
        let ok = wait_until(WAIT, || {
            kids = self.children();
            kids.len() == n
        });
        assert!(
            ok,
            "expected {n} children, have {}: {kids:?}\nlog:\n{}",
            kids.len(),
            self.log_text()
        );
        kids
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        kill(self.pid, signal);
    }

    /// Kills the master's only child and waits until another one has taken its place.
    pub fn kill_child_and_wait_for_replacement(&mut self) {
        let first = self.wait_children(1);
        let pid = *first.iter().next().expect("one child");
        kill(pid, nix::sys::signal::Signal::SIGKILL);
        let mut now = first;
        let replaced = wait_until(WAIT, || {
            now = self.children();
            now.len() == 1 && !now.contains(&pid)
        });
        assert!(replaced, "{pid} not replaced: {now:?}\n{}", self.log_text());
    }

    /// Replaces cyrus.conf (atomically) for a reload.
    pub fn rewrite_conf(&self, text: &str) {
        let tmp = self.conf.with_extension("new");
        fs::write(&tmp, text).expect("write conf");
        fs::rename(&tmp, &self.conf).expect("rename conf");
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_until(WAIT, || self.log_text().contains(needle))
    }

    /// Waits until the log has a record of kind `event` with these `key=value` fields.
    pub fn wait_logged(&self, event: &str, fields: &[&str]) -> bool {
        wait_until(WAIT, || logged(&self.log_text(), event, fields))
    }

    /// SIGTERM, bounded wait, SIGKILL; then every worker ever seen is killed by pid.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.children();
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(WAIT);
        if status.is_none() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.wait_exit(WAIT);
        }
        for &pid in &self.seen {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.child = None;
        status
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// Connects to 127.0.0.1:port and reads the banner line.
/// Whether `text` has a line printed from a record of kind `event` (`event=<kind>`) that
/// also carries every one of `fields` (`key=value`, as printed), whatever the wording.
pub fn logged(text: &str, event: &str, fields: &[&str]) -> bool {
    let kind = format!("event={event}");
    text.lines().any(|line| {
        let words: Vec<&str> = line.split(' ').collect();
        words.contains(&kind.as_str()) && fields.iter().all(|f| words.contains(f))
    })
}

pub fn connect(port: u16) -> (TcpStream, String) {
    connect_addr(SocketAddr::from(([127, 0, 0, 1], port)))
}

pub fn connect_addr(addr: SocketAddr) -> (TcpStream, String) {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let banner = read_line(&stream);
    (stream, banner)
}

pub fn read_line(stream: &TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    line.trim_end().to_string()
}

/// Sends a command line and returns the answer line.
pub fn ask(stream: &mut TcpStream, line: &str) -> String {
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .expect("send");
    let mut byte = [0u8; 1];
    let mut out = Vec::new();
    while stream.read(&mut byte).unwrap_or(0) == 1 {
        if byte[0] == b'\n' {
            break;
        }
        out.push(byte[0]);
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// The pid a demo worker's banner names.
pub fn banner_pid(banner: &str) -> i32 {
    banner
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in banner {banner:?}"))
}

pub fn read_to_string(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Starts `program`, any master taking Cyrus master's flags (ringmaster, or Cyrus's own for
/// comparison), in the foreground on the cyrus.conf and imapd.conf already written in `dir`:
/// `-D -M <dir>/cyrus.conf -C <dir>/imapd.conf -p <dir>/master.pid`, then `extra`. stderr goes
/// to `<dir>/master.log`. The master gets a process group of its own, since Cyrus's master
/// signals its whole group when it stops. Does not wait for it to be ready.
pub fn spawn_master_program(program: &str, dir: &TestDir, extra: &[&str]) -> Master {
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    launch(program, dir, &dir.path("master.pid"), &extra, &[])
}

/// Starts `program` with `-D -M <dir>/cyrus.conf -C <dir>/imapd.conf -p <pidfile>`, then
/// `extra`, stderr to `<dir>/master.log`, in a process group of its own.
fn launch(
    program: &str,
    dir: &TestDir,
    pidfile: &Path,
    extra: &[String],
    envs: &[(String, String)],
) -> Master {
    use std::os::unix::process::CommandExt;
    let conf = dir.path("cyrus.conf");
    let imapd = dir.path("imapd.conf");
    let log = dir.path("master.log");
    let logfile = fs::File::create(&log).expect("log file");
    let child = Command::new(program)
        .arg("-D")
        .arg("-M")
        .arg(&conf)
        .arg("-C")
        .arg(&imapd)
        .arg("-p")
        .arg(pidfile)
        .args(extra)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logfile)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let pid = child.id() as i32;
    Master {
        child: Some(child),
        pid,
        conf,
        imapd,
        pidfile: pidfile.to_path_buf(),
        ready: dir.path("master.ready"),
        log,
        seen: BTreeSet::new(),
    }
}

/// Real uid of a process, from /proc.
pub fn uid_of(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// argv[0] of a process, from /proc.
pub fn argv0_of(pid: i32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|&b| b == 0).next()?;
    Some(String::from_utf8_lossy(first).into_owned())
}

/// Connects to 127.0.0.1:`port` from 127.0.0.`2 + n % 250`: loops that open connections by
/// the tens of thousands would otherwise run one source address out of ephemeral ports
/// (each closed connection holds one in TIME_WAIT for a minute), and connect would fail
/// for a reason that has nothing to do with the master.
pub fn connect_from_spread(port: u16, n: u64) -> std::io::Result<TcpStream> {
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    // A port whose last connection from this address lingers in TIME_WAIT may be used again.
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)).into(), WAIT)?;
    Ok(socket.into())
}
