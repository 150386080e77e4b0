//! Run mode: start-up in the order Cyrus's master uses, the loop, and a clean exit.

use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use ringmaster_core::{counted, LocalTime, Settings, Supervisor, EXIT_CONFIG};

use crate::cli::RunArgs;
use crate::cyrus_prom;
use crate::launch::{self, Launcher};
use crate::logging;
use crate::runtime::Runtime;
use crate::sys;

/// EX_OSERR, as Cyrus's master for pidfile trouble.
const EXIT_OSERR: i32 = 71;

/// Runs the master; returns the process exit status.
pub fn run(args: RunArgs) -> i32 {
    let args = &args;
    // While the lowest descriptor numbers are free: spawns stage a child's descriptors there.
    let kept_by_children = sys::spawn::reserve_descriptor_slots();
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
    info!("ringmaster {} (pid {})", crate::VERSION, std::process::id());
    match kept_by_children {
        None => warn!(
            "no descriptor slots could be reserved: every spawn copies the master's whole \
             descriptor table"
        ),
        // After an upgrade from an image without slots, its descriptors hold the low numbers.
        Some(first) if first > 64 => info!(
            "descriptor slots are high: each spawn copies the master's first {first} \
             descriptors (a cold restart brings them down)"
        ),
        Some(_) => {}
    }
    let code = run_logged(args, signals);
    info!("exiting with status {code}");
    code
}

/// Start-up in order, one step after the other, then the loop, then the clean-up.
fn run_logged(args: &RunArgs, signals: sys::signals::SignalFd) -> i32 {
    if let Err(err) = sys::signals::assert_single_threaded() {
        error!("{err}");
        return EXIT_OSERR;
    }
    sys::clock::init_timezone();
    // Before the configuration is loaded: children must not inherit the hand-over's names.
    if let Some(inherited) = crate::upgrade::Inherited::from_env() {
        return run_adopted(args, signals, &inherited);
    }
    let mut launcher = match load_configuration(args) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Detach only now, so that a broken configuration is reported on the terminal.
    let mut daemon = match detach(args) {
        Ok(d) => d,
        Err(code) => return code,
    };
    set_up_process(args, &mut launcher);
    // Before the pidfile: refused here, the master leaves no pidfile behind.
    let control = match crate::control::open_for_master(args.control.as_deref(), args.no_control) {
        Ok(c) => c,
        Err(err) => {
            error!("{err}: not starting");
            return fail_start(&mut daemon, EXIT_OSERR);
        }
    };
    let imapd = launcher.setup().imapd.clone();
    observe_setup(&imapd);
    let files = match MasterFiles::claim(args, &imapd) {
        Ok(f) => f,
        Err(code) => return fail_start(&mut daemon, code),
    };
    let config = launcher.setup().config.clone();
    log_starting(args, &config);
    let supervisor = Supervisor::new(config, settings(args, &imapd), local_clock);
    let on_ready = ready_callback(files.ready_file.clone(), daemon);
    let runtime = Runtime::new(supervisor, launcher, signals, args.backlog, on_ready);
    let runtime = match control {
        Some(listener) => runtime.and_then(|r| r.with_control(listener)),
        None => runtime,
    };
    let code = match runtime {
        Ok(mut runtime) => match observe(&mut runtime, args, &imapd) {
            Ok(()) => runtime.run(),
            Err(()) => EXIT_OSERR,
        },
        Err(err) => {
            error!("cannot set up the event loop: {err}");
            EXIT_OSERR
        }
    };
    files.release();
    code
}

/// The image an upgrade started (same pid): adopts the state the previous image handed
/// over instead of starting up; if it cannot, runs the previous binary again with it.
fn run_adopted(
    args: &RunArgs,
    signals: sys::signals::SignalFd,
    inherited: &crate::upgrade::Inherited,
) -> i32 {
    let fail = |why: &str| {
        inherited.roll_back(why);
        EXIT_OSERR
    };
    if let Some(why) = &inherited.failed {
        warn!("upgrade: rolled back, the new binary failed: {why}");
    }
    let state = match inherited.read() {
        Ok(s) => s,
        Err(why) => return fail(&why),
    };
    if inherited.test_refuse && inherited.failed.is_none() {
        return fail("refused on purpose (test hook)");
    }
    let Ok(launcher) = load_configuration(args) else {
        return fail("the configuration cannot be loaded");
    };
    if let Err(err) = sys::process::become_child_subreaper() {
        warn!("cannot become the reaper of escaped processes (PR_SET_CHILD_SUBREAPER): {err}");
    }
    let imapd = launcher.setup().imapd.clone();
    observe_setup(&imapd);
    let Ok(files) = MasterFiles::claim(args, &imapd) else {
        return fail("cannot take the pidfile");
    };
    let now = ringmaster_core::Now {
        mono: std::time::Instant::now(),
        unix: sys::clock::unix_now(),
    };
    let config = launcher.setup().config.clone();
    let settings = settings(args, &imapd);
    let (sup, actions) =
        match Supervisor::adopt(config, settings, local_clock, state.sup.clone(), now) {
            Ok(adopted) => adopted,
            Err(why) => return fail(&why.0),
        };
    let on_ready = ready_callback(files.ready_file.clone(), None);
    let mut runtime = match Runtime::new(sup, launcher, signals, args.backlog, on_ready) {
        Ok(r) => r,
        Err(err) => return fail(&format!("cannot set up the event loop: {err}")),
    };
    let master = match &inherited.failed {
        Some(why) => crate::upgrade::MasterInfo {
            attempts: state.master.attempts,
            last_error: Some(why.clone()),
            ..state.previous.clone()
        },
        None => state.master.clone(),
    };
    if let Err(why) = runtime.adopt(&state, actions, master) {
        return fail(&why);
    }
    info!(
        "upgrade: adopted {} workers and {} listeners (upgrade {} of pid {})",
        state.sup.workers.len(),
        state.listeners.len(),
        runtime.master_info().upgrades,
        std::process::id()
    );
    // Workers depend on this image now: a metrics endpoint it cannot bind is no reason to go.
    if observe(&mut runtime, args, &imapd).is_err() {
        warn!("upgrade: running without the metrics endpoint");
    }
    let code = runtime.run();
    files.release();
    code
}

/// Reads and validates the configuration; a failure is reported (also on the terminal when
/// the log goes elsewhere) and becomes the exit status.
fn load_configuration(args: &RunArgs) -> Result<Launcher, i32> {
    let sources = launch::sources(&args.paths, &args.service_path);
    let policy = launch::policy(args.user.as_deref(), args.group.as_deref());
    Launcher::load(sources, policy).map_err(|failure| {
        failure.log("");
        if !args.foreground && args.logfile.is_none() {
            for (_, text) in &failure.problems {
                eprintln!("{}", text.trim_end());
            }
        }
        if failure.unreadable {
            error!("cannot read the configuration: not starting");
        } else {
            error!("configuration is invalid: not starting");
        }
        EXIT_CONFIG
    })
}

/// `-d`: the parent waits for start-up's verdict; without `-D`, stdio leaves the terminal.
fn detach(args: &RunArgs) -> Result<Option<sys::daemonize::DaemonReady>, i32> {
    let daemon = if args.daemonize {
        match sys::daemonize::daemonize() {
            Ok(handle) => Some(handle),
            Err(err) => {
                error!("cannot daemonize: {err}");
                return Err(EXIT_OSERR);
            }
        }
    } else {
        None
    };
    if !args.foreground {
        if let Err(err) = sys::daemonize::detach_stdio(args.logfile.as_deref()) {
            warn!("cannot detach stdio: {err}");
        }
    }
    Ok(daemon)
}

/// The master process's own attributes: reaper of escaped processes, priority, fd limit.
fn set_up_process(args: &RunArgs, launcher: &mut Launcher) {
    // After daemonizing: the attribute is not inherited by fork.
    if let Err(err) = sys::process::become_child_subreaper() {
        warn!("cannot become the reaper of escaped processes (PR_SET_CHILD_SUBREAPER): {err}");
    }
    // The master keeps the priority it was started with unless asked; its children get the
    // original back either way.
    if let Some(nice) = args.master_nice {
        match sys::process::set_master_nice(nice) {
            Ok(original) => {
                info!("running at nice {nice}");
                launcher.set_child_nice(original);
            }
            Err(err) => warn!("cannot set the master's nice value to {nice}: {err}"),
        }
    }
    // Before any bind: descriptors for every listener and pipe.
    for line in crate::limits::fit(&launcher.setup().config) {
        warn!("{line}");
    }
}

/// Tells a waiting `-d` parent that start-up failed; returns the status to exit with.
fn fail_start(daemon: &mut Option<sys::daemonize::DaemonReady>, code: i32) -> i32 {
    if let Some(d) = daemon.take() {
        let _ = d.fail(code);
    }
    code
}

fn settings(args: &RunArgs, imapd: &ringmaster_core::ImapdConf) -> Settings {
    Settings {
        stop_timeout: args.stop_timeout,
        drain_timeout: args.drain_timeout,
        worker_env: vec![(
            ringmaster_proto::ENV_EXIT_NOTES.to_string(),
            "1".to_string(),
        )],
        bind_errors_fatal: imapd.master_bind_errors_fatal(),
        log_debug: tracing::enabled!(tracing::Level::DEBUG),
    }
}

fn log_starting(args: &RunArgs, config: &ringmaster_core::Config) {
    let down = config.unresolved.services.len()
        + config.unresolved.events.len()
        + config.unresolved.daemons.len();
    info!(
        "starting: {} START, {}, {}, {} from {}{}",
        config.start.len(),
        counted(config.services.len() as u64, "service"),
        counted(config.events.len() as u64, "event"),
        counted(config.daemons.len() as u64, "daemon"),
        args.paths.cyrus_conf.display(),
        match down {
            0 => String::new(),
            n => format!(" ({n} more entries down: program or user not found)"),
        }
    );
}

/// Called once start-up is complete: the ready file (only when every service listens), and
/// the parent of a daemonized master exits 0, even with services down (they are logged,
/// and retried): the master is running.
fn ready_callback(
    ready_file: Option<PathBuf>,
    mut daemon: Option<sys::daemonize::DaemonReady>,
) -> Box<dyn FnMut(bool)> {
    Box::new(move |all_listening: bool| {
        if let (Some(path), true) = (&ready_file, all_listening) {
            if let Err(err) = std::fs::write(path, format!("{}\n", std::process::id())) {
                warn!("cannot write ready file {}: {err}", path.display());
            }
        }
        if let Some(d) = daemon.take() {
            let _ = d.ready();
        }
    })
}

/// The pidfile (held locked while the master runs) and the ready file, removed on the way
/// out, by the normal path or, armed, by the panic hook.
struct MasterFiles {
    pidfile: Option<sys::pidfile::PidFile>,
    ready_file: Option<PathBuf>,
    exit_files: ExitFiles,
}

impl MasterFiles {
    fn claim(args: &RunArgs, imapd: &ringmaster_core::ImapdConf) -> Result<MasterFiles, i32> {
        let pidfile_path = args
            .pidfile
            .clone()
            .or_else(|| imapd.master_pid_file().map(PathBuf::from));
        let pidfile = match &pidfile_path {
            Some(path) => match sys::pidfile::PidFile::acquire(path) {
                Ok(p) => Some(p),
                Err(err) => {
                    error!("{err}");
                    return Err(EXIT_OSERR);
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
        // From here on, every way out that can run code removes what we created.
        let exit_files = ExitFiles::arm(pidfile.as_ref().and(pidfile_path), ready_file.clone());
        if let Some(path) = &ready_file {
            let _ = std::fs::remove_file(path);
        }
        Ok(MasterFiles {
            pidfile,
            ready_file,
            exit_files,
        })
    }

    fn release(self) {
        drop(self.exit_files);
        if let Some(path) = &self.ready_file {
            let _ = std::fs::remove_file(path);
        }
        if let Some(pidfile) = self.pidfile {
            if let Err(err) = pidfile.remove() {
                warn!("cannot remove the pidfile: {err}");
            }
        }
    }
}

/// The files the master created and must not leave behind (pidfile, ready file), for the
/// way out that skips the normal clean-up: a panic (the release build aborts right after the
/// hook). Disarmed when dropped, before the normal path removes them itself: once the pidfile
/// is gone and its lock released, the file may be the next master's.
struct ExitFiles;

/// Set once, read by the panic hook; the master has one thread, so no lock is contended.
static EXIT_FILES: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
static EXIT_FILES_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl ExitFiles {
    fn arm(pidfile: Option<PathBuf>, ready_file: Option<PathBuf>) -> ExitFiles {
        let files: Vec<PathBuf> = pidfile.into_iter().chain(ready_file).collect();
        EXIT_FILES_ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
        if EXIT_FILES.set(files).is_ok() {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Files first: the message may fail to print, the abort will not wait.
                remove_exit_files();
                previous(info);
            }));
        }
        ExitFiles
    }
}

impl Drop for ExitFiles {
    fn drop(&mut self) {
        EXIT_FILES_ARMED.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Unlinks the registered files; allocates nothing for paths of ordinary length (std
/// converts them on the stack).
fn remove_exit_files() {
    if !EXIT_FILES_ARMED.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    if let Some(files) = EXIT_FILES.get() {
        for path in files {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Syslog's ident and facility from imapd.conf, now that it is read.
fn observe_setup(imapd: &ringmaster_core::ImapdConf) {
    let env_prefix = std::env::var("CYRUS_SYSLOG_PREFIX").ok();
    let (ident, facility, warning) = logging::syslog_identity(
        env_prefix.as_deref(),
        imapd.syslog_prefix(),
        imapd.get("syslog_facility"),
    );
    logging::set_syslog_identity(&ident, facility);
    if let Some(warning) = warning {
        warn!("{warning}");
    }
}

/// The metrics endpoint (`--metrics-listen`; Err when it cannot be bound, logged) and Cyrus's
/// report file (`prometheus_enabled`), owned by the workers' default user.
fn observe(
    runtime: &mut Runtime,
    args: &RunArgs,
    imapd: &ringmaster_core::ImapdConf,
) -> Result<(), ()> {
    if let Some(settings) = cyrus_prom::Settings::from_imapd(imapd) {
        let policy = launch::policy(args.user.as_deref(), args.group.as_deref());
        let owner = launch::resolve_identity(&Default::default(), &policy, imapd)
            .ok()
            .flatten()
            .map(|c| (c.uid, c.gid));
        runtime.write_cyrus_report(cyrus_prom::CyrusReport::new(settings, owner));
    }
    match args.metrics_listen {
        Some(addr) => runtime
            .serve_metrics(addr)
            .map_err(|err| error!("cannot serve metrics on {addr}: {err}")),
        None => Ok(()),
    }
}

fn local_clock(unix: i64) -> LocalTime {
    sys::clock::local_time(unix).unwrap_or_else(|_| ringmaster_core::utc(unix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{in_forked_child, TempDir};
    use std::time::Duration;

    #[test]
    fn a_panic_removes_the_pidfile_and_the_ready_file_once_armed() {
        let dir = TempDir::new("panic-hook");
        let pid = dir.path().join("master.pid");
        let ready = dir.path().join("master.ready");
        let other = dir.path().join("other");
        for f in [&pid, &ready, &other] {
            std::fs::write(f, "1\n").unwrap();
        }
        // In a forked copy: the hook and the registered files are process-wide.
        let ok = in_forked_child(Duration::from_secs(10), || {
            // Silence the default hook's message (another test thread may hold stderr's lock).
            std::panic::set_hook(Box::new(|_| {}));
            let armed = ExitFiles::arm(Some(pid.clone()), Some(ready.clone()));
            let _ = std::panic::catch_unwind(|| panic!("boom"));
            let removed = !pid.exists() && !ready.exists() && other.exists();
            // Disarmed (the normal path), a panic leaves files alone.
            drop(armed);
            let _ = std::fs::write(&pid, "2\n");
            let _ = std::panic::catch_unwind(|| panic!("boom"));
            removed && pid.exists()
        });
        assert!(ok);
    }
}
