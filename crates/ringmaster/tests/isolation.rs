//! Per-service fault isolation with the real binary: `check` says what start-up then does,
//! an entry that cannot be resolved is down while the rest serves (at start and at reload),
//! failed binds are retried until the port is free, `master_bind_errors_fatal`, and the ready
//! file only once every service listens.

mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

use common::*;
use nix::sys::signal::Signal;

/// `ringmaster check -M <dir>/cyrus.conf -C <dir>/imapd.conf` (unless `extra` has its own
/// `-C`) plus `extra`, run by `runner`
/// (empty: directly); returns the exit status and stdout.
fn check_with(runner: &[&str], dir: &TestDir, extra: &[&str]) -> (i32, String) {
    let mut cmd = match runner.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(MASTER);
            c
        }
        None => Command::new(MASTER),
    };
    cmd.arg("check").arg("-M").arg(dir.path("cyrus.conf"));
    if !extra.contains(&"-C") {
        cmd.arg("-C").arg(dir.path("imapd.conf"));
    }
    let out = cmd
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ringmaster check: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

fn check(dir: &TestDir, extra: &[&str]) -> (i32, String) {
    let user: &[&str] = if is_root() { &["-u", "nobody"] } else { &[] };
    let mut all = user.to_vec();
    all.extend_from_slice(extra);
    check_with(&[], dir, &all)
}

const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--",
];

/// A master started directly (not through the harness), stopped by pid when dropped.
struct Direct {
    child: Child,
    log: PathBuf,
}

impl Direct {
    fn start(runner: &[&str], dir: &TestDir, args: &[&str]) -> Direct {
        let log = dir.path("direct.log");
        let mut cmd = match runner.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(MASTER);
                c
            }
            None => Command::new(MASTER),
        };
        let child = cmd
            .arg("-D")
            .arg("-L")
            .arg(&log)
            .arg("-M")
            .arg(dir.path("cyrus.conf"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the master: {e}"));
        Direct { child, log }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) -> bool {
        wait_until(WAIT, || self.log_text().contains(needle))
    }

    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(WAIT, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let workers = children_of(pid);
        if self.running() {
            kill(pid, Signal::SIGTERM);
            if self.wait_exit().is_none() {
                kill(pid, Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        for w in workers {
            kill(w, Signal::SIGKILL);
        }
    }
}

fn write_files(dir: &TestDir, conf: &str) {
    fs::write(dir.path("cyrus.conf"), conf).expect("write cyrus.conf");
    fs::write(
        dir.path("imapd.conf"),
        format!("configdirectory: {}\n", dir.0.display()),
    )
    .expect("write imapd.conf");
}

fn serves(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), WAIT).is_ok()
}

fn echo(name: &str, port: u16, extra: &str) -> String {
    format!("  {name} cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" {extra}\n")
}

// ----- check says what start-up does --------------------------------------------------------

#[test]
fn unknown_user_check_says_1_and_the_master_runs_the_rest() {
    let dir = TestDir::new("iso-user");
    let (good, bad) = (free_port(), free_port());
    let conf = format!(
        "SERVICES {{\n{}{}}}\n",
        echo("good", good, ""),
        echo("bad", bad, "user=no-such-user-here")
    );
    write_files(&dir, &conf);
    let (code, out) = check(&dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cyrus.conf:3:3: error: service 'bad'"),
        "{out}"
    );
    assert!(out.contains("no-such-user-here"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("down: the master would run without service bad"),
        "{out}"
    );

    let m = Start::new(&dir, &conf).start();
    let (_s, banner) = connect(good);
    assert!(banner.starts_with("* OK"), "{banner}");
    assert!(!serves(bad));
    let log = m.log_text();
    assert!(
        log.contains("cyrus.conf:3:3: error: service 'bad'"),
        "{log}"
    );
    assert!(
        log.contains("ready for work, with these down: service bad"),
        "{log}"
    );
}

#[test]
fn missing_dash_c_file_check_says_78_and_the_master_refuses() {
    let dir = TestDir::new("iso-noc");
    let conf = format!("SERVICES {{\n{}}}\n", echo("good", free_port(), ""));
    write_files(&dir, &conf);
    let missing = dir.path("no-such-imapd.conf");
    let missing = missing.to_str().expect("utf-8 path");
    let (code, out) = check_with(&[], &dir, &["-C", missing, "-u", "nobody"]);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("no-such-imapd.conf: error: cannot read"),
        "{out}"
    );

    let mut m = Direct::start(&[], &dir, &["-C", missing, "-u", "nobody"]);
    let status = m.wait_exit().expect("the master exits");
    assert_eq!(status.code(), Some(78), "{}", m.log_text());
}

#[test]
fn another_user_under_an_unprivileged_master_check_says_1_and_the_master_runs_the_rest() {
    if skip_unless(is_root(), "root (to become nobody)") {
        return;
    }
    let dir = TestDir::new("iso-unpriv");
    let (good, bad) = (free_port(), free_port());
    // Port 1 needs privilege: the master says what is needed (and retries).
    let conf = format!(
        "SERVICES {{\n{}{}{}}}\n",
        echo("good", good, ""),
        echo("bad", bad, "user=root"),
        "  low cmd=\"".to_string() + WORKER + "\" listen=\"127.0.0.1:1\"\n"
    );
    write_files(&dir, &conf);
    let (code, out) = check_with(AS_NOBODY, &dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("user=root needs a master started as root"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("down: the master would run without service bad"),
        "{out}"
    );

    let imapd = dir.path("imapd.conf");
    let mut m = Direct::start(AS_NOBODY, &dir, &["-C", imapd.to_str().expect("utf-8")]);
    assert!(m.wait_log("ready for work"), "{}", m.log_text());
    assert!(m.running());
    let (_s, banner) = connect(good);
    assert!(banner.starts_with("* OK"), "{banner}");
    let log = m.log_text();
    assert!(
        log.contains("user=root needs a master started as root"),
        "{log}"
    );
    assert!(
        log.contains("needs a master started as root or with CAP_NET_BIND_SERVICE"),
        "{log}"
    );
}

#[test]
fn program_on_the_service_path_check_agrees_with_start() {
    let dir = TestDir::new("iso-path");
    let bin = dir.path("bin");
    fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(WORKER, bin.join("echoer")).expect("symlink");
    let port = free_port();
    let conf = format!("SERVICES {{\n  echo cmd=\"echoer\" listen=\"127.0.0.1:{port}\"\n}}\n");
    write_files(&dir, &conf);
    let path = bin.to_str().expect("utf-8 path");

    let (code, out) = check(&dir, &[]);
    assert_eq!(code, 1, "without --service-path: {out}");
    assert!(
        out.contains("cannot find executable for service 'echo': echoer"),
        "{out}"
    );
    let (code, out) = check(&dir, &["--service-path", path]);
    assert_eq!(code, 0, "with --service-path: {out}");

    let m = Start::new(&dir, &conf)
        .arg("--service-path")
        .arg(path)
        .start();
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"), "{banner}\n{}", m.log_text());
}

// ----- isolation at start and at reload -------------------------------------------------

/// Debian's stock cyrus.conf enables nntp and http, whose programs come in other packages.
#[test]
fn a_missing_program_leaves_the_other_services_serving() {
    let dir = TestDir::new("iso-missing");
    let (nntp, imap) = (free_port(), free_port());
    let conf = format!(
        "SERVICES {{\n  nntp cmd=\"nntpd -U 30\" listen=\"127.0.0.1:{nntp}\" prefork=0\n{}}}\n",
        echo("imap", imap, "prefork=1")
    );
    let m = Start::new(&dir, &conf).start();
    let (_s, banner) = connect(imap);
    assert!(banner.starts_with("* OK"), "{banner}");
    assert!(!serves(nntp));
    let log = m.log_text();
    assert!(
        log.contains("cyrus.conf:2:3: error: cannot find executable for service 'nntp': nntpd"),
        "{log}"
    );
    assert!(
        log.contains("ready for work, with these down: service nntp"),
        "{log}"
    );
}

#[test]
fn a_program_gone_at_reload_keeps_the_old_generation_serving() {
    let dir = TestDir::new("iso-reload");
    let (a, b) = (free_port(), free_port());
    let conf = |a_cmd: &str| {
        format!(
            "SERVICES {{\n  a cmd=\"{a_cmd}\" listen=\"127.0.0.1:{a}\" prefork=1\n{}}}\n",
            echo("b", b, "prefork=1")
        )
    };
    let m = Start::new(&dir, &conf(WORKER)).start();
    let (_s, banner) = connect(a);
    let a_pid = banner_pid(&banner);
    drop(_s);
    let (_t, banner) = connect(b);
    let b_pid = banner_pid(&banner);
    drop(_t);

    m.rewrite_conf(&conf("/nonexistent/ringmaster-test-program"));
    m.signal(Signal::SIGHUP);
    assert!(
        wait_until(WAIT, || logged(
            &m.log_text(),
            "reload_unresolved",
            &["service=a"]
        )),
        "{}",
        m.log_text()
    );
    // b is recycled, a is not: the worker that serves a is the one from before.
    let recycled = wait_until(WAIT, || {
        let (_s, banner) = connect(b);
        banner_pid(&banner) != b_pid
    });
    assert!(recycled, "b recycled\n{}", m.log_text());
    let (_s, banner) = connect(a);
    assert_eq!(banner_pid(&banner), a_pid, "{}", m.log_text());
    let log = m.log_text();
    assert!(
        log.contains(
            "cannot find executable for service 'a': /nonexistent/ringmaster-test-program"
        ),
        "{log}"
    );
}

#[test]
fn a_syntax_error_at_reload_keeps_the_old_configuration() {
    let dir = TestDir::new("iso-syntax");
    let port = free_port();
    let m = Start::new(
        &dir,
        &format!("SERVICES {{\n{}}}\n", echo("a", port, "prefork=1")),
    )
    .start();
    m.rewrite_conf("SERVICES {\n  a cmd=\"x\" listen=\n");
    m.signal(Signal::SIGHUP);
    assert!(m.wait_log("reload rejected"), "{}", m.log_text());
    let (_s, banner) = connect(port);
    assert!(banner.starts_with("* OK"), "{banner}");
}

// ----- binds ------------------------------------------------------------------------------

#[test]
fn a_failed_bind_is_retried_and_the_ready_file_waits_for_it() {
    let dir = TestDir::new("iso-retry");
    let occupied = TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let busy = occupied.local_addr().expect("addr").port();
    let free = free_port();
    let conf = format!(
        "SERVICES {{\n{}{}}}\n",
        echo("late", busy, "prefork=1"),
        echo("early", free, "prefork=1")
    );
    let mut m = Start::new(&dir, &conf).spawn();
    assert!(
        m.wait_log("ready for work, with these down: service late"),
        "{}",
        m.log_text()
    );
    assert!(m.exited().is_none());
    let (_s, banner) = connect(free);
    assert!(banner.starts_with("* OK"), "{banner}");
    assert!(!m.ready.exists(), "no ready file while a service is down");

    drop(occupied);
    assert!(m.wait_log("late: listening on"), "{}", m.log_text());
    assert!(
        wait_until(WAIT, || logged(
            &m.log_text(),
            "service_up",
            &["service=late"]
        )),
        "{}",
        m.log_text()
    );
    let (_t, banner) = connect(busy);
    assert!(banner.starts_with("* OK"), "{banner}");
    m.wait_ready();
}

#[test]
fn bind_errors_fatal_stops_start_up_as_cyrus_does() {
    let dir = TestDir::new("iso-fatal");
    let occupied = TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let busy = occupied.local_addr().expect("addr").port();
    let conf = format!(
        "SERVICES {{\n{}{}}}\n",
        echo("late", busy, ""),
        echo("other", free_port(), "")
    );
    let mut start = Start::new(&dir, &conf);
    start.imapd_extra = "master_bind_errors_fatal: yes\n";
    let mut m = start.spawn();
    let status = m.wait_exit(WAIT).expect("the master exits");
    assert_eq!(status.code(), Some(69), "{}", m.log_text());
    assert!(
        logged(&m.log_text(), "bind_failed_fatal", &[]),
        "{}",
        m.log_text()
    );
    assert!(!m.ready.exists());
    drop(occupied);
}

#[test]
fn a_daemonized_master_returns_0_once_started_even_with_a_service_down() {
    let dir = TestDir::new("iso-daemon");
    let occupied = TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let busy = occupied.local_addr().expect("addr").port();
    let free = free_port();
    let conf = format!(
        "SERVICES {{\n{}{}}}\n",
        echo("late", busy, ""),
        echo("early", free, "")
    );
    write_files(&dir, &conf);
    let (pidfile, ready, log) = (
        dir.path("master.pid"),
        dir.path("master.ready"),
        dir.path("master.log"),
    );
    let mut cmd = Command::new(MASTER);
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
        .arg(&log)
        .stdin(Stdio::null());
    if is_root() {
        cmd.arg("-u").arg("nobody");
    }
    let mut parent = cmd.spawn().expect("run ringmaster -d");
    let mut status = None;
    wait_until(WAIT, || {
        status = parent.try_wait().ok().flatten();
        status.is_some()
    });
    let daemon: Option<i32> = read_to_string(&pidfile).trim().parse().ok();
    let ready_then = ready.exists();
    let (_s, banner) = connect(free);
    if let Some(pid) = daemon {
        kill(pid, Signal::SIGTERM);
        wait_until(WAIT, || matches!(state_of(pid), None | Some('Z')));
    }
    if status.is_none() {
        let _ = parent.kill();
        let _ = parent.wait();
    }
    drop(occupied);
    let text = read_to_string(&log);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{text}");
    assert!(daemon.is_some(), "{text}");
    assert!(!ready_then, "no ready file while a service is down: {text}");
    assert!(banner.starts_with("* OK"), "{banner}");
    assert!(
        text.contains("ready for work, with these down: service late"),
        "{text}"
    );
}
