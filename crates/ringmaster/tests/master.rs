//! End-to-end tests of the master: the real binary, real workers, real sockets on loopback.
//! Scenarios follow upstream Cyrus's own master tests (Cassandane's tiny-tests/Master).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

fn service_conf(name: &str, port: u16, extra: &str) -> String {
    format!("SERVICES {{\n  {name} cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" {extra}\n}}\n")
}

#[test]
fn prefork_is_reached_and_held() {
    let dir = TestDir::new("prefork");
    let port = free_port();
    let mut m = Start::new(&dir, &service_conf("echo", port, "prefork=3")).start();
    let first = m.wait_children(3);
    let (mut stream, banner) = connect(port);
    assert!(banner.starts_with("* OK"), "{banner}");
    assert!(first.contains(&banner_pid(&banner)));
    // The busy worker is replaced so that three stay ready.
    m.wait_children(4);
    assert_eq!(ask(&mut stream, "hello"), "hello");
    drop(stream);
    assert_eq!(m.stop().map(|s| s.code()), Some(Some(0)));
}

#[test]
fn spawns_on_demand_and_serves_each_client() {
    let dir = TestDir::new("ondemand");
    let port = free_port();
    let mut m = Start::new(&dir, &service_conf("echo", port, "prefork=0")).start();
    assert!(m.children().is_empty());
    let (mut a, banner_a) = connect(port);
    let (mut b, banner_b) = connect(port);
    assert_ne!(banner_pid(&banner_a), banner_pid(&banner_b));
    assert_eq!(ask(&mut a, "ENV"), "CYRUS_SERVICE=echo CYRUS_ID=0");
    assert_eq!(ask(&mut b, "one"), "one");
    m.stop();
}

#[test]
fn maxchild_is_never_exceeded_under_concurrent_load() {
    let dir = TestDir::new("maxchild");
    let port = free_port();
    let mut m = Start::new(&dir, &service_conf("echo", port, "prefork=0 maxchild=3")).start();
    // Eight clients connect at once and hold their connections.
    let clients: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    m.wait_children(3);
    let mut most = 0;
    for _ in 0..40 {
        most = most.max(m.children().len());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(most, 3, "never above maxchild");
    // As the served clients leave, the waiting ones are served, still three at a time.
    let mut served = 0;
    for mut c in clients {
        c.set_read_timeout(Some(WAIT)).unwrap();
        let banner = read_line(&c);
        assert!(banner.starts_with("* OK"), "banner {banner:?}");
        let _ = c.write_all(b"QUIT\r\n");
        served += 1;
        assert!(m.children().len() <= 3);
    }
    assert_eq!(served, 8);
    m.stop();
}

#[test]
fn maxforkrate_spreads_forks_out() {
    let dir = TestDir::new("forkrate");
    let port = free_port();
    let mut m = Start::new(
        &dir,
        &service_conf("echo", port, "prefork=12 maxforkrate=4"),
    )
    .start();
    // In the first moments at most a second's worth of forks exists...
    let early = m.children().len();
    assert!(early <= 8, "{early} forks at once despite maxforkrate=4");
    // ...and the pool still fills up.
    m.wait_children(12);
    m.stop();
}

#[test]
fn babysit_keeps_one_worker_alive() {
    let dir = TestDir::new("babysit");
    let port = free_port();
    let mut m = Start::new(&dir, &service_conf("echo", port, "babysit=1")).start();
    m.kill_child_and_wait_for_replacement();
    m.stop();
}

#[test]
fn crashing_service_is_throttled_and_refuses() {
    let dir = TestDir::new("throttle");
    let port = free_port();
    let good = free_port();
    let conf = format!(
        "SERVICES {{\n  bad cmd=\"{WORKER} --crash-at-start\" listen=\"127.0.0.1:{port}\" prefork=1\n  good cmd=\"{WORKER}\" listen=\"127.0.0.1:{good}\" prefork=1\n}}\n"
    );
    let m = Start::new(&dir, &conf).start();
    assert!(
        m.wait_logged("pool_throttled", &["service=bad"]),
        "{}",
        m.log_text()
    );
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(
        refused.is_err(),
        "a throttled service refuses connections instead of leaving them hanging"
    );
    // Other services are untouched.
    let (_s, banner) = connect(good);
    assert!(banner.starts_with("* OK"));
}

#[test]
fn unix_udp_and_ipv6_listeners() {
    let dir = TestDir::new("families");
    let sock = dir.path("echo.sock");
    let udp = free_port();
    let v6 = free_port();
    let conf = format!(
        "SERVICES {{\n  unixecho cmd=\"{WORKER}\" listen=\"{}\"\n  udpecho cmd=\"{WORKER}\" listen=\"127.0.0.1:{udp}\" proto=udp prefork=1\n  sixecho cmd=\"{WORKER}\" listen=\"[::1]:{v6}\" proto=tcp6\n}}\n",
        sock.display()
    );
    let mut m = Start::new(&dir, &conf).start();
    let unix = UnixStream::connect(&sock).expect("unix connect");
    unix.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&unix), &mut line).unwrap();
    assert!(line.contains("unixecho"), "{line}");

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 512];
    let answered = wait_until(WAIT, || {
        let _ = client.send_to(b"ping\n", ("127.0.0.1", udp));
        client.recv(&mut buf).is_ok()
    });
    assert!(answered, "udp service answered");

    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !skip_unless(ipv6, "an IPv6 loopback (::1), for the IPv6 half") {
        let (_s, banner) = connect_addr(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6)));
        assert!(banner.contains("sixecho"), "{banner}");
    }
    m.stop();
}

#[test]
fn start_commands_run_in_order_before_services() {
    let dir = TestDir::new("start");
    let log = dir.path("start.log");
    let port = free_port();
    let conf = format!(
        "START {{\n  first cmd=\"{WORKER} --touch {log} --exit\"\n  second cmd=\"{WORKER} --touch {log} --exit\"\n}}\nSERVICES {{\n  echo cmd=\"{WORKER} --touch {log}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n",
        log = log.display()
    );
    let mut m = Start::new(&dir, &conf).start();
    m.wait_children(1);
    assert!(wait_until(WAIT, || read_to_string(&log).lines().count() == 3));
    let text = read_to_string(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("service=-"),
        "START gets no CYRUS_SERVICE: {}",
        lines[0]
    );
    assert!(lines[2].contains("service=echo id=0"), "{}", lines[2]);
    m.stop();
}

#[test]
fn failing_start_command_stops_startup() {
    let dir = TestDir::new("startfail");
    let log = dir.path("start.log");
    let conf = format!(
        "START {{\n  bad cmd=\"{WORKER} --crash-at-start\"\n  never cmd=\"{WORKER} --touch {} --exit\"\n}}\n",
        log.display()
    );
    let mut m = Start::new(&dir, &conf).spawn();
    let status = m.wait_exit(WAIT).expect("master exits");
    assert_eq!(status.code(), Some(1));
    assert!(!log.exists(), "the second START never runs");
    assert!(!m.ready.exists());
}

#[test]
fn missing_start_executable_exits_78() {
    // A missing service program only takes its service down (tests/isolation.rs); START
    // prepares what everything else needs, so a missing START program stops start-up.
    let dir = TestDir::new("noexe");
    let conf = "START {\n  x cmd=\"/usr/bin/no-such-exe\"\n}\n";
    let mut m = Start::new(&dir, conf).spawn();
    let status = m.wait_exit(WAIT).expect("master exits");
    assert_eq!(status.code(), Some(78));
    assert!(
        m.log_text().contains("cannot find executable"),
        "{}",
        m.log_text()
    );
}

#[test]
fn periodic_event_fires_at_start() {
    let dir = TestDir::new("event");
    let log = dir.path("event.log");
    let conf = format!(
        "EVENTS {{\n  tick cmd=\"{WORKER} --touch {} --exit\" period=1\n}}\n",
        log.display()
    );
    let m = Start::new(&dir, &conf).start();
    assert!(wait_until(WAIT, || read_to_string(&log).lines().count() == 1));
    drop(m);
}

#[test]
fn daemon_is_restarted_when_it_dies() {
    let dir = TestDir::new("daemon");
    let conf = format!("DAEMON {{\n  keeper cmd=\"{WORKER} --daemon-ready\"\n}}\n");
    let mut m = Start::new(&dir, &conf).start();
    m.kill_child_and_wait_for_replacement();
    m.stop();
}

#[test]
fn wait_daemon_gates_services() {
    let dir = TestDir::new("waitdaemon");
    let port = free_port();
    let conf = format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\nDAEMON {{\n  gate cmd=\"{WORKER} --daemon-ready\" wait=y\n}}\n"
    );
    let mut m = Start::new(&dir, &conf).start();
    m.wait_children(2);
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"));
    m.stop();
}

#[test]
fn pidfile_is_locked_against_a_second_master() {
    let dir = TestDir::new("pidlock");
    let port = free_port();
    let conf = service_conf("echo", port, "prefork=1");
    let mut first = Start::new(&dir, &conf).start();
    let pid_text = read_to_string(&first.pidfile);
    assert_eq!(pid_text.trim(), first.pid.to_string());
    let dir2 = TestDir::new("pidlock2");
    let mut second = Start::new(&dir2, &service_conf("echo", free_port(), ""))
        .pidfile(&first.pidfile)
        .spawn();
    let status = second.wait_exit(WAIT).expect("second master exits");
    assert_ne!(status.code(), Some(0));
    assert!(
        second.log_text().contains("already"),
        "{}",
        second.log_text()
    );
    first.stop();
    assert!(!first.pidfile.exists(), "pidfile removed at exit");
    assert!(!first.ready.exists(), "ready file removed at exit");
}

#[test]
fn stop_kills_a_worker_that_ignores_sigterm() {
    let port = free_port();
    let conf = format!(
        "SERVICES {{\n  stubborn cmd=\"{WORKER} --ignore-term\" listen=\"127.0.0.1:{port}\" prefork=2\n}}\n"
    );
    let dir = TestDir::new("ignoreterm2");
    let mut m = Start::new(&dir, &conf)
        .arg("--stop-timeout")
        .arg("1")
        .start();
    let kids = m.wait_children(2);
    m.signal(Signal::SIGTERM);
    let status = m
        .wait_exit(WAIT)
        .expect("master exits despite the stubborn worker");
    assert_eq!(status.code(), Some(0));
    for pid in kids {
        assert!(wait_until(WAIT, || state_of(pid).is_none()
            || state_of(pid) == Some('Z')));
    }
}

#[test]
fn sigterm_at_random_moments_of_startup_leaves_nothing_behind() {
    let dir = TestDir::new("termstorm");
    let port = free_port();
    let marker = format!("marker-{}-{port}", std::process::id());
    let conf = format!(
        "START {{\n  prep cmd=\"{WORKER} --touch {log} --exit --banner {marker}\"\n}}\nSERVICES {{\n  echo cmd=\"{WORKER} --banner {marker}\" listen=\"127.0.0.1:{port}\" prefork=10\n}}\nDAEMON {{\n  d cmd=\"{WORKER} --daemon-ready --banner {marker}\"\n}}\n",
        log = dir.path("start.log").display()
    );
    for round in 0..50u64 {
        let mut m = Start::new(&dir, &conf)
            .arg("--stop-timeout")
            .arg("2")
            .spawn();
        // Spread the signal over start-up: from before the first fork to after the prefork.
        std::thread::sleep(Duration::from_micros((round * 7919) % 20_000));
        m.signal(Signal::SIGTERM);
        let status = m.wait_exit(WAIT);
        assert!(
            status.is_some(),
            "round {round}: master did not exit; log:\n{}",
            m.log_text()
        );
        assert!(
            wait_until(WAIT, || processes_with(&marker).is_empty()),
            "round {round}: left behind {:?}",
            processes_with(&marker)
        );
        m.child = None;
    }
}

#[test]
fn sigterm_twice_and_under_client_load() {
    let dir = TestDir::new("termload");
    let port = free_port();
    let mut m = Start::new(&dir, &service_conf("echo", port, "prefork=4")).start();
    m.wait_children(4);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 100_000 {
                    if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let _ = read_line(&s);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    m.signal(Signal::SIGTERM);
    m.signal(Signal::SIGTERM);
    let status = m.wait_exit(WAIT);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let _ = t.join();
    }
    assert!(
        status.is_some(),
        "master stopped under load; log:\n{}",
        m.log_text()
    );
    m.child = None;
}

#[test]
fn daemonize_returns_once_ready_and_the_daemon_stops_cleanly() {
    let dir = TestDir::new("daemonize");
    let port = free_port();
    std::fs::write(
        dir.path("cyrus.conf"),
        service_conf("echo", port, "prefork=1"),
    )
    .unwrap();
    std::fs::write(dir.path("imapd.conf"), "").unwrap();
    let pidfile = dir.path("master.pid");
    let ready = dir.path("master.ready");
    let mut cmd = std::process::Command::new(MASTER);
    cmd.arg("-d")
        .arg("-M")
        .arg(dir.path("cyrus.conf"))
        .arg("-C")
        .arg(dir.path("imapd.conf"))
        .arg("-p")
        .arg(&pidfile)
        .arg("-r")
        .arg(&ready)
        .arg("-L")
        .arg(dir.path("master.log"));
    if is_root() {
        cmd.arg("-u").arg("nobody");
    }
    let status = cmd.status().expect("run ringmaster -d");
    assert!(status.success());
    // The parent returns only once the daemon is ready.
    assert!(
        ready.exists(),
        "{}",
        read_to_string(&dir.path("master.log"))
    );
    let daemon: i32 = read_to_string(&pidfile)
        .trim()
        .parse()
        .expect("pid in pidfile");
    assert_ne!(
        ppid_of(daemon),
        Some(std::process::id() as i32),
        "detached from us"
    );
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"));
    let workers = children_of(daemon);
    kill(daemon, Signal::SIGTERM);
    assert!(
        wait_until(WAIT, || matches!(state_of(daemon), None | Some('Z'))),
        "daemon stopped"
    );
    assert!(!pidfile.exists() && !ready.exists());
    for pid in workers {
        assert!(wait_until(WAIT, || state_of(pid).is_none()
            || state_of(pid) == Some('Z')));
    }
}

#[test]
fn two_services_on_one_port_the_first_wins_and_the_master_runs_on() {
    let dir = TestDir::new("dupport");
    let port = free_port();
    let conf = format!(
        "SERVICES {{\n  first cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\"\n  second cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\"\n}}\n"
    );
    // The second is down (and retried), so the ready file waits: wait for start-up instead.
    let m = Start::new(&dir, &conf).spawn();
    assert!(m.wait_log("ready for work"), "{}", m.log_text());
    assert!(!m.ready.exists(), "no ready file while a service is down");
    assert!(
        logged(&m.log_text(), "bind_failed", &["service=second"]),
        "{}",
        m.log_text()
    );
    for _ in 0..3 {
        let (_s, banner) = connect(port);
        assert!(banner.contains("first"), "{banner}");
    }
}

#[test]
fn a_symlinked_pidfile_is_refused() {
    let dir = TestDir::new("pidsymlink");
    let target = dir.path("elsewhere");
    std::fs::write(&target, "").unwrap();
    let link = dir.path("master.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut m = Start::new(&dir, &service_conf("echo", free_port(), "")).spawn();
    let status = m.wait_exit(WAIT).expect("master exits");
    assert_eq!(status.code(), Some(71));
    assert!(m.log_text().contains("symlink"), "{}", m.log_text());
    assert_eq!(
        read_to_string(&target),
        "",
        "nothing written through the link"
    );
    m.child = None;
}

#[test]
fn every_worker_is_reaped_at_once() {
    // Cassandane's reap_rate: a hundred one-connection workers, none left a zombie.
    let dir = TestDir::new("reap");
    let port = free_port();
    let mut m = Start::new(
        &dir,
        &format!("SERVICES {{\n  echo cmd=\"{WORKER} -U 1\" listen=\"127.0.0.1:{port}\"\n}}\n"),
    )
    .start();
    for _ in 0..100 {
        let (mut s, _) = connect(port);
        let _ = ask(&mut s, "QUIT");
    }
    let master = m.pid;
    let zombies = || {
        all_pids()
            .into_iter()
            .filter(|p| ppid_of(*p) == Some(master) && state_of(*p) == Some('Z'))
            .count()
    };
    assert!(wait_until(WAIT, || zombies() == 0 && m.children().len() <= 1));
}
