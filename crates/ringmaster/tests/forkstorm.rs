//! End-to-end tests of fork-storm control: maxforkrate under arrivals faster than the rate,
//! the back-off of workers that exit before serving, and the bound on (and clean-up of)
//! processes that workers leave behind.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

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
        m.wait_logged("pool_throttled", &["service=quitter"]),
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

/// A shell worker that counts one connection on the status pipe (so its exit is no failure),
/// appends a line to `starts`, runs `leave` and exits 0: as fast a respawn as there can be.
fn leaver_script(dir: &TestDir, starts: &std::path::Path, leave: &str) -> String {
    let path = dir.path("leaver.sh");
    let script = format!(
        r#"#!/bin/sh
p=$$
printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o' 3 0 0 0 $((p&255)) $((p>>8&255)) $((p>>16&255)) $((p>>24&255)))" >&3
echo x >> {starts}
{leave}
exit 0
"#,
        starts = starts.display()
    );
    std::fs::write(&path, script).expect("write script");
    let _ = std::process::Command::new("chmod")
        .arg("0755")
        .arg(&path)
        .status();
    path.display().to_string()
}

fn gone(pid: i32) -> bool {
    matches!(state_of(pid), None | Some('Z'))
}

#[test]
fn double_forking_workers_leave_a_bounded_number_of_processes_all_gone_at_stop() {
    let dir = TestDir::new("leaver");
    let port = free_port();
    let starts = dir.path("starts");
    // The subshell forks `sleep` and exits: a double fork, so the sleep is an orphan that
    // stays in the worker's process group.
    let cmd = leaver_script(&dir, &starts, "( sleep 120 3>&- 4>&- & )");
    let conf = service_conf("leaver", &cmd, port, "prefork=1 maxforkrate=50");
    let mut m = Start::new(&dir, &conf).start();
    // Leftovers come back to the master (it is their subreaper) and stay bounded (16 groups
    // per service here) while workers go on leaving them.
    let mut most = 0;
    let mut sleeps = BTreeSet::new();
    let busy = wait_until(WAIT, || {
        let kids = m.children();
        most = most.max(kids.len());
        sleeps.extend(
            kids.iter()
                .filter(|&&p| argv0_of(p).is_some_and(|a| a.ends_with("sleep"))),
        );
        lines_in(&starts) >= 80
    });
    assert!(busy, "workers did not keep coming:\n{}", m.log_text());
    assert!(
        !sleeps.is_empty(),
        "no leftover came back to the master:\n{}",
        m.log_text()
    );
    eprintln!(
        "at most {most} children; {} leftover sleeps seen",
        sleeps.len()
    );
    // 16 groups kept, a few workers and killed groups not reaped yet; unbounded, the 80
    // leftovers would all be there. Loose, since a loaded machine reaps later.
    assert!(most <= 40, "{most} children of the master at once");
    assert!(logged(&m.log_text(), "left_behind", &[]));
    let left: BTreeSet<i32> = m.children().into_iter().filter(|&p| !gone(p)).collect();
    m.signal(Signal::SIGTERM);
    assert_eq!(m.wait_exit(WAIT).map(|s| s.code()), Some(Some(0)));
    for pid in left.iter().chain(&sleeps) {
        assert!(
            wait_until(WAIT, || gone(*pid)),
            "{pid} outlived the master:\n{}",
            m.log_text()
        );
    }
    m.stop();
}

#[test]
fn a_process_that_escapes_its_group_is_killed_when_the_master_stops() {
    let dir = TestDir::new("setsid");
    let port = free_port();
    let starts = dir.path("starts");
    let once = dir.path("once");
    // First run: start a `setsid` sleep (out of the worker's group) and exit. Later runs
    // stay idle, so nothing storms.
    let leave = format!(
        "if [ -e {once} ]; then exec sleep 120 3>&- 4>&-; fi\ntouch {once}\nsetsid sleep 121 3>&- 4>&- &",
        once = once.display()
    );
    let cmd = leaver_script(&dir, &starts, &leave);
    let conf = service_conf("escaper", &cmd, port, "prefork=1");
    let mut m = Start::new(&dir, &conf).start();
    let mut escaped = None;
    let found = wait_until(WAIT, || {
        escaped = m.children().into_iter().find(|&p| {
            fs_cmdline(p).contains("121")
                && nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(p))).ok()
                    == Some(nix::unistd::Pid::from_raw(p))
        });
        escaped.is_some()
    });
    assert!(
        found,
        "the escaped process never came back to the master:\n{}",
        m.log_text()
    );
    let escaped = escaped.unwrap_or_default();
    m.signal(Signal::SIGTERM);
    assert_eq!(m.wait_exit(WAIT).map(|s| s.code()), Some(Some(0)));
    assert!(
        wait_until(WAIT, || gone(escaped)),
        "{escaped} outlived the master:\n{}",
        m.log_text()
    );
    m.stop();
}

/// Forks `sleep` as the leader of its own group with pid `want`, steering the kernel's next
/// pid through ns_last_pid (root only); other forks on the machine may win the number, so
/// this tries for a while. None when it never got it.
fn spawn_with_pid(want: i32) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string()).ok()?;
        let mut child = std::process::Command::new("sleep")
            .arg("124")
            .process_group(0)
            .spawn()
            .ok()?;
        if child.id() as i32 == want {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// Processes whose pid, process group or session is `number` (for a failure message).
fn holders_of(number: i32) -> Vec<String> {
    all_pids()
        .into_iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let fields: Vec<i32> = stat[stat.rfind(')')? + 2..]
                .split(' ')
                .skip(2)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            (p == number || fields.contains(&number)).then(|| format!("{p}: {stat}"))
        })
        .collect()
}

#[test]
fn a_group_left_behind_that_empties_unseen_is_not_signalled_by_its_old_number() {
    if skip_unless(
        is_root() && std::path::Path::new("/proc/sys/kernel/ns_last_pid").exists(),
        "root and ns_last_pid (to give a stale group's number to another process)",
    ) {
        return;
    }
    let dir = TestDir::new("stalegroup");
    let port = free_port();
    let starts = dir.path("starts");
    let once = dir.path("once");
    let group = dir.path("group");
    let left = dir.path("left");
    let go = dir.path("go");
    // First run (mkdir: only one, however fast workers come): note the worker's pid (its
    // group's number), leave a process in its group that, once told, leaves the group
    // (setsid), and exit. Later runs stay idle.
    let leave = format!(
        "mkdir {once} 2>/dev/null || exec sleep 120 3>&- 4>&-\necho $$ > {group}\n\
         sh -c 'echo $$ > {left}; while [ ! -e {go} ]; do sleep 0.05; done; exec setsid sleep 122' 3>&- 4>&- &",
        once = once.display(),
        group = group.display(),
        left = left.display(),
        go = go.display(),
    );
    let cmd = leaver_script(&dir, &starts, &leave);
    // Workers say they serve before they idle, so without a cap the master would fork on
    // and on, and might itself take the number this test means to give away.
    let conf = service_conf("stale", &cmd, port, "prefork=1 maxchild=2");
    let mut m = Start::new(&dir, &conf).start();
    let read_pid = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    assert!(
        m.wait_logged("left_behind", &[]),
        "the worker left nothing behind:\n{}",
        m.log_text()
    );
    // The leftover writes its pid on its own time, maybe after the worker is gone.
    wait_until(WAIT, || {
        read_pid(&group).is_some() && read_pid(&left).is_some()
    });
    let (Some(group), Some(left)) = (read_pid(&group), read_pid(&left)) else {
        panic!("pids not written:\n{}", m.log_text());
    };
    let pid = nix::unistd::Pid::from_raw;
    std::fs::write(&go, "").expect("write go");
    assert!(
        wait_until(WAIT, || nix::unistd::getsid(Some(pid(left))).ok()
            == Some(pid(left))
            && fs_cmdline(left).contains("122")),
        "the leftover never left its group:\n{}",
        m.log_text()
    );
    // Group `group` is empty now, unseen by the master; its number goes to a process that is
    // none of the master's.
    let Some(mut victim) = spawn_with_pid(group) else {
        panic!(
            "could not get pid {group} for a new group; held by {:?}\n{}",
            holders_of(group),
            m.log_text()
        );
    };
    m.signal(Signal::SIGTERM);
    let status = m.wait_exit(WAIT).map(|s| s.code());
    let alive = matches!(victim.try_wait(), Ok(None));
    let _ = victim.kill();
    let _ = victim.wait();
    assert_eq!(status, Some(Some(0)), "{}", m.log_text());
    assert!(
        alive,
        "the master signalled group {group} by its old number:\n{}",
        m.log_text()
    );
    assert!(
        m.log_text()
            .contains(&format!("process group {group} holds none of our children")),
        "{}",
        m.log_text()
    );
    assert!(
        wait_until(WAIT, || gone(left)),
        "{left} outlived the master:\n{}",
        m.log_text()
    );
    m.stop();
}

fn fs_cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}
