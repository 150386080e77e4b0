//! End-to-end tests of binary upgrades (`ringmaster upgrade`, SIGUSR2): the same pid serves
//! on under load with no connection lost, a busy session and the workers, daemons and events
//! carry on; a missing or failing binary is refused; a binary that cannot adopt the state
//! rolls back to the previous one.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;

fn conf(port: u16) -> String {
    format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=2\n}}\n\
         DAEMON {{\n  keeper cmd=\"{WORKER} --daemon-ready\"\n}}\n\
         EVENTS {{\n  checkpoint cmd=\"/bin/true\" period=30\n}}\n"
    )
}

fn client(dir: &TestDir, args: &[&str]) -> Output {
    Command::new(MASTER)
        .args(args)
        .arg("-S")
        .arg(dir.path("control.sock"))
        .args(["--timeout", "30"])
        .output()
        .expect("run the client")
}

fn both(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status(dir: &TestDir) -> serde_json::Value {
    let out = client(dir, &["status", "--json"]);
    assert!(out.status.success(), "{}", both(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// A copy of the master's binary, as a new build would be.
fn new_binary(dir: &TestDir, name: &str) -> String {
    let path = dir.path(name);
    std::fs::copy(MASTER, &path).expect("copy the binary");
    path.display().to_string()
}

fn script(dir: &TestDir, name: &str, body: &str) -> String {
    let path = dir.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

/// Clients connecting, reading the banner and leaving, until stopped: (ok, failed).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            while !s.load(Ordering::SeqCst) {
                let served = std::net::TcpStream::connect_timeout(&addr, WAIT)
                    .ok()
                    .and_then(|stream| {
                        stream.set_read_timeout(Some(WAIT)).ok()?;
                        Some(read_line(&stream))
                    })
                    .is_some_and(|banner| banner.contains("ready"));
                if served {
                    o.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.served(), self.failed.load(Ordering::SeqCst))
    }
}

fn master_field<'a>(doc: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    &doc["master"][key]
}

#[test]
fn an_upgrade_under_load_loses_no_connection_and_everything_carries_on() {
    let dir = TestDir::new("upgrade-load");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port)).start();
    m.wait_children(3);
    let before = status(&dir);
    let daemon = before["daemons"][0]["pid"].clone();
    assert!(daemon.is_number(), "{before}");
    let event_next = before["events"][0]["next_unix"].clone();
    let (mut busy, _) = connect(port);
    let busy_pid: i32 = ask(&mut busy, "PID").parse().expect("a pid");

    let load = Load::start(port);
    assert!(wait_until(WAIT, || load.served() > 20));
    let new = new_binary(&dir, "ringmaster-new");
    let out = client(&dir, &["upgrade", "--binary", &new]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("upgraded"));
    // A second one, by signal: the binary at the path the master now runs from.
    let served = load.served();
    assert!(wait_until(WAIT, || load.served() > served + 20));
    m.signal(nix::sys::signal::Signal::SIGUSR2);
    assert!(wait_until(WAIT, || {
        master_field(&status(&dir), "upgrades") == 2
    }));
    let served = load.served();
    assert!(wait_until(WAIT, || load.served() > served + 20));
    let (served, failed) = load.finish();
    assert_eq!(
        failed, 0,
        "connections lost during the upgrades ({served} served)"
    );

    let after = status(&dir);
    assert_eq!(after["pid"], m.pid, "{after}");
    assert_eq!(master_field(&after, "binary"), new.as_str(), "{after}");
    assert_eq!(after["daemons"][0]["pid"], daemon, "{after}");
    // The event keeps its schedule (a new one would run at once), to the second.
    let next = after["events"][0]["next_unix"].as_i64().expect("next run");
    assert!(
        (next - event_next.as_i64().unwrap_or(0)).abs() <= 1,
        "{after}"
    );
    // The busy client's worker serves on, and is still the master's child: its exit is
    // reaped by the new image.
    assert_eq!(ask(&mut busy, "PID"), busy_pid.to_string());
    assert_eq!(ppid_of(busy_pid), Some(m.pid));
    kill(busy_pid, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_until(WAIT, || state_of(busy_pid).is_none()));
    assert!(m.wait_log(&format!("pid={busy_pid}")));
    assert!(m.wait_log("upgrade: adopted"));
    m.stop();
}

#[test]
fn a_missing_or_failing_binary_is_refused_and_the_master_runs_on() {
    let dir = TestDir::new("upgrade-refused");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port)).start();
    m.wait_children(3);
    let out = client(
        &dir,
        &[
            "upgrade",
            "--binary",
            &dir.path("absent").display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));

    // A build that crashes at start fails its self-test before anything is handed over.
    let crashing = script(&dir, "crashing", "exit 1");
    let out = client(&dir, &["upgrade", "--binary", &crashing]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("self-test"));

    // The new image would read the configuration on disk: it must be the running one.
    m.rewrite_conf(&conf(free_port()));
    let out = client(&dir, &["upgrade", "--binary", &new_binary(&dir, "new")]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reload first"));

    let doc = status(&dir);
    assert_eq!(doc["pid"], m.pid);
    assert_eq!(master_field(&doc, "upgrades"), 0);
    assert_eq!(master_field(&doc, "attempts"), 3);
    let (_, banner) = connect(port);
    assert!(banner.contains("ready"), "{banner}");
    m.stop();
}

#[test]
fn a_binary_that_cannot_adopt_the_state_rolls_back_to_the_previous_one() {
    let dir = TestDir::new("upgrade-rollback");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port)).start();
    m.wait_children(3);
    let (mut busy, _) = connect(port);
    let busy_pid = ask(&mut busy, "PID");
    // Passes the self-test, then refuses the state as a broken build would.
    let broken = script(
        &dir,
        "broken",
        &format!(
            "case \"$1\" in --check-upgrade) exec {MASTER} \"$@\";; esac\n\
             RINGMASTER_UPGRADE_TEST_REFUSE=1 exec {MASTER} \"$@\""
        ),
    );
    let load = Load::start(port);
    assert!(wait_until(WAIT, || load.served() > 20));
    let out = client(&dir, &["upgrade", "--binary", &broken]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused on purpose"),
        "{}",
        both(&out)
    );
    let served = load.served();
    assert!(wait_until(WAIT, || load.served() > served + 20));
    let (_, failed) = load.finish();
    assert_eq!(failed, 0);
    let doc = status(&dir);
    assert_eq!(doc["pid"], m.pid);
    assert_eq!(master_field(&doc, "binary"), MASTER);
    assert_eq!(master_field(&doc, "upgrades"), 0);
    assert_eq!(ask(&mut busy, "PID"), busy_pid);
    assert!(m.wait_log("rolling back to the previous binary"));
    assert!(Path::new(&broken).exists());
    m.stop();
}

/// Waits for a notification with the line `want`; returns every line seen up to it.
fn notified(socket: &std::os::unix::net::UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let mut buf = vec![0u8; 65536];
    let ok = wait_until(WAIT, || {
        let Ok(n) = socket.recv(&mut buf) else {
            return false;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = text.lines().any(|l| l == want);
        seen.extend(text.lines().map(String::from));
        found
    });
    assert!(ok, "no {want}; seen {seen:?}");
}

#[test]
fn systemd_sees_reloading_then_ready_around_an_upgrade() {
    let dir = TestDir::new("upgrade-notify");
    let path = dir.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port))
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .start();
    let mut seen = Vec::new();
    notified(&socket, "READY=1", &mut seen);
    seen.clear();
    let out = client(&dir, &["upgrade"]);
    assert!(out.status.success(), "{}", both(&out));
    notified(&socket, "READY=1", &mut seen);
    let states: Vec<&String> = seen
        .iter()
        .filter(|l| *l == "READY=1" || *l == "RELOADING=1")
        .collect();
    assert_eq!(states, ["RELOADING=1", "READY=1"], "{seen:?}");
    m.stop();
}
