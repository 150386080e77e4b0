//! End-to-end tests of SIGHUP reloads: every service recycled, nothing refused or reset.

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

fn conf_one(name: &str, port: u16, args: &str, extra: &str) -> String {
    format!(
        "SERVICES {{\n  {name} cmd=\"{WORKER} {args}\" listen=\"127.0.0.1:{port}\" {extra}\n}}\n"
    )
}

#[test]
fn idle_pool_is_fully_replaced() {
    let dir = TestDir::new("recycle");
    let port = free_port();
    let mut m = Start::new(&dir, &conf_one("echo", port, "", "prefork=3")).start();
    let old = m.wait_children(3);
    m.signal(Signal::SIGHUP);
    let mut now = BTreeSet::new();
    assert!(
        wait_until(WAIT, || {
            now = m.children();
            now.len() == 3 && now.is_disjoint(&old)
        }),
        "old {old:?} now {now:?}\n{}",
        m.log_text()
    );
    assert!(!logged(&m.log_text(), "pool_throttled", &[]));
}

#[test]
fn a_new_setting_reaches_new_connections_and_busy_clients_finish() {
    let dir = TestDir::new("banner");
    let banner = dir.path("banner.txt");
    std::fs::write(&banner, "* OK first\n").unwrap();
    let port = free_port();
    let args = format!("--banner-file {}", banner.display());
    let mut m = Start::new(&dir, &conf_one("echo", port, &args, "prefork=2")).start();
    let (mut busy, first) = connect(port);
    assert_eq!(first, "* OK first");
    let busy_pid: i32 = ask(&mut busy, "PID").parse().unwrap();
    let old = m.wait_children(3);

    std::fs::write(&banner, "* OK second\n").unwrap();
    m.signal(Signal::SIGHUP);
    // These workers say when they are ready, so each old idle one serves until its
    // replacement is ready; once they are gone every new connection has the new setting.
    assert!(
        wait_until(WAIT, || m
            .children()
            .intersection(&old)
            .all(|p| *p == busy_pid)),
        "{}",
        m.log_text()
    );
    for _ in 0..5 {
        let (_s, b) = connect(port);
        assert_eq!(b, "* OK second");
    }
    // The open session keeps working across the reload, then its worker exits.
    assert_eq!(ask(&mut busy, "still here"), "still here");
    assert!(m.children().contains(&busy_pid));
    assert_eq!(ask(&mut busy, "QUIT"), "* BYE");
    assert!(wait_until(WAIT, || !m.children().contains(&busy_pid)));
}

#[test]
fn a_worker_ignoring_sighup_is_terminated_after_the_drain() {
    let dir = TestDir::new("drain");
    let port = free_port();
    let mut m = Start::new(&dir, &conf_one("echo", port, "--ignore-hup", "prefork=1"))
        .arg("--drain-timeout")
        .arg("1")
        .arg("--stop-timeout")
        .arg("1")
        .start();
    let old = m.wait_children(1);
    let pid = *old.iter().next().unwrap();
    // Once it has served a client it is surely up (and ignoring SIGHUP).
    let (stream, banner) = connect(port);
    assert_eq!(banner_pid(&banner), pid);
    drop(stream);
    m.signal(Signal::SIGHUP);
    assert!(
        wait_until(WAIT, || !m.children().contains(&pid)),
        "{}",
        m.log_text()
    );
    assert!(
        m.log_text()
            .contains(&format!("worker {pid} still running")),
        "{}",
        m.log_text()
    );
    m.wait_children(1);
}

#[test]
fn an_invalid_config_on_reload_keeps_the_old_one_running() {
    let dir = TestDir::new("badreload");
    let port = free_port();
    let good = conf_one("echo", port, "", "prefork=2");
    let mut m = Start::new(&dir, &good).start();
    let before = m.wait_children(2);
    m.rewrite_conf("SERVICES {\n  echo cmd=\"unterminated listen=\"1\n");
    m.signal(Signal::SIGHUP);
    assert!(m.wait_log("reload rejected"), "{}", m.log_text());
    assert!(
        m.log_text().contains("cyrus.conf:2:"),
        "file:line:col in the log:\n{}",
        m.log_text()
    );
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"));
    assert!(before.is_subset(&m.children()), "nothing was recycled");
    assert!(m.exited().is_none());
}

#[test]
fn reload_adds_removes_and_moves_services() {
    let dir = TestDir::new("reshape");
    let (a, b, c) = (free_port(), free_port(), free_port());
    let conf = format!(
        "SERVICES {{\n  alpha cmd=\"{WORKER}\" listen=\"127.0.0.1:{a}\" prefork=1\n  beta cmd=\"{WORKER}\" listen=\"127.0.0.1:{b}\" prefork=1\n}}\n"
    );
    let mut m = Start::new(&dir, &conf).start();
    m.wait_children(2);
    // alpha moves to port c, beta goes, gamma arrives on port b.
    let d = free_port();
    m.rewrite_conf(&format!(
        "SERVICES {{\n  alpha cmd=\"{WORKER}\" listen=\"127.0.0.1:{c}\" prefork=1\n  gamma cmd=\"{WORKER}\" listen=\"127.0.0.1:{d}\" prefork=1\n}}\n"
    ));
    m.signal(Signal::SIGHUP);
    assert!(
        wait_until(WAIT, || TcpStream::connect(("127.0.0.1", a)).is_err()),
        "old port closed"
    );
    assert!(
        wait_until(WAIT, || TcpStream::connect(("127.0.0.1", b)).is_err()),
        "removed service closed"
    );
    let (_s, banner) = connect(c);
    assert!(banner.contains("alpha"), "{banner}");
    let (_s, banner) = connect(d);
    assert!(banner.contains("gamma"), "{banner}");
    assert!(
        !logged(&m.log_text(), "worker_crashed", &[]),
        "old workers recycled, not crashed:\n{}",
        m.log_text()
    );
}

/// Clients connect, read the banner and close in a loop; returns (ok, failed) counts.
fn client_load(
    port: u16,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rounds = 0u32;
        while !stop.load(Ordering::Relaxed) && rounds < 200_000 {
            rounds += 1;
            let good = match connect_from_spread(port, u64::from(rounds)) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    read_line(&s).starts_with("* OK")
                }
                Err(_) => false,
            };
            if good {
                ok.fetch_add(1, Ordering::Relaxed);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

fn storm(worker_args: &str) {
    let dir = TestDir::new("storm");
    let port = free_port();
    let mut m = Start::new(&dir, &conf_one("echo", port, worker_args, "prefork=3")).start();
    m.wait_children(3);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| client_load(port, stop.clone(), ok.clone(), failed.clone()))
        .collect();
    // A SIGHUP every 10 ms for two seconds.
    for _ in 0..200 {
        m.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(10));
    }
    // And the load goes on after the last one, through the settling of the last reload.
    let served_at_last_hup = ok.load(Ordering::Relaxed);
    assert!(wait_until(WAIT, || ok.load(Ordering::Relaxed)
        > served_at_last_hup + 100));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("storm with [{worker_args}]: {ok} served, {failed} failed");
    assert!(ok > 100, "the load ran: {ok}");
    assert_eq!(
        failed,
        0,
        "no connection refused, reset or unanswered\n{}",
        m.log_text()
    );
    assert!(m.exited().is_none());
    assert!(
        !logged(&m.log_text(), "pool_throttled", &[]),
        "{}",
        m.log_text()
    );
}

#[test]
fn a_sighup_storm_under_load_loses_nothing_with_announcing_workers() {
    storm("");
}

#[test]
fn a_sighup_storm_under_load_loses_nothing_with_cyrus_style_slow_workers() {
    storm("--no-announce --start-delay-ms 20");
}

#[test]
fn sigquit_lets_clients_finish_and_refuses_new_ones() {
    let dir = TestDir::new("quit");
    let port = free_port();
    let mut m = Start::new(&dir, &conf_one("echo", port, "", "prefork=2")).start();
    let (mut busy, _) = connect(port);
    m.signal(Signal::SIGQUIT);
    assert!(wait_until(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_err()));
    assert_eq!(ask(&mut busy, "still"), "still");
    assert!(m.exited().is_none(), "waits for the busy client");
    assert_eq!(ask(&mut busy, "QUIT"), "* BYE");
    let status = m
        .wait_exit(WAIT)
        .expect("master exits after the last client");
    assert_eq!(status.code(), Some(0));
    m.child = None;
}

#[test]
fn sighup_during_startup_and_sigterm_during_reload_are_safe() {
    let dir = TestDir::new("hupstart");
    let port = free_port();
    let conf = format!(
        "START {{\n  slow cmd=\"{WORKER} --touch {} --exit\"\n}}\n{}",
        dir.path("s.log").display(),
        conf_one("echo", port, "--start-delay-ms 50", "prefork=4")
    );
    let mut m = Start::new(&dir, &conf).spawn();
    m.wait_signals_blocked();
    m.signal(Signal::SIGHUP);
    m.wait_ready();
    m.wait_children(4);
    m.signal(Signal::SIGHUP);
    m.signal(Signal::SIGTERM);
    let status = m.wait_exit(WAIT).expect("stops during a reload");
    assert_eq!(status.code(), Some(0));
    m.child = None;
}

#[test]
fn a_renamed_service_takes_over_the_socket_without_refusing() {
    let dir = TestDir::new("rename");
    let port = free_port();
    let mut m = Start::new(&dir, &conf_one("old", port, "", "prefork=2")).start();
    m.wait_children(2);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load = client_load(port, stop.clone(), ok.clone(), failed.clone());
    // The load must be under way before the reload, and still going after it.
    assert!(wait_until(WAIT, || ok.load(Ordering::Relaxed) > 0));
    m.rewrite_conf(&conf_one("renamed", port, "", "prefork=2"));
    m.signal(Signal::SIGHUP);
    let mut banner = String::new();
    assert!(wait_until(WAIT, || {
        banner = connect(port).1;
        banner.contains("renamed")
    }));
    let served_at_switch = ok.load(Ordering::Relaxed);
    assert!(wait_until(WAIT, || ok.load(Ordering::Relaxed) > served_at_switch + 10));
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{}", m.log_text());
}

#[test]
fn daemons_are_recycled_and_events_replaced_on_reload() {
    let dir = TestDir::new("daemonreload");
    let log = dir.path("events.log");
    let conf = |tag: &str| {
        format!(
            "DAEMON {{\n  keeper cmd=\"{WORKER} --daemon-ready\"\n}}\nEVENTS {{\n  {tag} cmd=\"{WORKER} --touch {} --exit --banner {tag}\" period=60\n}}\n",
            log.display()
        )
    };
    let mut m = Start::new(&dir, &conf("first")).start();
    let before = m.wait_children(1);
    assert!(wait_until(WAIT, || read_to_string(&log).lines().count() == 1));
    m.rewrite_conf(&conf("second"));
    m.signal(Signal::SIGHUP);
    let mut now = before.clone();
    assert!(
        wait_until(WAIT, || {
            now = m.children();
            now.len() == 1 && now.is_disjoint(&before)
        }),
        "daemon restarted on the new configuration: {before:?} -> {now:?}\n{}",
        m.log_text()
    );
    // The new event runs at once (a new periodic event starts with a run).
    assert!(wait_until(WAIT, || read_to_string(&log).lines().count() == 2));
    assert!(read_to_string(&log)
        .lines()
        .nth(1)
        .unwrap_or("")
        .contains("second"));
}

#[test]
fn a_daemon_ignoring_a_reloads_sigterm_is_killed_and_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("daemonkill");
    // SIGTERM stays ignored across the exec: the daemon is deaf to it.
    let deaf = dir.path("deaf.sh");
    std::fs::write(&deaf, "#!/bin/sh\ntrap '' TERM\nexec sleep 600\n").expect("write script");
    std::fs::set_permissions(&deaf, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let conf = |tag: &str| format!("DAEMON {{\n  deaf cmd=\"{} {tag}\"\n}}\n", deaf.display());
    let mut m = Start::new(&dir, &conf("first"))
        .arg("--stop-timeout")
        .arg("1")
        .start();
    let before = m.wait_children(1);
    m.rewrite_conf(&conf("second"));
    m.signal(Signal::SIGHUP);
    let mut now = before.clone();
    assert!(
        wait_until(WAIT, || {
            now = m.children();
            now.len() == 1 && now.is_disjoint(&before)
        }),
        "the deaf daemon was never replaced: {before:?} -> {now:?}\n{}",
        m.log_text()
    );
    assert!(
        logged(&m.log_text(), "daemon_killed", &["entry=deaf"]),
        "{}",
        m.log_text()
    );
    assert!(m.exited().is_none());
}
