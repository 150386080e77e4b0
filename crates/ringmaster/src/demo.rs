//! `ringmaster demo`: a built-in configuration (an echo service on loopback) run in the
//! foreground, so a new user sees ringmaster work in one command.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::{Cli, DemoArgs};

/// The demo worker's binary name; it is built alongside `ringmaster`.
pub const DEMO_WORKER: &str = "ringmaster-demo-worker";

/// The demo's cyrus.conf.
pub fn demo_config(worker: &str, port: u16, dir: &std::path::Path) -> String {
    format!(
        "# ringmaster demo: an echo service, kept at two ready workers.\n\
         SERVICES {{\n\
         \x20 echo cmd=\"{worker} -U 50\" listen=\"127.0.0.1:{port}\" prefork=2 maxchild=20\n\
         \x20 echounix cmd=\"{worker}\" listen=\"{sock}\" prefork=0 maxchild=5\n\
         }}\n\
         EVENTS {{\n\
         \x20 tick cmd=\"{worker} --touch {log} --exit\" period=1\n\
         }}\n",
        sock = dir.join("echo.sock").display(),
        log = dir.join("events.log").display(),
    )
}

/// Where the package installs the demo worker (`/usr/sbin` holds only the master).
pub const PACKAGED_WORKER_DIR: &str = "/usr/lib/ringmaster";

/// Where the demo looks for its worker, in order: beside the running binary (a cargo build,
/// or a copy of both), then where the package puts it.
pub fn worker_candidates(exe: &Path) -> Vec<PathBuf> {
    vec![
        exe.with_file_name(DEMO_WORKER),
        Path::new(PACKAGED_WORKER_DIR).join(DEMO_WORKER),
    ]
}

/// The first candidate that is an executable file, or a message saying where it looked and
/// what to do.
pub fn find_worker(exe: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates = worker_candidates(exe);
    let executable = |p: &PathBuf| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(found) = candidates.iter().find(|p| executable(p)) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect();
    Err(format!(
        "cannot find the demo worker {DEMO_WORKER}; looked in:\n{}\n\
         Build it beside ringmaster with `cargo build --release` (run target/release/ringmaster), \
         copy it next to this ringmaster, or install the ringmaster package, which puts it in \
         {PACKAGED_WORKER_DIR}/.",
        looked.join("\n")
    ))
}

/// Runs the demo; returns the exit status.
pub fn run(args: &DemoArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("ringmaster demo: cannot find my own executable: {err}");
            return 1;
        }
    };
    let worker = match find_worker(&exe) {
        Ok(worker) => worker,
        Err(message) => {
            eprintln!("ringmaster demo: {message}");
            return 1;
        }
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ringmaster-demo-{}", std::process::id()))
    });
    if let Err(err) = std::fs::create_dir_all(&dir) {
        eprintln!("ringmaster demo: cannot create {}: {err}", dir.display());
        return 1;
    }
    // Workers run as nobody when the demo runs as root: let them write their event log.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    let conf = dir.join("cyrus.conf");
    let text = demo_config(&worker.to_string_lossy(), args.port, &dir);
    if let Err(err) = std::fs::write(&conf, text) {
        eprintln!("ringmaster demo: cannot write {}: {err}", conf.display());
        return 1;
    }
    let pidfile = dir.join("ringmaster.pid");
    let control = dir.join("control.sock");
    let mut argv: Vec<String> = vec![
        "ringmaster".into(),
        "-D".into(),
        "-M".into(),
        conf.display().to_string(),
        "-C".into(),
        dir.join("imapd.conf").display().to_string(),
        "-p".into(),
        pidfile.display().to_string(),
        "-r".into(),
        dir.join("ready").display().to_string(),
        "-S".into(),
        control.display().to_string(),
        "--stop-timeout".into(),
        "2".into(),
        "--drain-timeout".into(),
        "30".into(),
    ];
    if let Err(err) = std::fs::write(
        dir.join("imapd.conf"),
        format!("configdirectory: {}\n", dir.display()),
    ) {
        eprintln!("ringmaster demo: cannot write imapd.conf: {err}");
        return 1;
    }
    if crate::sys::users::is_root() {
        // Workers never run as root unless told to: the demo's run as nobody.
        argv.extend(["-u".into(), "nobody".into()]);
    }
    let pid = std::process::id();
    eprintln!(
        "ringmaster demo (pid {pid}), files in {}\n\
         \x20 connect:  nc 127.0.0.1 {port}   (type lines, they echo back; QUIT ends)\n\
         \x20 status:   ringmaster status -S {control}\n\
         \x20 reload:   edit {conf} and run: ringmaster reload -S {control}   (or kill -HUP {pid})\n\
         \x20 stop:     Ctrl-C, or ringmaster stop -S {control}\n",
        dir.display(),
        port = args.port,
        conf = conf.display(),
        control = control.display(),
    );
    match Cli::try_parse_from(argv) {
        Ok(cli) => crate::run::run(cli.run),
        Err(err) => {
            eprintln!("ringmaster demo: {err}");
            1
        }
    }
}
