//! Reload edits that keep a port: sockets follow addresses, not entries, so changing an
//! entry's `listen=` spelling, `proto=` or name never refuses a connection nor leaves the
//! service down.

mod common;

use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// `clients` threads connecting to 127.0.0.1:port and reading the banner (every entry here
/// greets with its step's tag), until `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failure: Arc<std::sync::Mutex<Option<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(std::sync::Mutex::new(None));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, first) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    first_failure.clone(),
                );
                std::thread::spawn(move || {
                    let mut rounds = 0u32;
                    while !stop.load(Ordering::Relaxed) && rounds < 500_000 {
                        rounds += 1;
                        let outcome = connect_from_spread(port, u64::from(rounds))
                            .map_err(|e| e.to_string())
                            .and_then(|s| {
                                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                                let banner = read_line(&s);
                                if banner.starts_with("step") {
                                    Ok(())
                                } else {
                                    Err(format!("banner {banner:?}"))
                                }
                            });
                        match outcome {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut f) = first.lock() {
                                    f.get_or_insert(e);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            first_failure,
            threads,
        }
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` further connections were served.
    fn wait_for_more(&self, more: u64) -> bool {
        let base = self.served();
        wait_until(WAIT, || self.served() >= base + more)
    }

    fn finish(self) -> (u64, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let first = self.first_failure.lock().ok().and_then(|f| f.clone());
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            first,
        )
    }
}

fn entry(name: &str, listen: &str, extra: &str, tag: &str) -> String {
    format!(
        "SERVICES {{\n  {name} cmd=\"{WORKER} --banner {tag}\" listen=\"{listen}\" prefork=2 {extra}\n}}\n"
    )
}

/// Waits until a new connection to 127.0.0.1:`port` is greeted with `tag`.
fn wait_for_banner(m: &Master, port: u16, tag: &str) {
    let mut banner = String::new();
    assert!(
        wait_until(WAIT, || {
            banner = TcpStream::connect(("127.0.0.1", port))
                .map(|s| {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    read_line(&s)
                })
                .unwrap_or_default();
            banner.contains(tag)
        }),
        "new connections never saw {tag}: last banner {banner:?}\n{}",
        m.log_text()
    );
}

/// Reloads onto `conf` and waits until new connections see `tag`.
fn reload_to(m: &mut Master, port: u16, conf: &str, tag: &str) {
    m.rewrite_conf(conf);
    m.signal(Signal::SIGHUP);
    wait_for_banner(m, port, tag);
}

#[test]
fn listen_and_proto_edits_that_keep_the_port_refuse_nothing() {
    let dir = TestDir::new("addredits");
    let port = free_port();
    let local = format!("127.0.0.1:{port}");
    let wildcard = port.to_string();
    let mut m = Start::new(&dir, &entry("imap", &local, "", "step0")).start();
    m.wait_children(2);
    let load = Load::start(port, 4);
    assert!(load.wait_for_more(20), "{}", m.log_text());
    let steps = [
        entry("imap", &wildcard, "", "step1"),
        entry("imap", &wildcard, "proto=tcp4", "step2"),
        entry("imap2", &wildcard, "proto=tcp4", "step3"),
        entry("imap2", &local, "", "step4"),
    ];
    for (i, conf) in steps.iter().enumerate() {
        reload_to(&mut m, port, conf, &format!("step{}", i + 1));
        assert!(load.wait_for_more(50), "{}", m.log_text());
    }
    let (ok, failed, first) = load.finish();
    let log = m.log_text();
    assert_eq!(failed, 0, "{ok} served; first failure: {first:?}\n{log}");
    assert!(!log.contains("stays down"), "{log}");
    assert!(!log.contains("Address already in use"), "{log}");
    // The service ends up serving on the address it was first given, with workers.
    let (_s, banner) = connect(port);
    assert!(banner.contains("step4"), "{banner}");
    m.stop();
}

#[test]
fn a_dual_stack_service_reloaded_as_tcp4_keeps_its_ipv4_socket() {
    if skip_unless(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "IPv6 on loopback",
    ) {
        return;
    }
    let dir = TestDir::new("dualtcp4");
    let port = free_port();
    let wildcard = port.to_string();
    let mut m = Start::new(&dir, &entry("imap", &wildcard, "", "step_dual")).start();
    let before = m.wait_children(4);
    let (v6, banner) = connect_addr(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    assert!(banner.contains("step_dual"), "{banner}");
    drop(v6);
    let load = Load::start(port, 2);
    assert!(load.wait_for_more(20), "{}", m.log_text());
    reload_to(
        &mut m,
        port,
        &entry("imap", &wildcard, "proto=tcp4", "step_four"),
        "step_four",
    );
    assert!(load.wait_for_more(50), "{}", m.log_text());
    let (ok, failed, first) = load.finish();
    assert_eq!(
        failed,
        0,
        "{ok} served; first failure: {first:?}\n{}",
        m.log_text()
    );
    // IPv4 is served by the new generation alone; the IPv6 socket went away with its family.
    let mut now = Default::default();
    assert!(
        wait_until(WAIT, || {
            now = m.children();
            now.len() >= 2 && now.is_disjoint(&before)
        }),
        "old workers {before:?} gone, new ones running: {now:?}\n{}",
        m.log_text()
    );
    assert!(
        wait_until(WAIT, || TcpStream::connect((Ipv6Addr::LOCALHOST, port))
            .is_err()),
        "[::1]:{port} still accepts after the change to tcp4"
    );
    m.stop();
}

#[test]
fn a_reload_whose_new_address_cannot_be_bound_keeps_the_old_one_serving() {
    let dir = TestDir::new("badbind");
    let port = free_port();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = busy.local_addr().expect("addr").port();
    let mut m = Start::new(
        &dir,
        &entry("imap", &format!("127.0.0.1:{port}"), "", "before"),
    )
    .start();
    let before = m.wait_children(2);
    m.rewrite_conf(&entry("imap", &format!("127.0.0.1:{taken}"), "", "after"));
    m.signal(Signal::SIGHUP);
    assert!(
        m.wait_logged("reload_kept_previous", &["service=imap"]),
        "{}",
        m.log_text()
    );
    let (_s, banner) = connect(port);
    assert!(banner.contains("before"), "{banner}");
    assert!(
        m.children().is_superset(&before),
        "the old workers were not recycled: {before:?}\n{}",
        m.log_text()
    );
    drop(busy);
    m.stop();
}

#[test]
fn a_busy_old_worker_is_not_told_to_exit_before_its_replacement_is_ready() {
    let dir = TestDir::new("heldbusy");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let one = |tag: &str| {
        format!("SERVICES {{\n  imap cmd=\"{WORKER} --banner {tag}\" listen=\"{listen}\" prefork=1\n}}\n")
    };
    let mut m = Start::new(&dir, &one("step_old")).start();
    m.wait_children(1);
    let (mut busy, banner) = connect(port);
    assert!(banner.contains("step_old"), "{banner}");
    let old_pid = ask(&mut busy, "PID");
    // The replacement takes seconds to start: a worker told to exit now would leave the
    // next client waiting for it.
    m.rewrite_conf(&one("step_new --start-delay-ms 3000"));
    m.signal(Signal::SIGHUP);
    assert!(m.wait_logged("reload_applying", &[]));
    assert_eq!(ask(&mut busy, "QUIT"), "* BYE");
    drop(busy);
    // The old worker finished its client and serves the next one at once.
    let (mut next, banner) = connect(port);
    assert!(
        banner.contains("step_old"),
        "the next client waited for the new worker: {banner}\n{}",
        m.log_text()
    );
    assert_eq!(ask(&mut next, "PID"), old_pid);
    drop(next);
    // Once the replacement is ready, the old worker goes.
    let old: i32 = old_pid.parse().expect("pid");
    assert!(
        wait_until(WAIT, || !m.children().contains(&old)),
        "{}",
        m.log_text()
    );
    let (_s, banner) = connect(port);
    assert!(banner.contains("step_new"), "{banner}");
    m.stop();
}

#[test]
fn on_demand_services_changed_together_go_on_forking() {
    // prefork=0: the listener is watched; two entries changed in one reload share their old
    // sockets with the new ones for a moment, and each new one must keep its own watch.
    let dir = TestDir::new("ondemand2");
    let (p1, p2) = (free_port(), free_port());
    let conf = |proto: &str, tag: &str| {
        format!(
            "SERVICES {{\n  one cmd=\"{WORKER} --banner step_{tag}1\" listen=\"127.0.0.1:{p1}\" prefork=0 {proto}\n  two cmd=\"{WORKER} --banner step_{tag}2\" listen=\"127.0.0.1:{p2}\" prefork=0 {proto}\n}}\n"
        )
    };
    let mut m = Start::new(&dir, &conf("", "a")).start();
    m.rewrite_conf(&conf("proto=tcp4", "b"));
    m.signal(Signal::SIGHUP);
    for (port, tag) in [(p1, "step_b1"), (p2, "step_b2")] {
        wait_for_banner(&m, port, tag);
    }
    assert!(
        !m.log_text().contains("cannot change the watch"),
        "{}",
        m.log_text()
    );
    m.stop();
}

#[test]
fn overlapping_entries_at_start_up_clash_as_in_cyrus() {
    let dir = TestDir::new("overlap");
    let port = free_port();
    let conf = format!(
        "SERVICES {{\n  wide cmd=\"{WORKER} --banner step_wide\" listen=\"{port}\" proto=tcp4 prefork=1\n  narrow cmd=\"{WORKER} --banner step_narrow\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n"
    );
    let mut m = Start::new(&dir, &conf).spawn();
    assert!(m.wait_log("ready for work"), "{}", m.log_text());
    assert!(
        m.log_text().contains("Address already in use"),
        "{}",
        m.log_text()
    );
    let (_s, banner) = connect(port);
    assert!(banner.contains("step_wide"), "{banner}");
    m.stop();
}
