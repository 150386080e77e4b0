//! End-to-end tests of the control socket and its client subcommands: `status` (table,
//! `--json`, `--ready`), `reload` (rejected, applied, `--dry-run`), `stop`, the peer check,
//! and a slow client that must not hold up others.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn conf(port: u16, extra: &str) -> String {
    format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=2\n{extra}}}\n\
         EVENTS {{\n  checkpoint cmd=\"/bin/true\" period=30\n}}\n"
    )
}

/// Runs `ringmaster <args> -S <dir>/control.sock` to completion.
fn client(dir: &TestDir, args: &[&str]) -> Output {
    client_cmd(dir, args)
        .args(["--timeout", "20"])
        .output()
        .expect("run the client")
}

fn client_cmd(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = Command::new(MASTER);
    cmd.args(args).arg("-S").arg(dir.path("control.sock"));
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn both(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn status_shows_the_table_and_stable_json_on_a_0600_socket() {
    let dir = TestDir::new("ctl-status");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port, "")).start();
    m.wait_children(2);
    let mode = std::fs::metadata(dir.path("control.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = client(&dir, &["status"]);
    assert!(out.status.success(), "{}", both(&out));
    let table = stdout(&out);
    assert!(
        table.contains(&format!("master pid {}: running", m.pid)),
        "{table}"
    );
    assert!(table.contains("SERVICE"), "{table}");
    assert!(
        table.contains(&format!("echo       127.0.0.1:{port}")),
        "{table}"
    );
    assert!(table.contains("checkpoint"), "{table}");
    assert!(table.lines().all(|l| l.len() <= 80), "{table}");

    let out = client(&dir, &["status", "--json"]);
    assert!(out.status.success(), "{}", both(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["pid"], m.pid);
    assert_eq!(doc["phase"], "running");
    assert_eq!(doc["all_listening"], true);
    let echo = &doc["services"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["listen"], format!("127.0.0.1:{port}"));
    assert_eq!(echo["listening"], true);
    let workers = &echo["workers"];
    let total: u64 = ["ready", "busy", "starting"]
        .iter()
        .map(|k| workers[k].as_u64().expect(k))
        .sum();
    assert_eq!(total, 2, "{doc}");
    assert!(echo["forks"].as_u64().unwrap() >= 2);
    assert_eq!(echo["crashes"], 0);
    assert_eq!(doc["events"][0]["name"], "checkpoint");
    assert!(doc["events"][0]["next_unix"].as_i64().unwrap() > doc["now_unix"].as_i64().unwrap());
    assert!(doc["reloads"]["last"].is_null());
    m.stop();
}

#[test]
fn ready_probe_fails_while_a_service_cannot_bind_and_passes_once_it_listens() {
    let dir = TestDir::new("ctl-ready");
    let port = free_port();
    let blocker = TcpListener::bind(("127.0.0.1", port)).expect("hold the port");
    let mut m = Start::new(&dir, &conf(port, "")).spawn();
    let mut last = None;
    let down = wait_until(WAIT, || {
        let out = client(&dir, &["status", "--ready"]);
        let found = out.status.code() == Some(1) && stdout(&out).contains("not listening: echo");
        last = Some(out);
        found
    });
    assert!(down, "{}\n{}", both(last.as_ref().unwrap()), m.log_text());
    let out = client(&dir, &["status"]);
    assert!(stdout(&out).contains("bind error:"), "{}", both(&out));

    drop(blocker);
    let up = wait_until(WAIT, || {
        let out = client(&dir, &["status", "--ready"]);
        let ok = out.status.success();
        last = Some(out);
        ok
    });
    assert!(up, "{}\n{}", both(last.as_ref().unwrap()), m.log_text());
    assert!(stdout(last.as_ref().unwrap()).contains("ready"));
    m.stop();
}

#[test]
fn a_broken_edit_is_rejected_with_its_location_and_a_good_one_is_applied() {
    let dir = TestDir::new("ctl-reload");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port, "")).start();
    m.rewrite_conf(&conf(
        port,
        "  broken cmd=\"x\" listen=\"127.0.0.1:99999\"\n",
    ));
    let out = client(&dir, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("rejected"), "{text}");
    let conf_path = m.conf.display().to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{conf_path}:3:")) && l.contains("error")),
        "{text}"
    );
    // The master keeps serving the old configuration.
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"), "{banner}");
    assert!(m.exited().is_none());

    let port2 = free_port();
    let more = format!("  second cmd=\"{WORKER}\" listen=\"127.0.0.1:{port2}\" prefork=1\n");
    m.rewrite_conf(&conf(port, &more));
    let out = client(&dir, &["reload", "--wait"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).contains("applied"), "{}", both(&out));
    let (_s, banner) = connect(port2);
    assert!(banner.starts_with("* OK"), "{banner}");
    let out = client(&dir, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["reloads"]["rejected"], 1);
    assert_eq!(doc["reloads"]["applied"], 1);
    assert_eq!(doc["reloads"]["last"]["result"], "applied");
    assert!(m.log_text().contains("control: reload requested by uid"));
    m.stop();
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let dir = TestDir::new("ctl-dry");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port, "")).start();
    // The two echo workers, not the start-up run of the checkpoint event (/bin/true).
    let mut before = BTreeSet::new();
    let workers_only = wait_until(WAIT, || {
        before = m.children();
        before.len() == 2
            && before.iter().all(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(WORKER))
            })
    });
    assert!(workers_only, "children: {before:?}\n{}", m.log_text());
    let port2 = free_port();
    let more = format!("  second cmd=\"{WORKER}\" listen=\"127.0.0.1:{port2}\"\n");
    m.rewrite_conf(&conf(port, &more));
    let out = client(&dir, &["reload", "--dry-run"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("dry run"), "{text}");
    assert!(text.contains("service echo         kept"), "{text}");
    assert!(text.contains("2 workers to recycle"), "{text}");
    assert!(
        text.contains(&format!("service second       added on 127.0.0.1:{port2}")),
        "{text}"
    );
    // Moved down a line: a reload compares entries with their location, and reschedules it.
    assert!(text.contains("event   checkpoint   changed"), "{text}");
    // Nothing changed: the same workers, no new socket, no reload counted.
    assert_eq!(m.children(), before);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port2)).is_err());
    let doc: serde_json::Value =
        serde_json::from_slice(&client(&dir, &["status", "--json"]).stdout).expect("JSON");
    assert!(doc["reloads"]["last"].is_null(), "{doc}");
    // A broken file: the dry run prints the errors and fails.
    m.rewrite_conf("SERVICES {\n  echo cmd=\n");
    let out = client(&dir, &["reload", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(&format!("{}:", m.conf.display())), "{err}");
    assert!(err.contains("error"), "{err}");
    m.stop();
}

#[test]
fn an_unprivileged_user_is_refused_and_the_refusal_is_logged() {
    if skip_unless(is_root(), "root (to run the client as nobody)") {
        return;
    }
    let dir = TestDir::new("ctl-perm");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port, "")).start();
    let as_nobody = |dir: &TestDir| {
        client_cmd(dir, &["status"])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run the client as nobody")
    };
    // The socket's mode keeps nobody out before the master sees anything.
    let out = as_nobody(&dir);
    assert_eq!(out.status.code(), Some(69), "{}", both(&out));
    assert!(both(&out).contains("ermission denied"), "{}", both(&out));
    // Opened up by mistake, the master's own check (SO_PEERCRED) still refuses.
    let sock = dir.path("control.sock");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&dir);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(both(&out).contains("permission denied"), "{}", both(&out));
    assert!(
        m.wait_log("control socket: refused uid 65534"),
        "{}",
        m.log_text()
    );
    // Root still gets in.
    assert!(client(&dir, &["status"]).status.success());
    m.stop();
}

#[test]
fn a_silent_client_holds_up_no_one_and_is_dropped_after_its_time() {
    let dir = TestDir::new("ctl-slow");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port, "")).start();
    let sock = dir.path("control.sock");
    let silent = UnixStream::connect(&sock).expect("connect");
    let mut half = UnixStream::connect(&sock).expect("connect");
    half.write_all(b"{\"version\":1,").unwrap();
    for _ in 0..3 {
        let out = client_cmd(&dir, &["status"])
            .args(["--timeout", "3"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", both(&out));
    }
    // The silent one is told, then closed, once its 5 s are up.
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&silent).read_line(&mut line).unwrap();
    assert!(line.contains("timed out waiting for the request"), "{line}");
    let mut rest = String::new();
    assert_eq!(BufReader::new(&silent).read_line(&mut rest).unwrap(), 0);
    m.stop();
}

#[test]
fn stop_returns_once_the_master_has_exited() {
    let dir = TestDir::new("ctl-stop");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port, "")).start();
    m.wait_children(2);
    let out = client(&dir, &["stop"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).contains(&format!("master (pid {}) stopped", m.pid)));
    // Already gone (or a zombie for us to reap): no waiting here.
    assert!(m.exited().is_some(), "{}", m.log_text());
    assert!(
        !dir.path("control.sock").exists(),
        "the socket is removed at exit"
    );
    assert!(m.log_text().contains("control: stop requested by uid"));
    m.stop();
}

#[test]
fn a_reload_whose_new_socket_cannot_be_bound_exits_non_zero_with_the_bind_error() {
    let dir = TestDir::new("ctl-partial");
    let port = free_port();
    let mut m = Start::new(&dir, &conf(port, "")).start();
    let port2 = free_port();
    let _held = TcpListener::bind(("127.0.0.1", port2)).expect("hold the port");
    let more = format!("  second cmd=\"{WORKER}\" listen=\"127.0.0.1:{port2}\"\n");
    m.rewrite_conf(&conf(port, &more));
    let out = client(&dir, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("applied in part"), "{text}");
    assert!(
        text.contains(&format!("second on 127.0.0.1:{port2}")),
        "{text}"
    );
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"), "{banner}");
    m.stop();
}

#[test]
fn a_second_master_on_the_same_socket_is_refused_and_a_stale_one_is_replaced() {
    let dir = TestDir::new("ctl-second");
    let sock = dir.path("control.sock").display().to_string();
    let mut first = Start::new(&dir, &conf(free_port(), "")).start();
    let other = TestDir::new("ctl-second-b");
    let mut second = Start::new(&other, &conf(free_port(), ""))
        .arg("-S")
        .arg(&sock)
        .spawn();
    let status = second.wait_exit(WAIT).expect("the second master exits");
    assert_eq!(status.code(), Some(71), "{}", second.log_text());
    assert!(
        second.log_text().contains("another master is running"),
        "{}",
        second.log_text()
    );
    assert!(
        client(&dir, &["status"]).status.success(),
        "the first one still answers"
    );

    // Killed without its clean-up, the first leaves its socket file behind.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(first.wait_exit(WAIT).is_some());
    first.stop();
    assert!(dir.path("control.sock").exists());
    let third_dir = TestDir::new("ctl-second-c");
    let mut third = Start::new(&third_dir, &conf(free_port(), ""))
        .arg("-S")
        .arg(&sock)
        .start();
    let out = client(&dir, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["pid"], third.pid, "{}", both(&out));
    third.stop();
}
