//! What the package ships: man pages and completions generated from the clap definition,
//! the version line, the demo's worker lookup, and the demo worker's clean exit when a reload
//! shuts its listener down.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use nix::sys::signal::Signal;

/// Runs `ringmaster generate-assets` into `dir`.
fn generate(dir: &TestDir) {
    let out = Command::new(MASTER)
        .arg("generate-assets")
        .arg(&dir.0)
        .output()
        .expect("run generate-assets");
    assert!(
        out.status.success(),
        "generate-assets failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A flag as roff writes it (`-` is `\-`).
fn roff(flag: &str) -> String {
    flag.replace('-', "\\-")
}

/// Every short and long flag of `cmd` (not the subcommands') appears in `page`.
fn assert_flags_in(cmd: &clap::Command, page: &str, name: &str) {
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            let flag = roff(&format!("--{long}"));
            assert!(page.contains(&flag), "{name} lacks {flag}");
        }
        if let Some(short) = arg.get_short() {
            let flag = roff(&format!("-{short}"));
            assert!(page.contains(&flag), "{name} lacks {flag}");
        }
    }
}

#[test]
fn man_pages_name_every_flag_signal_and_exit_status() {
    let dir = TestDir::new("man");
    generate(&dir);
    let cli = ringmaster::assets::documented_command();
    let master = fs::read_to_string(dir.path("man/ringmaster.8")).expect("ringmaster.8");
    assert_flags_in(&cli, &master, "ringmaster.8");
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ringmaster-{}.8", sub.get_name());
        let page = fs::read_to_string(dir.path(&format!("man/{name}"))).expect(&name);
        assert_flags_in(sub, &page, &name);
        assert!(master.contains(&format!("ringmaster\\-{}", sub.get_name())));
    }
    for needle in ["SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT", "EXIT STATUS"] {
        assert!(master.contains(needle), "ringmaster.8 lacks {needle}");
    }
    for status in ["0", "1", "69", "71", "78"] {
        assert!(
            master.contains(&format!(".B {status}\n")),
            "ringmaster.8 lacks exit status {status}"
        );
    }
    assert!(!master.contains("generate\\-assets"), "a hidden command");
    // Viewable with `man -l`, where man is installed (CI installs it).
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path("man/ringmaster.8"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output();
    if let Ok(out) = rendered {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("EXIT STATUS"),
            "{text}"
        );
    }
    let conf = fs::read_to_string(dir.path("man/ringmaster-cyrus.conf.5")).expect("conf page");
    for key in [
        "user=", "group=", "cron=", "listen=", "prefork=", "babysit=",
    ] {
        assert!(conf.contains(key), "ringmaster-cyrus.conf.5 lacks {key}");
    }
}

#[test]
fn completions_generate_for_bash_zsh_and_fish() {
    let dir = TestDir::new("completions");
    generate(&dir);
    for (file, shell) in [
        ("ringmaster.bash", "bash"),
        ("_ringmaster", "zsh"),
        ("ringmaster.fish", "fish"),
    ] {
        let path = dir.path(&format!("completions/{file}"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        for needle in ["drain-timeout", "check", "demo"] {
            assert!(text.contains(needle), "{file} lacks {needle}");
        }
        assert!(
            !text.contains("generate-assets"),
            "{file} offers a hidden command"
        );
        // The shell itself checks the syntax, where it is installed (bash always is).
        if let Ok(status) = Command::new(shell).arg("-n").arg(&path).status() {
            assert!(status.success(), "{shell} -n {file} failed");
        }
    }
}

#[test]
fn version_names_the_git_revision_and_the_master_logs_it() {
    let out = Command::new(MASTER).arg("--version").output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let expected = format!("ringmaster {} (git ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected) && line.ends_with(')'), "{line}");
    assert_eq!(line, format!("ringmaster {}", ringmaster::VERSION));

    let dir = TestDir::new("version");
    let conf = format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=127.0.0.1:{} prefork=0\n}}\n",
        free_port()
    );
    let mut master = Start::new(&dir, &conf).start();
    assert!(
        master.log_text().contains(ringmaster::VERSION),
        "{}",
        master.log_text()
    );
    master.stop();
}

/// Runs `<copy of ringmaster> demo` in `dir`; the caller stops it.
fn spawn_demo(program: &Path, dir: &TestDir, port: u16) -> std::process::Child {
    Command::new(program)
        .args(["demo", "--port", &port.to_string(), "--dir"])
        .arg(dir.path("demo"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path("demo.log")).unwrap())
        .spawn()
        .expect("spawn demo")
}

/// Waits until the demo echoes, then stops it by pid; returns the worker its config names.
fn demo_runs_and_stops(program: &Path, dir: &TestDir) -> String {
    let port = free_port();
    let mut demo = spawn_demo(program, dir, port);
    let up = wait_until(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let conf = fs::read_to_string(dir.path("demo/cyrus.conf")).unwrap_or_default();
    kill(demo.id() as i32, Signal::SIGTERM);
    let stopped = wait_until(WAIT, || demo.try_wait().ok().flatten().is_some());
    if !stopped {
        let _ = demo.kill();
        let _ = demo.wait();
    }
    let log = read_to_string(&dir.path("demo.log"));
    assert!(up && stopped, "demo did not serve and stop:\n{log}");
    conf
}

#[test]
fn demo_finds_its_worker_beside_the_binary() {
    let dir = TestDir::new("demo-beside");
    let bin = dir.path("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(MASTER, bin.join("ringmaster")).unwrap();
    fs::copy(WORKER, bin.join("ringmaster-demo-worker")).unwrap();
    let conf = demo_runs_and_stops(&bin.join("ringmaster"), &dir);
    let beside = bin.join("ringmaster-demo-worker").display().to_string();
    assert!(conf.contains(&beside), "{conf}");
}

#[test]
fn demo_without_a_worker_beside_it_uses_the_packaged_one_or_says_what_to_do() {
    let dir = TestDir::new("demo-alone");
    let bin = dir.path("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(MASTER, bin.join("ringmaster")).unwrap();
    let program = bin.join("ringmaster");
    let packaged = Path::new(ringmaster::demo::PACKAGED_WORKER_DIR).join("ringmaster-demo-worker");
    if packaged.exists() {
        // The package is installed (CI installs it before the tests): the demo runs with it.
        let conf = demo_runs_and_stops(&program, &dir);
        assert!(conf.contains(&packaged.display().to_string()), "{conf}");
        return;
    }
    let out = Command::new(&program)
        .args(["demo", "--port", &free_port().to_string(), "--dir"])
        .arg(dir.path("demo"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&bin.join("ringmaster-demo-worker").display().to_string()));
    assert!(err.contains(&packaged.display().to_string()), "{err}");
    assert!(err.contains("cargo build --release"), "{err}");
}

#[test]
fn demo_worker_leaves_cleanly_when_a_reload_shuts_its_listener() {
    let dir = TestDir::new("listener-closed");
    let (kept, gone) = (free_port(), free_port());
    let kept_line = format!("  kept cmd=\"{WORKER}\" listen=127.0.0.1:{kept} prefork=1\n");
    // Ignoring SIGHUP, the old worker is still in accept when its listener is shut down.
    let conf = format!(
        "SERVICES {{\n{kept_line}  gone cmd=\"{WORKER} --ignore-hup\" listen=127.0.0.1:{gone} prefork=1\n}}\n"
    );
    let mut master = Start::new(&dir, &conf).start();
    let (_client, banner) = connect(gone);
    drop(_client);
    let worker = banner_pid(&banner);
    master.rewrite_conf(&format!("SERVICES {{\n{kept_line}}}\n"));
    master.signal(Signal::SIGHUP);
    assert!(
        master.wait_log("listener shut down by the master"),
        "{}",
        master.log_text()
    );
    assert!(wait_until(WAIT, || state_of(worker).is_none_or(|s| s == 'Z')));
    let log = master.log_text();
    assert!(!log.contains("accept loop failed"), "{log}");
    master.stop();
}
