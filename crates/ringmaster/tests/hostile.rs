//! End-to-end tests of hostile input: stray signals, workers writing garbage, garbage and
//! unreadable configurations; and the master's priority. The master must survive each one,
//! keep serving, and log a bounded number of clean lines.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use nix::sys::signal::Signal;

fn echo_conf(port: u16, extra: &str) -> String {
    format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n{extra}}}\n"
    )
}

/// Sends signal `number` (realtime ones included, which nix cannot name) with kill(1).
fn send_signal_number(pid: i32, number: i32) {
    let status = Command::new("kill")
        .arg(format!("-{number}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{number} {pid} failed");
}

fn serves(port: u16) -> bool {
    let (_s, banner) = connect(port);
    banner.starts_with("* OK")
}

/// `size` bytes of deterministic noise (xorshift), every byte value included.
fn garbage(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Control bytes other than newline and tab: what must never reach a terminal or a log raw.
fn raw_controls(text: &[u8]) -> usize {
    text.iter()
        .filter(|&&b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f)
        .count()
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn every_stray_signal_is_logged_and_survived_then_sigterm_cleans_up() {
    let dir = TestDir::new("strays");
    let port = free_port();
    let mut m = Start::new(&dir, &echo_conf(port, "")).start();
    assert!(m.pidfile.exists());
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    let strays: Vec<(i32, String)> = [
        Signal::SIGALRM,
        Signal::SIGVTALRM,
        Signal::SIGPROF,
        Signal::SIGIO,
        Signal::SIGXCPU,
        Signal::SIGXFSZ,
        Signal::SIGPWR,
        Signal::SIGSYS,
        Signal::SIGSTKFLT,
        Signal::SIGTRAP,
        Signal::SIGABRT,
        // SIGUSR1 is not a stray: it reopens the log file (tests/logrotate.rs).
        // Nor SIGUSR2: it upgrades the binary in place (tests/upgrade.rs).
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        // Sent, not faults: a real fault still ends the master.
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
    ]
    .into_iter()
    .map(|s| (s as i32, s.as_str().to_string()))
    .chain([
        (rtmin, "SIGRTMIN+0".to_string()),
        (rtmin + 5, "SIGRTMIN+5".to_string()),
        (rtmax, format!("SIGRTMIN+{}", rtmax - rtmin)),
    ])
    .collect();
    for (number, name) in &strays {
        send_signal_number(m.pid, *number);
        assert!(
            m.wait_log(&format!("ignoring {name} from pid")),
            "no log line for {name}:\n{}",
            m.log_text()
        );
        assert!(m.exited().is_none(), "{name} ended the master");
        let state = state_of(m.pid);
        assert!(
            !matches!(state, Some('T' | 't' | 'Z') | None),
            "{name} left the master in state {state:?}"
        );
        assert!(serves(port), "not serving after {name}");
    }
    // glibc's own two signals are ignored (they cannot stay blocked), without a log line.
    for number in [32, 33] {
        send_signal_number(m.pid, number);
        assert!(m.exited().is_none(), "signal {number} ended the master");
        assert!(serves(port), "not serving after signal {number}");
    }
    m.signal(Signal::SIGTERM);
    let status = m.wait_exit(WAIT).expect("master exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", m.log_text());
    assert!(!m.pidfile.exists(), "pidfile left behind");
    assert!(!m.ready.exists(), "ready file left behind");
}

#[test]
fn a_storm_of_one_signal_is_logged_a_few_times_then_counted() {
    let dir = TestDir::new("alrmstorm");
    let port = free_port();
    let mut m = Start::new(&dir, &echo_conf(port, "")).start();
    let mut sent = 0;
    // Standard signals coalesce: wait for each to be read (the master is sleeping again with
    // nothing pending) before the next, so the master sees a real storm.
    while sent < 200 {
        m.signal(Signal::SIGALRM);
        sent += 1;
        let pid = m.pid;
        assert!(wait_until(WAIT, || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("ShdPnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                == Some(0)
        }));
    }
    assert!(serves(port));
    let text = m.log_text();
    let lines = text.matches("ignoring SIGALRM").count();
    assert!(
        (1..=12).contains(&lines),
        "{lines} lines for {sent} SIGALRMs:\n{text}"
    );
    // The count comes when the window ends (10 s), with no further signal.
    assert!(
        m.wait_log("suppressed"),
        "no suppressed line:\n{}",
        m.log_text()
    );
    assert!(m.exited().is_none());
}

#[test]
fn a_worker_writing_garbage_to_its_status_pipe_gets_a_bounded_log() {
    let dir = TestDir::new("garbagepipe");
    let port = free_port();
    let noisy = dir.path("noisy.sh");
    // Two seconds of random bytes on the status pipe, in writes of odd sizes, then quiet.
    write_script(
        &noisy,
        "end=$(( $(date +%s) + 2 ))\n\
         while [ $(date +%s) -lt $end ]; do head -c 40001 /dev/urandom >&3; done\n\
         touch \"$0.done\"\n\
         exec sleep 60\n",
    );
    let extra = format!(
        "  noisy cmd=\"{}\" listen=\"127.0.0.1:{}\" prefork=1\n",
        noisy.display(),
        free_port()
    );
    let mut m = Start::new(&dir, &echo_conf(port, &extra)).start();
    let done = dir.path("noisy.sh.done");
    assert!(
        wait_until(WAIT, || done.exists()),
        "the noisy worker never finished:\n{}",
        m.log_text()
    );
    assert!(serves(port), "not serving during the garbage");
    // The window's count arrives once it ends.
    assert!(
        m.wait_log("suppressed"),
        "no suppressed line:\n{}",
        m.log_text()
    );
    assert!(serves(port));
    let text = m.log_text();
    let lines = text.lines().count();
    assert!(lines <= 120, "{lines} log lines:\n{text}");
    assert_eq!(raw_controls(text.as_bytes()), 0);
    assert!(m.exited().is_none());
}

#[test]
fn check_on_a_megabyte_of_garbage_is_short_and_clean() {
    let dir = TestDir::new("garbagecheck");
    let conf = dir.path("cyrus.conf");
    std::fs::write(&conf, garbage(1 << 20)).unwrap();
    let out = Command::new(MASTER)
        .arg("check")
        .arg("-M")
        .arg(&conf)
        .arg("-C")
        .arg(dir.path("imapd.conf"))
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(78));
    let lines = out.stdout.split(|&b| b == b'\n').count();
    assert!(
        lines <= 56,
        "{lines} lines:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        raw_controls(&out.stdout),
        0,
        "raw control bytes in the output"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("more errors"), "{text}");
}

#[test]
fn a_reload_onto_garbage_logs_a_bounded_report_and_keeps_serving() {
    let dir = TestDir::new("garbagereload");
    let port = free_port();
    let mut m = Start::new(&dir, &echo_conf(port, "")).start();
    let before = m.log_text().lines().count();
    let tmp = dir.path("cyrus.conf.new");
    std::fs::write(&tmp, garbage(1 << 20)).unwrap();
    std::fs::rename(&tmp, &m.conf).unwrap();
    m.signal(Signal::SIGHUP);
    assert!(m.wait_log("reload rejected"), "{}", m.log_text());
    let text = m.log_text();
    let added = text.lines().count() - before;
    assert!(added <= 70, "{added} lines for one reload:\n{text}");
    assert_eq!(raw_controls(text.as_bytes()), 0, "raw control bytes logged");
    assert!(text.contains("invalid"), "{text}");
    assert!(serves(port));
    // A storm of reloads onto the same garbage: after a few full reports, one line each.
    let storm = 30;
    for n in 2..=storm + 1 {
        m.signal(Signal::SIGHUP);
        assert!(
            wait_until(WAIT, || m.log_text().matches("reload rejected").count()
                >= n),
            "{}",
            m.log_text()
        );
    }
    let text = m.log_text();
    let added = text.lines().count() - before;
    assert!(
        added <= 5 * 70 + storm * 3,
        "{added} lines for {} reloads",
        storm + 1
    );
    assert!(serves(port));
    assert!(m.exited().is_none());
}

#[test]
fn an_unreadable_config_on_reload_says_cannot_read_not_invalid() {
    let dir = TestDir::new("unreadable");
    let port = free_port();
    let mut m = Start::new(&dir, &echo_conf(port, "")).start();
    // Root reads through chmod 000: a directory in the file's place fails for anyone.
    std::fs::remove_file(&m.conf).unwrap();
    std::fs::create_dir(&m.conf).unwrap();
    m.signal(Signal::SIGHUP);
    assert!(m.wait_log("reload failed"), "{}", m.log_text());
    let text = m.log_text();
    assert!(
        text.contains(&format!("cannot read {}: Is a directory", m.conf.display())),
        "{text}"
    );
    assert!(!text.contains("invalid"), "{text}");
    assert!(serves(port));
    assert!(m.exited().is_none());
}

/// The nice value of a process, from /proc (field 19 of stat).
fn nice_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// Starts the master under `nice -n 5` (through a script that execs it, so the pid is the
/// master's), with `extra` flags.
fn start_niced(dir: &TestDir, port: u16, extra: &[&str]) -> (Master, i32) {
    std::fs::write(dir.path("cyrus.conf"), echo_conf(port, "")).unwrap();
    std::fs::write(
        dir.path("imapd.conf"),
        format!("configdirectory: {}\n", dir.0.display()),
    )
    .unwrap();
    let wrapper = dir.path("niced.sh");
    write_script(&wrapper, &format!("exec nice -n 5 {MASTER} \"$@\"\n"));
    let ready = dir.path("master.ready").display().to_string();
    let mut args = vec!["-r", ready.as_str(), "-v"];
    if is_root() {
        args.extend(["-u", "nobody"]);
    }
    args.extend(extra);
    let mut m = spawn_master_program(&wrapper.display().to_string(), dir, &args);
    m.wait_ready();
    let expected = (nice_of(std::process::id() as i32).expect("own nice") + 5).min(19);
    (m, expected)
}

#[test]
fn the_master_keeps_the_priority_it_was_started_with_and_so_do_its_workers() {
    let dir = TestDir::new("nice");
    let port = free_port();
    let (mut m, expected) = start_niced(&dir, port, &[]);
    assert_eq!(nice_of(m.pid), Some(expected), "{}", m.log_text());
    let workers = m.wait_children(1);
    for w in &workers {
        assert_eq!(nice_of(*w), Some(expected), "worker {w}");
    }
    let (_s, banner) = connect(port);
    assert_eq!(nice_of(banner_pid(&banner)), Some(expected));
}

#[test]
fn master_nice_moves_only_the_master() {
    if skip_unless(is_root(), "root (to lower a nice value)") {
        return;
    }
    let dir = TestDir::new("masternice");
    let port = free_port();
    let (mut m, expected) = start_niced(&dir, port, &["--master-nice", "-3"]);
    assert_eq!(nice_of(m.pid), Some(-3), "{}", m.log_text());
    // A child is at the master's priority from its fork until the master sets it back, just
    // after the exec: wait for that.
    let workers = m.wait_children(1);
    for w in &workers {
        assert!(
            wait_until(WAIT, || nice_of(*w) == Some(expected)),
            "worker {w} at {:?}, not {expected}",
            nice_of(*w)
        );
    }
    m.kill_child_and_wait_for_replacement();
    for w in m.children() {
        assert!(
            wait_until(WAIT, || nice_of(w) == Some(expected)),
            "replacement {w} at {:?}, not {expected}",
            nice_of(w)
        );
    }
}

#[test]
fn control_characters_from_a_config_never_reach_the_log_or_check_raw() {
    let dir = TestDir::new("ctlconf");
    let port = free_port();
    let conf = format!(
        "SERVICES {{\n  echo cmd=\"/nonexistent/\x1b[2J\x07prog \x1b]0;title\x07\" listen=\"127.0.0.1:{port}\"\n}}\n"
    );
    // The service is down (its program cannot be found); the master runs without it.
    let mut m = Start::new(&dir, &conf).spawn();
    assert!(m.wait_log("ready for work"), "{}", m.log_text());
    let log = std::fs::read(&m.log).unwrap();
    assert_eq!(raw_controls(&log), 0, "{}", String::from_utf8_lossy(&log));
    assert!(
        String::from_utf8_lossy(&log).contains("/nonexistent/\\x1b[2J\\x07prog"),
        "{}",
        String::from_utf8_lossy(&log)
    );
    let out = Command::new(MASTER)
        .arg("check")
        .arg("-M")
        .arg(&m.conf)
        .arg("-C")
        .arg(&m.imapd)
        .output()
        .expect("run check");
    assert_eq!(raw_controls(&out.stdout), 0);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check says the service would be down"
    );
    m.stop();
}
