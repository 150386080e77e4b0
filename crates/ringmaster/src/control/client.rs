//! The client subcommands: `status [--json] [--ready]`, `reload [--dry-run] [--no-wait]`,
//! `stop [--graceful]` and `metrics`. Each connects to the master's control socket, sends one
//! request line and prints the answer; every wait is bounded by `--timeout`.
//!
//! Exit statuses: 0 success; 1 the answer is no (a rejected or partial reload, not ready, the
//! master still running at the timeout); 69 (EX_UNAVAILABLE) the master cannot be reached
//! or did not answer properly.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::proto::{parse_answer, request_line, Answer, Request};
use super::render;
use crate::cli::parse_seconds;

/// EX_UNAVAILABLE: no master to talk to, or no sense made of its answer.
pub const EXIT_UNAVAILABLE: i32 = 69;
/// The longest answer line read (a status of thousands of services fits many times over).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The master's control socket (default: /run/ringmaster/control.sock as root, else
    /// $XDG_RUNTIME_DIR/ringmaster/control.sock).
    #[arg(short = 'S', long = "control", value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Give up waiting for the master after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print the status as JSON (stable; see docs/control.md).
    #[arg(long, conflicts_with = "ready")]
    pub json: bool,
    /// Readiness probe: exit 0 when the master runs and every service that should listen
    /// does, else 1 with the reason.
    #[arg(long)]
    pub ready: bool,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Load and check the new configuration and print what a reload would do, without
    /// applying it.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the reload's result (the default).
    #[arg(long, conflicts_with = "no_wait")]
    pub wait: bool,
    /// Only ask for the reload; do not wait for its result.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Let workers finish their clients first (as SIGQUIT); else stop now (as SIGTERM).
    #[arg(long)]
    pub graceful: bool,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    pub control: ControlArgs,
}

/// A connection to the master with a deadline for everything said on it.
struct Session {
    reader: BufReader<UnixStream>,
    deadline: Instant,
    /// The request could not be sent: the master may have said why (a refusal) and closed.
    send_error: Option<String>,
}

impl Session {
    fn open(
        args: &ControlArgs,
        default_timeout: Duration,
        request: &Request,
    ) -> Result<Session, String> {
        let path = super::socket_path(args.control.as_deref()).ok_or(
            "no control socket: give one with -S (XDG_RUNTIME_DIR is not set)".to_string(),
        )?;
        let mut stream = UnixStream::connect(&path).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::PermissionDenied => {
                    " (only root and the master's user may use the control socket)"
                }
                _ => " (is the master running, with this -S?)",
            };
            format!("cannot reach the master at {}: {e}{hint}", path.display())
        })?;
        let deadline = Instant::now() + args.timeout.unwrap_or(default_timeout);
        let send_error = stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .and_then(|()| stream.write_all(request_line(request).as_bytes()))
            .err()
            .map(|e| format!("cannot send the request: {e}"));
        Ok(Session {
            reader: BufReader::new(stream),
            deadline,
            send_error,
        })
    }

    /// The next answer line; Ok(None) when the master closed the connection.
    fn next(&mut self) -> Result<Option<Answer>, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for the master".into());
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        match (&mut self.reader).take(MAX_ANSWER).read_line(&mut line) {
            Ok(0) => match self.send_error.take() {
                Some(e) => Err(e),
                None => Ok(None),
            },
            Ok(_) => parse_answer(line.trim_end()).map(Some),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err("timed out waiting for the master".into())
            }
            Err(e) => Err(format!("reading the answer: {e}")),
        }
    }

    /// The next answer, which must come and must be ok.
    fn expect_ok(&mut self) -> Result<Answer, Failure> {
        match self.next() {
            Ok(Some(a)) if a.ok => Ok(a),
            Ok(Some(a)) => Err(Failure::No(Box::new(a))),
            Ok(None) => Err(Failure::Unavailable(
                "the master closed the connection".into(),
            )),
            Err(e) => Err(Failure::Unavailable(e)),
        }
    }
}

enum Failure {
    /// The master said no.
    No(Box<Answer>),
    Unavailable(String),
}

fn fail(failure: Failure) -> i32 {
    match failure {
        Failure::No(a) => {
            eprintln!(
                "ringmaster: {}",
                a.error.as_deref().unwrap_or("the master refused")
            );
            for e in &a.errors {
                eprintln!("{e}");
            }
            1
        }
        Failure::Unavailable(e) => {
            eprintln!("ringmaster: {e}");
            EXIT_UNAVAILABLE
        }
    }
}

fn open(args: &ControlArgs, default: Duration, request: &Request) -> Result<Session, Failure> {
    Session::open(args, default, request).map_err(Failure::Unavailable)
}

/// `ringmaster status`.
pub fn status(args: &StatusArgs) -> i32 {
    let answer = match open(&args.control, Duration::from_secs(10), &Request::Status)
        .and_then(|mut s| s.expect_ok())
    {
        Ok(a) => a,
        Err(Failure::Unavailable(e)) if args.ready => {
            println!("not ready: {e}");
            return 1;
        }
        Err(f) => return fail(f),
    };
    let Some(doc) = answer.status else {
        return fail(Failure::Unavailable("the answer holds no status".into()));
    };
    if args.json {
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(Failure::Unavailable(e.to_string())),
        }
        return 0;
    }
    if args.ready {
        let down: Vec<&str> = doc
            .services
            .iter()
            .filter(|s| !s.listening)
            .map(|s| s.name.as_str())
            .collect();
        return if doc.phase == "running" && doc.all_listening {
            println!("ready: every service listens");
            0
        } else if doc.phase != "running" {
            println!("not ready: the master is {}", doc.phase);
            1
        } else {
            println!("not ready: not listening: {}", down.join(", "));
            1
        };
    }
    crate::sys::clock::init_timezone();
    print!("{}", render::status_table(&doc, &local_time));
    0
}

/// `YYYY-MM-DD HH:MM:SS` in local time.
fn local_time(unix: i64) -> String {
    match crate::sys::clock::local_time(unix) {
        Ok(t) => format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// `ringmaster reload`.
pub fn reload(args: &ReloadArgs) -> i32 {
    let request = Request::Reload {
        dry_run: args.dry_run,
        wait: !args.no_wait,
    };
    let mut session = match open(&args.control, Duration::from_secs(60), &request) {
        Ok(s) => s,
        Err(f) => return fail(f),
    };
    let first = match session.expect_ok() {
        Ok(a) => a,
        Err(f) => return fail(f),
    };
    if let Some(plan) = &first.plan {
        print!("{}", render::plan(plan));
        return 0;
    }
    let Some(id) = first.reload_requested else {
        return fail(Failure::Unavailable(
            "the answer says nothing of the reload".into(),
        ));
    };
    if args.no_wait {
        println!("reload #{id} requested");
        return 0;
    }
    let answer = match session.next() {
        Ok(Some(a)) => a,
        Ok(None) => {
            return fail(Failure::Unavailable(format!(
                "the master closed the connection before reload #{id} finished"
            )))
        }
        Err(e) => return fail(Failure::Unavailable(format!("reload #{id}: {e}"))),
    };
    let Some(report) = &answer.reload else {
        return fail(Failure::No(Box::new(answer)));
    };
    println!("reload #{}: {}", report.id, render::report_summary(report));
    for e in report.errors.iter().chain(&report.bind_errors) {
        println!("{e}");
    }
    if answer.ok {
        0
    } else {
        1
    }
}

/// `ringmaster stop`: asks, then waits until the master has exited.
pub fn stop(args: &StopArgs) -> i32 {
    let request = Request::Stop {
        graceful: args.graceful,
    };
    // A graceful stop lets clients finish: the master's drain is 300 s unless told otherwise.
    let default = Duration::from_secs(if args.graceful { 330 } else { 60 });
    let mut session = match open(&args.control, default, &request) {
        Ok(s) => s,
        Err(f) => return fail(f),
    };
    let pid = match session.expect_ok() {
        Ok(a) => a.pid,
        Err(f) => return fail(f),
    };
    // The master holds the connection open until it exits.
    loop {
        match session.next() {
            Ok(None) => break,
            Ok(Some(_)) => continue,
            Err(e) => {
                eprintln!("ringmaster: the master is still running: {e}");
                return 1;
            }
        }
    }
    // The socket closes a moment before the process is gone: wait for that too.
    if let Some(pid) = pid {
        while process_alive(pid) {
            if Instant::now() >= session.deadline {
                eprintln!("ringmaster: the master (pid {pid}) is still running");
                return 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("master (pid {pid}) stopped");
    } else {
        println!("master stopped");
    }
    0
}

/// Running, not a zombie (a stopped master whose parent has not reaped it yet is gone).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// `ringmaster metrics`.
pub fn metrics(args: &MetricsArgs) -> i32 {
    match open(&args.control, Duration::from_secs(10), &Request::Metrics)
        .and_then(|mut s| s.expect_ok())
    {
        Ok(a) => {
            print!("{}", a.metrics.unwrap_or_default());
            0
        }
        Err(f) => fail(f),
    }
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// The new binary (default: the path the running master was started from).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

/// The master's pid and what it says of its binary.
fn master_of(args: &ControlArgs) -> Result<(u32, crate::upgrade::MasterInfo), Failure> {
    let answer = open(args, Duration::from_secs(5), &Request::Status)?.expect_ok()?;
    let doc = answer
        .status
        .ok_or_else(|| Failure::Unavailable("the answer holds no status".into()))?;
    Ok((doc.pid, doc.master.unwrap_or_default()))
}

/// `ringmaster upgrade`: asks for the upgrade, then waits until the master (the same pid)
/// answers again and says how it went.
pub fn upgrade(args: &UpgradeArgs) -> i32 {
    let (pid, before) = match master_of(&args.control) {
        Ok(m) => m,
        Err(f) => return fail(f),
    };
    // The master resolves a relative path from its own directory, not ours.
    let binary = match args.binary.as_deref().map(std::path::absolute).transpose() {
        Ok(b) => b,
        Err(e) => return fail(Failure::Unavailable(format!("--binary: {e}"))),
    };
    let request = Request::Upgrade { binary };
    let mut session = match open(&args.control, Duration::from_secs(60), &request) {
        Ok(s) => s,
        Err(f) => return fail(f),
    };
    // Refused: said at once. Else the answer may be lost in the exec; the status says.
    if let Ok(Some(answer)) = session.next() {
        if !answer.ok {
            return fail(Failure::No(Box::new(answer)));
        }
    }
    let deadline = Instant::now() + args.control.timeout.unwrap_or(Duration::from_secs(60));
    loop {
        if let Ok((now_pid, now)) = master_of(&args.control) {
            if now.attempts > before.attempts {
                return upgrade_outcome(pid, now_pid, &before, &now);
            }
        }
        if Instant::now() >= deadline {
            return fail(Failure::Unavailable(
                "timed out waiting for the upgraded master to answer".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn upgrade_outcome(
    pid: u32,
    now_pid: u32,
    before: &crate::upgrade::MasterInfo,
    now: &crate::upgrade::MasterInfo,
) -> i32 {
    if now_pid != pid {
        eprintln!("ringmaster: the master's pid changed from {pid} to {now_pid}");
        return 1;
    }
    if now.upgrades > before.upgrades {
        println!(
            "upgraded: pid {pid} runs {} ({}), upgrade {}",
            now.binary.display(),
            now.version,
            now.upgrades
        );
        0
    } else {
        eprintln!(
            "ringmaster: the upgrade failed, pid {pid} runs {} ({}) on: {}",
            now.binary.display(),
            now.version,
            now.last_error.as_deref().unwrap_or("no reason given")
        );
        1
    }
}
