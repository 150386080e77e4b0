//! End-to-end tests of fork-storm control: maxforkrate under arrivals faster than the rate,
//! the back-off of workers that exit before serving, and the bound on (and clean-up of)
//! processes that workers leave behind.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn service_conf(name: &str, cmd: &str, port: u16, extra: &str) -> String {
    format!("SERVICES {{\n  {name} cmd=\"{cmd}\" listen=\"127.0.0.1:{port}\" {extra}\n}}\n")
}

#[test]
fn maxforkrate_keeps_forking_while_clients_wait() {
    const CLIENTS: u64 = 30;
    const RATE: usize = 5;
    let dir = TestDir::new("forkrate-wait");
    let port = free_port();
    let conf = service_conf(
        "lmtp",
        &format!("{WORKER} -U 1"),
        port,
        &format!("prefork=0 maxforkrate={RATE}"),
    );
    let mut m = Start::new(&dir, &conf).start();
    let started = Instant::now();
    // About ten arrivals a second for three seconds, twice the rate; each client waits for
    // its banner, then leaves (one use per worker, so every client needs a fork).
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100 * i));
                let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
                stream.set_read_timeout(Some(WAIT)).ok()?;
                let banner = read_line(&stream);
                let at = started.elapsed();
                let _ = stream.write_all(b"QUIT\r\n");
                Some((banner, at))
            })
        })
        .collect();
    let mut pids = BTreeSet::new();
    let mut times = Vec::new();
    for client in clients {
        let got = client.join().expect("client thread");
        let (banner, at) = got.unwrap_or_default();
        assert!(
            banner.starts_with("* OK"),
            "a client got no banner: {banner:?}\n{}",
            m.log_text()
        );
        pids.insert(banner_pid(&banner));
        times.push(at);
    }
    assert_eq!(pids.len() as u64, CLIENTS, "one worker per client");
    // The forks follow the rate: loose bound on the banners of any one second (a worker's
    // start-up time smears them a little).
    times.sort();
    for (i, t) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(
            within <= 2 * RATE,
            "{within} banners within a second of {t:?}: {times:?}"
        );
    }
    assert_eq!(m.stop().map(|s| s.code()), Some(Some(0)));
}

fn lines_in(path: &std::path::Path) -> usize {
    read_to_string(path).lines().count()
}

#[test]
fn a_worker_exiting_0_at_once_is_throttled() {
    let dir = TestDir::new("exit0");
    let port = free_port();
    let starts = dir.path("starts");
    let conf = service_conf(
        "quitter",
        &format!("{WORKER} --touch {} --exit", starts.display()),
        port,
        "prefork=1",
    );
    let mut m = Start::new(&dir, &conf).start();
    assert!(
        m.wait_log("too many failures for service quitter"),
        "never throttled; log:\n{}",
        m.log_text()
    );
    let forks = lines_in(&starts);
    assert!(
        (5..=8).contains(&forks),
        "{forks} starts before the throttle"
    );
    // Throttled: no more forks for the pause (10 s); look for a while that none comes.
    assert!(
        !wait_until(Duration::from_secs(1), || lines_in(&starts) > forks),
        "forked again while throttled"
    );
    assert_eq!(m.stop().map(|s| s.code()), Some(Some(0)));
}
