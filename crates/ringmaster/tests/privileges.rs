//! Privileges and hygiene, as root: who workers run as, what they inherit, and a root master
//! that can still bind a port below 1024 on reload. Skipped (with a reason) unless root,
//! except in CI, which runs as root.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use common::*;
use nix::sys::signal::Signal;

fn status_field(pid: i32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn ids(pid: i32, field: &str) -> Vec<u32> {
    status_field(pid, field)
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn open_fds(pid: i32) -> BTreeSet<i32> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .expect("user exists")
}

fn gid_of(group: &str) -> u32 {
    nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .expect("group exists")
}

/// A free TCP port below 1024 on 127.0.0.1.
fn free_low_port() -> u16 {
    (600..1000)
        .rev()
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024")
}

#[test]
fn workers_run_as_configured_with_clean_state() {
    if skip_unless(is_root(), "root") {
        return;
    }
    let dir = TestDir::new("ids");
    let (a, b, c) = (free_port(), free_port(), free_port());
    let conf = format!(
        "SERVICES {{\n  \
         plain cmd=\"{WORKER}\" listen=\"127.0.0.1:{a}\" prefork=1 maxfds=123\n  \
         mail cmd=\"{WORKER}\" listen=\"127.0.0.1:{b}\" prefork=1 user=cyrus group=mail\n  \
         boss cmd=\"{WORKER}\" listen=\"127.0.0.1:{c}\" prefork=1 user=root\n}}\n"
    );
    let mut m = Start::new(&dir, &conf).start();
    m.wait_children(3);
    let (mut sa, _) = connect(a);
    let (mut sb, _) = connect(b);
    let (mut sc, _) = connect(c);
    let pa: i32 = ask(&mut sa, "PID").parse().unwrap();
    let pb: i32 = ask(&mut sb, "PID").parse().unwrap();
    let pc: i32 = ask(&mut sc, "PID").parse().unwrap();

    // The default identity (-u nobody from the harness): uid and gid, groups from the user.
    assert_eq!(ids(pa, "Uid:"), vec![uid_of("nobody"); 4]);
    assert_eq!(ids(pa, "Gid:"), vec![gid_of("nogroup"); 4]);
    // user= and group= on the entry; supplementary groups looked up for the user (cyrus is
    // in mail and sasl on Debian).
    assert_eq!(ids(pb, "Uid:")[0], uid_of("cyrus"));
    assert_eq!(ids(pb, "Gid:")[0], gid_of("mail"));
    let groups: BTreeSet<u32> = ids(pb, "Groups:").into_iter().collect();
    assert!(groups.contains(&gid_of("mail")), "{groups:?}");
    // Root only when the configuration says so in as many words.
    assert_eq!(ids(pc, "Uid:")[0], 0);

    let limits = fs::read_to_string(format!("/proc/{pa}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(nofile.contains("123"), "maxfds applied: {nofile}");

    // The pidfile is root's and not writable by the workers' users.
    let meta = fs::metadata(&m.pidfile).unwrap();
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.permissions().mode() & 0o022, 0);
    m.stop();
}

#[test]
fn a_worker_gets_exactly_five_fds_and_a_clean_signal_state() {
    if skip_unless(is_root(), "root") {
        return;
    }
    let dir = TestDir::new("fds");
    let port = free_port();
    // A worker that opens nothing of its own: what it holds is what the master gave it.
    let script = dir.path("bare.sh");
    fs::write(&script, "#!/bin/sh\nexec sleep 600\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let conf = format!(
        "SERVICES {{\n  bare cmd=\"{}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n",
        script.display()
    );
    let mut m = Start::new(&dir, &conf).start();
    let kids = m.wait_children(1);
    let pid = *kids.iter().next().unwrap();
    let comm = |pid: i32| fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(wait_until(WAIT, || comm(pid).trim() == "sleep"));
    assert_eq!(open_fds(pid), [0, 1, 2, 3, 4].into());
    assert_eq!(
        status_field(pid, "SigBlk:"),
        "0000000000000000",
        "empty signal mask"
    );
    assert_eq!(
        status_field(pid, "SigIgn:"),
        "0000000000000000",
        "default dispositions"
    );
    // The master keeps the priority it was started with, and so do its workers.
    let nice = |pid: i32| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
        rest.split_whitespace()
            .nth(16)
            .and_then(|v| v.parse::<i32>().ok())
    };
    assert_eq!(
        nice(pid),
        nice(std::process::id() as i32),
        "worker at the usual priority"
    );
    assert_eq!(nice(m.pid), nice(pid), "master at its workers' priority");
    m.stop();
}

#[test]
fn master_environment_for_its_own_supervisor_is_not_passed_on() {
    if skip_unless(is_root(), "root") {
        return;
    }
    let dir = TestDir::new("env");
    let port = free_port();
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n");
    let mut m = Start::new(&dir, &conf)
        .env("NOTIFY_SOCKET", "/run/systemd/notify")
        .env("LISTEN_FDS", "2")
        .start();
    let kids = m.wait_children(1);
    let pid = *kids.iter().next().unwrap();
    let read_environ = || {
        String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
            .replace('\0', "\n")
    };
    // Until it has exec'd, a child shares the master's memory, environment included.
    let execd = wait_until(WAIT, || read_environ().contains("CYRUS_SERVICE="));
    let environ = read_environ();
    assert!(execd, "the worker never exec'd: {environ}");
    assert!(!environ.contains("NOTIFY_SOCKET"), "{environ}");
    assert!(!environ.contains("LISTEN_FDS"), "{environ}");
    assert!(environ.contains("CYRUS_SERVICE=echo"));
    assert!(environ.contains("CYRUS_ID=0"));
    m.stop();
}

#[test]
fn a_reload_binds_a_new_port_below_1024() {
    if skip_unless(is_root(), "root") {
        return;
    }
    let dir = TestDir::new("lowport");
    let port = free_port();
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n");
    let mut m = Start::new(&dir, &conf).start();
    let workers = m.wait_children(1);
    // The workers are not root, yet the master can still bind a privileged port.
    assert_ne!(ids(*workers.iter().next().unwrap(), "Uid:")[0], 0);
    let low = free_low_port();
    m.rewrite_conf(&format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n  imaps cmd=\"{WORKER}\" listen=\"127.0.0.1:{low}\" prefork=1\n}}\n"
    ));
    m.signal(Signal::SIGHUP);
    let mut banner = String::new();
    assert!(
        wait_until(WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", low)).is_ok_and(|s| {
                let _ = s.set_read_timeout(Some(WAIT));
                banner = read_line(&s);
                true
            })
        }),
        "{}",
        m.log_text()
    );
    assert!(banner.contains("imaps"), "{banner}");
    m.stop();
}

#[test]
fn killing_the_master_leaves_no_worker_accepting() {
    if skip_unless(is_root(), "root") {
        return;
    }
    let dir = TestDir::new("orphans");
    let port = free_port();
    let marker = format!("orphan-{port}");
    let conf = format!(
        "SERVICES {{\n  echo cmd=\"{WORKER} --banner {marker}\" listen=\"127.0.0.1:{port}\" prefork=3\n}}\n"
    );
    let mut m = Start::new(&dir, &conf).start();
    m.wait_children(3);
    m.signal(Signal::SIGKILL);
    assert!(m.wait_exit(WAIT).is_some());
    assert!(
        wait_until(WAIT, || processes_with(&marker).is_empty()),
        "workers outlived their master: {:?}",
        processes_with(&marker)
    );
    // A child caught between fork and exec has no marker yet, but dies of the parent-death
    // signal too: soon nothing holds the listener.
    assert!(wait_until(WAIT, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_err()));
    m.child = None;
}

#[test]
fn a_missing_user_takes_only_its_service_down() {
    if skip_unless(is_root(), "root") {
        return;
    }
    let dir = TestDir::new("nouser");
    let conf = format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{}\" user=no-such-user-here\n}}\n",
        free_port()
    );
    let mut m = Start::new(&dir, &conf).spawn();
    assert!(m.wait_log("ready for work"), "{}", m.log_text());
    assert!(m.exited().is_none(), "the master runs on");
    let log = m.log_text();
    assert!(log.contains("no-such-user-here"), "{log}");
    assert!(log.contains("cyrus.conf:2:"), "points at the entry: {log}");
    assert_eq!(m.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn an_unprivileged_master_runs_workers_as_itself_and_rejects_other_users() {
    if skip_unless(is_root(), "root") {
        return;
    }
    let dir = TestDir::new("unpriv");
    let port = free_port();
    let conf_path = dir.path("cyrus.conf");
    let imapd = dir.path("imapd.conf");
    fs::write(&imapd, "").unwrap();
    let as_nobody = |conf: &str| {
        fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(MASTER)
            .args(["-D", "-M"])
            .arg(&conf_path)
            .arg("-C")
            .arg(&imapd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    // As nobody, with no user= anywhere: workers run as nobody too.
    let mut master = as_nobody(&format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n"
    ))
    .spawn()
    .expect("setpriv");
    let master_pid = master.id() as i32;
    let mut worker = None;
    let found = wait_until(WAIT, || {
        worker = children_of(master_pid).into_iter().next();
        worker.is_some()
    });
    let uid = worker.map(|w| ids(w, "Uid:"));
    kill(master_pid, Signal::SIGTERM);
    let stopped = wait_until(WAIT, || master.try_wait().ok().flatten().is_some());
    if !stopped {
        kill(master_pid, Signal::SIGKILL);
        let _ = master.wait();
    }
    assert!(found, "the unprivileged master forked its worker");
    assert_eq!(uid, Some(vec![uid_of("nobody"); 4]));
    assert!(stopped);

    // And it leaves down a service naming another user, before forking anything for it.
    let log = dir.path("nobody.log");
    let mut master = as_nobody(&format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" user=root\n}}\n"
    ))
    .arg("-L")
    .arg(&log)
    .spawn()
    .expect("setpriv");
    let master_pid = master.id() as i32;
    let logged = wait_until(WAIT, || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("ready for work"))
    });
    let running = master.try_wait().ok().flatten().is_none();
    kill(master_pid, Signal::SIGTERM);
    if !wait_until(WAIT, || master.try_wait().ok().flatten().is_some()) {
        kill(master_pid, Signal::SIGKILL);
        let _ = master.wait();
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(logged && running, "{text}");
    assert!(
        text.contains("user=root needs a master started as root"),
        "{text}"
    );
}
