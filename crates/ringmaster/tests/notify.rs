//! systemd's notify protocol, end to end: the real master with NOTIFY_SOCKET pointing at a
//! datagram socket this test reads says READY=1, then RELOADING=1 (with MONOTONIC_USEC) and
//! READY=1 around a SIGHUP, the same around a rejected reload with the failure in STATUS=,
//! and STOPPING=1 on SIGTERM, in that order; no child sees NOTIFY_SOCKET.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Instant;

use common::*;
use nix::sys::signal::Signal;

/// Reads the notifications, one datagram each.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(dir: &TestDir) -> (Notifications, String) {
        let path = dir.path("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket.set_read_timeout(Some(WAIT)).expect("timeout");
        let n = Notifications {
            socket,
            seen: Vec::new(),
        };
        (n, path.display().to_string())
    }

    /// The next message, whatever it says.
    fn next_message(&mut self, m: &Master) -> String {
        let mut buf = vec![0u8; 65536];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(text.clone());
                text
            }
            Err(e) => panic!("no message: {e}\nlog:\n{}", m.log_text()),
        }
    }

    /// The next message that has the line `want`; the ones before it are kept in `seen`.
    fn until(&mut self, want: &str, m: &Master) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buf) else {
                break;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(text.clone());
            if text.lines().any(|l| l == want) {
                return text;
            }
        }
        panic!(
            "no {want} in time; seen {:?}\nlog:\n{}",
            self.seen,
            m.log_text()
        );
    }
}

fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

/// A START command that records the environment children get: the script and its output.
fn env_recorder(dir: &TestDir) -> (PathBuf, PathBuf) {
    let script = dir.path("record-env.sh");
    let env_file = dir.path("child.env");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nenv > {}\n", env_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, env_file)
}

/// The state lines of every message, in order.
fn states(seen: &[String]) -> Vec<&str> {
    seen.iter()
        .flat_map(|msg| msg.lines())
        .filter(|l| matches!(*l, "READY=1" | "RELOADING=1" | "STOPPING=1"))
        .collect()
}

#[test]
fn ready_reloading_ready_rejected_and_stopping_in_order() {
    let dir = TestDir::new("notify");
    let (mut notes, socket) = Notifications::bind(&dir);
    let (script, env_file) = env_recorder(&dir);
    let port = free_port();
    let conf = format!(
        "START {{\n  record cmd=\"{}\"\n}}\nSERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n",
        script.display()
    );
    let mut m = Start::new(&dir, &conf)
        .env("NOTIFY_SOCKET", &socket)
        .start();

    let ready = notes.until("READY=1", &m);
    let status = field(&ready, "STATUS").expect("a STATUS= with READY=1");
    assert!(
        status.starts_with("1 service listening, 0 down"),
        "{status}"
    );

    let before = monotonic_usec();
    m.signal(Signal::SIGHUP);
    let reloading = notes.until("RELOADING=1", &m);
    let usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    // systemd takes RELOADING=1 only with a time no earlier than its SIGHUP.
    assert!(
        usec >= before && usec <= monotonic_usec(),
        "{usec} vs {before}"
    );
    let done = notes.until("READY=1", &m);
    assert!(
        field(&done, "STATUS").is_some_and(|s| s.contains("reload 1 ") && s.contains("applied")),
        "{done:?}"
    );

    assert!(
        m.wait_log("reload 1 complete: every service has its workers ready (1 service, 1 worker on the new configuration, "),
        "{}",
        m.log_text()
    );

    // A broken configuration: the reload is still ended (READY=1), and STATUS= says why.
    m.rewrite_conf("SERVICES {\n  echo cmd=\"\" listen=\n}\n");
    m.signal(Signal::SIGHUP);
    notes.until("RELOADING=1", &m);
    let rejected = notes.until("READY=1", &m);
    let status = field(&rejected, "STATUS").unwrap_or_default();
    assert!(
        status.contains("reload 2 ")
            && status.contains("rejected")
            && status.contains("cyrus.conf:"),
        "{rejected:?}"
    );

    m.signal(Signal::SIGTERM);
    notes.until("STOPPING=1", &m);
    assert!(m.wait_exit(WAIT).is_some(), "{}", m.log_text());

    // Exactly this sequence of states, whatever STATUS= updates came between.
    assert_eq!(
        states(&notes.seen),
        [
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "STOPPING=1"
        ]
    );
    let child_env = read_to_string(&env_file);
    assert!(child_env.contains("PATH="), "the START command did not run");
    assert!(!child_env.contains("NOTIFY_SOCKET"), "{child_env}");
}

#[test]
fn ready_waits_for_a_service_whose_port_is_taken() {
    let dir = TestDir::new("notify-down");
    let (mut notes, socket) = Notifications::bind(&dir);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n");
    let m = Start::new(&dir, &conf)
        .env("NOTIFY_SOCKET", &socket)
        .spawn();
    // Start-up is complete with the service down: STATUS= says so, READY=1 waits.
    let first = notes.next_message(&m);
    assert!(first.contains("0 services listening, 1 down"), "{first:?}");
    assert!(!first.lines().any(|l| l == "READY=1"), "{first:?}");
    drop(taken);
    let ready = notes.until("READY=1", &m);
    assert!(
        field(&ready, "STATUS").is_some_and(|s| s.starts_with("1 service listening, 0 down")),
        "{ready:?}"
    );
}
