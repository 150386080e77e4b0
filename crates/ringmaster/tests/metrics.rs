//! `--metrics-listen`, end to end: the real master serves GET /metrics on loopback; the body
//! parses as Prometheus text with the series of the configuration it runs; junk, unknown
//! paths and methods, and an idle client get their answer (or their timeout) while the
//! master keeps serving; `ringmaster metrics` over the control socket gives the same series.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use nix::sys::signal::Signal;

/// Sends `request` raw and reads the whole reply (the server closes after one): status code
/// and body.
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.write_all(request).expect("send");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read the reply");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn get_metrics(addr: SocketAddr) -> Vec<prometheus_parse::Sample> {
    let (code, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    parse(&body)
}

fn parse(body: &str) -> Vec<prometheus_parse::Sample> {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid exposition")
        .samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    match found.as_slice() {
        [one] => match one.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(v),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn metrics_are_served_and_junk_is_refused() {
    let dir = TestDir::new("metrics");
    let port = free_port();
    let metrics_port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=2\n}}\n");
    let mut m = Start::new(&dir, &conf)
        .arg("--metrics-listen")
        .arg(&addr.to_string())
        .start();
    let listen = format!("127.0.0.1:{port}");
    let echo = [
        ("service", "echo"),
        ("family", "ipv4"),
        ("listen", listen.as_str()),
    ];
    let ready = [echo.as_slice(), &[("state", "ready")]].concat();
    // The demo worker says when it is ready: wait for both.
    let mut samples = Vec::new();
    assert!(
        wait_until(WAIT, || {
            samples = get_metrics(addr);
            value(&samples, "ringmaster_workers", &ready) == Some(2.0)
        }),
        "{samples:?}\n{}",
        m.log_text()
    );
    assert_eq!(value(&samples, "ringmaster_forks_total", &echo), Some(2.0));
    let crash = [echo.as_slice(), &[("reason", "crash")]].concat();
    assert_eq!(value(&samples, "ringmaster_exits_total", &crash), Some(0.0));
    assert_eq!(value(&samples, "ringmaster_paused", &echo), Some(0.0));
    assert_eq!(
        value(&samples, "ringmaster_connections_waiting", &echo),
        Some(0.0)
    );
    let applied = [("result", "applied")];
    assert_eq!(
        value(&samples, "ringmaster_reloads_total", &applied),
        Some(0.0)
    );
    assert!(value(&samples, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    assert!(value(&samples, "process_open_fds", &[]).is_some_and(|v| v > 0.0));

    // An idle client holds a connection and sends nothing: the others are still served.
    let idle = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    assert_eq!(http(addr, b"\x16\x03\x01\x02\x00junk\r\n\r\n").0, 400);
    assert_eq!(http(addr, b"GET /other HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(20_000, b'a');
    assert_eq!(http(addr, &huge).0, 431);

    // A reload shows in the counters and the last reload's time.
    m.signal(Signal::SIGHUP);
    assert!(
        wait_until(WAIT, || {
            samples = get_metrics(addr);
            value(&samples, "ringmaster_reloads_total", &applied) == Some(1.0)
        }),
        "{}",
        m.log_text()
    );
    assert!(
        value(&samples, "ringmaster_last_reload_timestamp_seconds", &[]).is_some_and(|t| t > 1.0e9)
    );
    // The idle client is closed after its time limit, and the master never stopped.
    let mut idle = idle;
    idle.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut rest = Vec::new();
    assert!(
        idle.read_to_end(&mut rest).is_ok() && rest.is_empty(),
        "the idle connection was not closed"
    );
    assert!(m.exited().is_none());
    assert!(!get_metrics(addr).is_empty());
}

#[test]
fn a_metrics_address_in_use_stops_the_start() {
    let dir = TestDir::new("metrics-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let port = free_port();
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n");
    let mut m = Start::new(&dir, &conf)
        .arg("--metrics-listen")
        .arg(&addr)
        .spawn();
    let status = m.wait_exit(WAIT).expect("the master exits");
    assert_eq!(status.code(), Some(71), "{}", m.log_text());
    assert!(
        m.log_text().contains("cannot serve metrics on"),
        "{}",
        m.log_text()
    );
}

#[test]
fn connections_beyond_the_cap_wait_and_idle_ones_time_out() {
    let dir = TestDir::new("metrics-cap");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n");
    let mut m = Start::new(&dir, &conf)
        .arg("--metrics-listen")
        .arg(&addr.to_string())
        .start();
    // 16 clients that say nothing take every slot (metrics_http::MAX_CONNECTIONS) ...
    let mut idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect_timeout(&addr, WAIT).expect("connect"))
        .collect();
    // ... a 17th waits in the backlog and is answered once their time is up; the master
    // serves its workers meanwhile.
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"), "{banner}");
    let (code, body) = http(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    for stream in &mut idle {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut rest = Vec::new();
        assert!(stream.read_to_end(&mut rest).is_ok() && rest.is_empty());
    }
    assert!(m.exited().is_none(), "{}", m.log_text());
}

/// Every series' name and labels, sorted.
fn series(samples: &[prometheus_parse::Sample]) -> Vec<String> {
    let mut keys: Vec<String> = samples
        .iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            format!("{}{{{}}}", s.metric, labels.join(","))
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn ringmaster_metrics_over_the_control_socket_is_the_same_exposition() {
    let dir = TestDir::new("metrics-control");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=2\n}}\n");
    let m = Start::new(&dir, &conf)
        .arg("--metrics-listen")
        .arg(&addr.to_string())
        .start();
    let listen = format!("127.0.0.1:{port}");
    let ready = [
        ("service", "echo"),
        ("family", "ipv4"),
        ("listen", listen.as_str()),
        ("state", "ready"),
    ];
    let mut http_samples = Vec::new();
    assert!(
        wait_until(WAIT, || {
            http_samples = get_metrics(addr);
            value(&http_samples, "ringmaster_workers", &ready) == Some(2.0)
        }),
        "{}",
        m.log_text()
    );
    let out = std::process::Command::new(MASTER)
        .arg("metrics")
        .arg("-S")
        .arg(dir.path("control.sock"))
        .output()
        .expect("run ringmaster metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let control_samples = parse(&text);
    // The same series (values such as the RSS move between the two scrapes).
    assert_eq!(series(&control_samples), series(&http_samples));
    assert_eq!(
        value(&control_samples, "ringmaster_workers", &ready),
        Some(2.0)
    );
}
