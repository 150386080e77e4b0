//! Run mode: start-up in the order Cyrus's master uses, the loop, and a clean exit.

use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::launch::{self, Launcher};
use crate::logging;
use crate::runtime::Runtime;
use crate::supervisor::schedule::LocalTime;
use crate::supervisor::{Settings, Supervisor, EXIT_CONFIG};
use crate::sys;

/// EX_OSERR, as Cyrus's master for pidfile trouble.
const EXIT_OSERR: i32 = 71;

/// Runs the master; returns the process exit status.
pub fn run(args: RunArgs) -> i32 {
    let args = &args;
    // First of all: signals are blocked and read from a signalfd from here on, so a signal
    // during start-up is handled like any other, and nothing ever runs in a handler.
    let signals = match sys::signals::SignalFd::install() {
        Ok(s) => s,
        Err(err) => {
            eprintln!("ringmaster: cannot set up signal handling: {err}");
            return EXIT_OSERR;
        }
    };
    let target = match (&args.logfile, args.foreground) {
        (Some(path), _) => match logging::Target::file(path) {
            Ok(t) => t,
            Err(err) => {
                eprintln!("ringmaster: cannot open log file {}: {err}", path.display());
                return EXIT_OSERR;
            }
        },
        (None, true) => logging::Target::Stderr,
        (None, false) => match sys::syslog::Syslog::connect("ringmaster") {
            Some(s) => logging::Target::Syslog(s),
            None => logging::Target::Stderr,
        },
    };
    logging::init(target, args.verbose);
    let code = run_logged(args, signals);
    info!("exiting with status {code}");
    code
}

fn run_logged(args: &RunArgs, signals: sys::signals::SignalFd) -> i32 {
    if let Err(err) = sys::signals::assert_single_threaded() {
        error!("{err}");
        return EXIT_OSERR;
    }
    sys::clock::init_timezone();

    let sources = launch::sources(&args.paths, &args.service_path);
    let policy = launch::policy(args.user.as_deref(), args.group.as_deref());
    let mut launcher = match Launcher::load(sources, policy) {
        Ok(l) => l,
        Err(problems) => {
            for p in &problems {
                error!("{}", p.trim_end());
                if !args.foreground && args.logfile.is_none() {
                    eprintln!("{}", p.trim_end());
                }
            }
            error!("configuration is invalid: not starting");
            return EXIT_CONFIG;
        }
    };
    // Detach only now, so that a broken configuration is reported on the terminal.
    let mut daemon = None;
    if args.daemonize {
        match sys::daemonize::daemonize() {
            Ok(handle) => daemon = Some(handle),
            Err(err) => {
                error!("cannot daemonize: {err}");
                return EXIT_OSERR;
            }
        }
    }
    if !args.foreground {
        if let Err(err) = sys::daemonize::detach_stdio(args.logfile.as_deref()) {
            warn!("cannot detach stdio: {err}");
        }
    }
    // After daemonizing: the attribute is not inherited by fork.
    if let Err(err) = sys::process::become_child_subreaper() {
        warn!("cannot become the reaper of escaped processes (PR_SET_CHILD_SUBREAPER): {err}");
    }
    // The master outranks its workers, so forking a whole pool is not slowed by the pool.
    launcher.set_child_nice(sys::process::raise_master_priority());
    let imapd = launcher.setup().imapd.clone();
    let pidfile_path = args
        .pidfile
        .clone()
        .or_else(|| imapd.master_pid_file().map(PathBuf::from));
    let pidfile = match &pidfile_path {
        Some(path) => match sys::pidfile::PidFile::acquire(path) {
            Ok(p) => Some(p),
            Err(err) => {
                error!("{err}");
                if let Some(d) = daemon.take() {
                    let _ = d.fail(EXIT_OSERR);
                }
                return EXIT_OSERR;
            }
        },
        None => None,
    };
    let ready_file = args
        .ready_file
        .clone()
        .or_else(|| imapd.master_ready_file().map(PathBuf::from))
        .or_else(|| {
            imapd
                .configdirectory()
                .map(|d| Path::new(d).join("master.ready"))
        });
    if let Some(path) = &ready_file {
        let _ = std::fs::remove_file(path);
    }

    let settings = Settings {
        stop_timeout: args.stop_timeout,
        drain_timeout: args.drain_timeout,
        worker_env: vec![(
            ringmaster_proto::ENV_EXIT_NOTES.to_string(),
            "1".to_string(),
        )],
        bind_errors_fatal: imapd.master_bind_errors_fatal(),
    };
    let config = launcher.setup().config.clone();
    info!(
        "starting: {} START, {} services, {} events, {} daemons from {}{}",
        config.start.len(),
        config.services.len(),
        config.events.len(),
        config.daemons.len(),
        args.paths.cyrus_conf.display(),
        match config.unresolved.services.len()
            + config.unresolved.events.len()
            + config.unresolved.daemons.len()
        {
            0 => String::new(),
            n => format!(" ({n} more entries down: program or user not found)"),
        }
    );
    let supervisor = Supervisor::new(config, settings, local_clock);
    let ready_for_closure = ready_file.clone();
    let on_ready = Box::new(move |all_listening: bool| {
        if let (Some(path), true) = (&ready_for_closure, all_listening) {
            if let Err(err) = std::fs::write(path, format!("{}\n", std::process::id())) {
                warn!("cannot write ready file {}: {err}", path.display());
            }
        }
        // The parent of a daemonized master exits 0 once start-up is complete, even with
        // services down (they are logged, and retried): the master is running.
        if let Some(d) = daemon.take() {
            let _ = d.ready();
        }
    });
    let runtime = match Runtime::new(supervisor, launcher, signals, args.backlog, on_ready) {
        Ok(r) => r,
        Err(err) => {
            error!("cannot set up the event loop: {err}");
            return EXIT_OSERR;
        }
    };
    let code = runtime.run();
    if let Some(path) = &ready_file {
        let _ = std::fs::remove_file(path);
    }
    if let Some(pidfile) = pidfile {
        if let Err(err) = pidfile.remove() {
            warn!("cannot remove the pidfile: {err}");
        }
    }
    code
}

fn local_clock(unix: i64) -> LocalTime {
    sys::clock::local_time(unix).unwrap_or_else(|_| crate::supervisor::schedule::utc(unix))
}
