//! The demo worker: a small line-echo service built on ringmaster-service.
//!
//! Run by a master (ringmaster or Cyrus's) as `cmd=`. It greets each client with a banner that
//! carries its pid, then answers lines: `PID`, `ENV`, `SLEEP <ms>`, `QUIT`; anything else is
//! echoed. Flags make it misbehave on purpose for tests and benchmarks, after Cassandane's
//! `lemming.c`: slow start, crash at start, ignore signals, touch a file and exit.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringmaster_core::EXIT_CONFIG;
use ringmaster_service::{
    announce_daemon_ready, OnHangup, OnTerminate, Options, SockaddrStorage, Stop, Stream, Worker,
};

#[derive(Parser, Debug)]
#[command(
    name = "ringmaster-demo-worker",
    about = "A line-echo worker for tests and benchmarks"
)]
struct Args {
    /// Greeting line sent on connect (default: "* OK ringmaster demo <service> pid <pid> ready").
    #[arg(long)]
    banner: Option<String>,
    /// Read the greeting from this file at start (first line); wins over --banner.
    #[arg(long, value_name = "PATH")]
    banner_file: Option<PathBuf>,
    /// Connections served before exiting 0; 0 means no limit (Cyrus -U).
    #[arg(short = 'U', default_value_t = ringmaster_service::DEFAULT_MAX_USES)]
    max_uses: u32,
    /// Sleep this long before accepting (a slow-starting worker).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    start_delay_ms: u64,
    /// Do not send AVAILABLE at start (how Cyrus's own services behave).
    #[arg(long)]
    no_announce: bool,
    /// Exit with status 1 at once (or die of SIGSEGV with --crash-signal).
    #[arg(long)]
    crash_at_start: bool,
    /// With --crash-at-start: die of SIGSEGV instead of exiting 1.
    #[arg(long)]
    crash_signal: bool,
    /// Ignore SIGTERM.
    #[arg(long)]
    ignore_term: bool,
    /// Ignore SIGHUP.
    #[arg(long)]
    ignore_hup: bool,
    /// A DAEMON entry: write "ok\r\n" on fd 3, then run until killed.
    #[arg(long)]
    daemon_ready: bool,
    /// Append a line with pid, CYRUS_SERVICE, CYRUS_ID and argv to PATH at start.
    #[arg(long, value_name = "PATH")]
    touch: Option<PathBuf>,
    /// Exit 0 right after --touch (START and EVENTS entries).
    #[arg(long)]
    exit: bool,
    /// Cyrus's alternate imapd.conf; accepted and ignored.
    #[arg(short = 'C', value_name = "PATH")]
    config: Option<PathBuf>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "-".into())
}

fn touch(path: &PathBuf) -> io::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let line = format!(
        "pid={} service={} id={} argv={}\n",
        std::process::id(),
        env(ringmaster_proto::ENV_SERVICE),
        env(ringmaster_proto::ENV_ID),
        argv.join(" ")
    );
    // One write of one line, so concurrent workers do not interleave.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

fn crash_with_segv() -> ! {
    use nix::sys::signal::{raise, signal, SigHandler, Signal};
    // SAFETY: SIG_DFL runs no code of ours; std's SIGSEGV handler would otherwise swallow a
    // raised (not faulting) SIGSEGV.
    let _ = unsafe { signal(Signal::SIGSEGV, SigHandler::SigDfl) };
    let _ = raise(Signal::SIGSEGV);
    std::process::exit(1)
}

/// The answer to one command line, or None to hang up.
fn answer(line: &str, worker: &Worker) -> Option<String> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    Some(match verb.as_str() {
        "QUIT" => return None,
        "PID" => format!("{}", worker.pid()),
        "ENV" => format!(
            "CYRUS_SERVICE={} CYRUS_ID={}",
            worker.service(),
            worker.id()
        ),
        "SLEEP" => {
            let ms = words
                .next()
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms.min(600_000)));
            format!("OK slept {ms}")
        }
        _ => line.to_string(),
    })
}

fn converse(stream: &mut Stream, banner: &str, worker: &Worker) -> io::Result<()> {
    stream.write_all(format!("{banner}\r\n").as_bytes())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        match answer(line.trim_end_matches(['\r', '\n']), worker) {
            Some(reply) => stream.write_all(format!("{reply}\r\n").as_bytes())?,
            None => return stream.write_all(b"* BYE\r\n"),
        }
    }
}

/// The first line a client reads: --banner-file's first line, --banner, or the default.
fn banner(args: &Args, worker: &Worker) -> String {
    match (&args.banner_file, &args.banner) {
        (Some(path), _) => match std::fs::read_to_string(path) {
            Ok(text) => text.lines().next().unwrap_or("").to_string(),
            Err(e) => {
                eprintln!("cannot read banner file {}: {e}", path.display());
                worker.exit(EXIT_CONFIG);
            }
        },
        (None, Some(b)) => b.clone(),
        (None, None) => format!(
            "* OK ringmaster demo {} pid {} ready",
            worker.service(),
            worker.pid()
        ),
    }
}

fn options(args: &Args) -> Options {
    Options {
        announce: !args.no_announce,
        max_uses: args.max_uses,
        on_hangup: if args.ignore_hup {
            OnHangup::Ignore
        } else {
            OnHangup::Recycle
        },
        on_terminate: if args.ignore_term {
            OnTerminate::Ignore
        } else {
            OnTerminate::Exit
        },
    }
}

fn main() {
    let args = Args::parse();
    if args.crash_at_start {
        if args.crash_signal {
            crash_with_segv();
        }
        std::process::exit(1);
    }
    if let Some(path) = &args.touch {
        if let Err(e) = touch(path) {
            eprintln!("cannot append to {}: {e}", path.display());
            std::process::exit(1);
        }
        if args.exit {
            std::process::exit(0);
        }
    }
    if args.daemon_ready {
        if let Err(e) = announce_daemon_ready() {
            eprintln!("cannot announce readiness: {e}");
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let worker = Worker::from_env_or_exit();
    if args.start_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(args.start_delay_ms));
    }
    let banner = banner(&args, &worker);
    let options = options(&args);
    let datagram = match worker.is_datagram() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot inspect the listener on fd 4: {e}");
            worker.exit(ringmaster_service::EXIT_OS_ERROR);
        }
    };
    if datagram {
        let served = worker.serve_datagrams(options, |data: &[u8], _from: &SockaddrStorage| {
            let text = String::from_utf8_lossy(data);
            let reply = answer(text.trim_end_matches(['\r', '\n']), &worker)
                .unwrap_or_else(|| "* BYE".into());
            Some(format!("{reply}\r\n").into_bytes())
        });
        match served {
            Ok(stop) => worker.exit(stop.exit_code()),
            Err(e) => {
                eprintln!("datagram loop failed: {e}");
                worker.exit(ringmaster_service::EXIT_OS_ERROR)
            }
        }
    }
    let served = worker.serve(options, |stream| converse(stream, &banner, &worker));
    match served {
        Ok(stop @ Stop::ListenerClosed) => {
            eprintln!(
                "{}[{}]: listener shut down by the master (reload or pause); exiting",
                worker.service(),
                worker.pid()
            );
            worker.exit(stop.exit_code())
        }
        Ok(stop) => worker.exit(stop.exit_code()),
        Err(e) => {
            eprintln!("accept loop failed: {e}");
            worker.exit(ringmaster_service::EXIT_OS_ERROR)
        }
    }
}
