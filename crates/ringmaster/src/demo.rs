//! `ringmaster demo`: a built-in configuration (an echo service on loopback) run in the
//! foreground, so a new user sees ringmaster work in one command.

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

/// Runs the demo; returns the exit status.
pub fn run(args: &DemoArgs) -> i32 {
    let worker = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(DEMO_WORKER),
        Err(err) => {
            eprintln!("ringmaster demo: cannot find my own executable: {err}");
            return 1;
        }
    };
    if !worker.exists() {
        eprintln!(
            "ringmaster demo: {} is missing; build it with `cargo build --release`",
            worker.display()
        );
        return 1;
    }
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
         \x20 reload:   edit {conf} and run: kill -HUP {pid}\n\
         \x20 stop:     Ctrl-C, or kill {pid}\n",
        dir.display(),
        port = args.port,
        conf = conf.display(),
    );
    match Cli::try_parse_from(argv) {
        Ok(cli) => crate::run::run(cli.run),
        Err(err) => {
            eprintln!("ringmaster demo: {err}");
            1
        }
    }
}
