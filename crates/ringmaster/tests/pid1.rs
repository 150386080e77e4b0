//! ringmaster as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`), as in a
//! container: it reaps the orphans a double-forking worker leaves (no zombie remains), stops
//! on SIGTERM, SIGINT and SIGQUIT, from outside the namespace and from inside, and exits 0.

mod common;

use std::fs;
use std::process::{Child, Command, ExitStatus, Stdio};

use common::*;
use nix::sys::signal::Signal;

/// The worker: two grandchildren orphaned at once (one in a session of its own), each living
/// a moment, then the worker itself waits to be stopped. Markers in argv find them in /proc.
const WORKER_SCRIPT: &str = "#!/bin/sh\n\
    ( sleep 0.61 & )\n\
    ( setsid sleep 0.62 & )\n\
    exec sleep 3600\n";

/// The master of a namespace, by its host pid, and the `unshare` that waits for it.
struct Pid1 {
    unshare: Child,
    master: i32,
    log: std::path::PathBuf,
}

impl Pid1 {
    /// Starts `unshare ... ringmaster -D` on a config with one double-forking worker; waits
    /// until it is PID 1 of its namespace and ready.
    fn start(dir: &TestDir) -> Pid1 {
        let script = dir.path("double-fork.sh");
        fs::write(&script, WORKER_SCRIPT).unwrap();
        let _ = Command::new("chmod").arg("0755").arg(&script).status();
        let conf = dir.path("cyrus.conf");
        fs::write(
            &conf,
            format!(
                "SERVICES {{\n  df cmd=\"{}\" listen=127.0.0.1:{} prefork=1 maxchild=1\n}}\n",
                script.display(),
                free_port()
            ),
        )
        .unwrap();
        let imapd = dir.path("imapd.conf");
        fs::write(&imapd, format!("configdirectory: {}\n", dir.0.display())).unwrap();
        let log = dir.path("master.log");
        let ready = dir.path("master.ready");
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", MASTER, "-D", "-v"])
            .args(["-u", "nobody", "-M"])
            .arg(&conf)
            .arg("-C")
            .arg(&imapd)
            .arg("-r")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn unshare");
        let host = unshare.id() as i32;
        let mut master = 0;
        wait_until(WAIT, || {
            master = children_of(host).into_iter().next().unwrap_or(0);
            master != 0
        });
        let mut pid1 = Pid1 {
            unshare,
            master,
            log,
        };
        assert!(master != 0, "no master under unshare: {}", pid1.log_text());
        assert!(
            wait_until(WAIT, || ready.exists()),
            "not ready: {}",
            pid1.log_text()
        );
        assert_eq!(pid1.namespace_pid(), Some(1), "{}", pid1.log_text());
        assert!(pid1.unshare.try_wait().unwrap().is_none());
        pid1
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The master's pid inside its namespace (the last field of NSpid).
    fn namespace_pid(&self) -> Option<i32> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.master)).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        line.split_whitespace().last()?.parse().ok()
    }

    /// Children of the master that are zombies: what PID 1 must never leave.
    fn zombies(&self) -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&p| ppid_of(p) == Some(self.master) && state_of(p) == Some('Z'))
            .collect()
    }

    /// Waits for the exit of `unshare`, which exits with the master's status.
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(WAIT, || {
            status = self.unshare.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        // PID 1's death takes the whole namespace with it.
        if self.unshare.try_wait().ok().flatten().is_none() {
            kill(self.master, Signal::SIGKILL);
            let _ = self.unshare.wait();
        }
    }
}

fn can_unshare() -> bool {
    is_root()
        && Command::new("unshare")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Waits until the master has adopted both orphans, then until they are gone: reaped, not
/// left as zombies.
fn assert_orphans_reaped(pid1: &Pid1) {
    let orphans = |pid1: &Pid1| -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&p| {
                ppid_of(p) == Some(pid1.master)
                    && fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("0.61") || c.contains("0.62")
                    })
            })
            .collect()
    };
    let mut adopted = Vec::new();
    let seen = wait_until(WAIT, || {
        for p in orphans(pid1) {
            if !adopted.contains(&p) {
                adopted.push(p);
            }
        }
        adopted.len() == 2
    });
    assert!(
        seen,
        "orphans not adopted ({adopted:?}): {}",
        pid1.log_text()
    );
    let gone = wait_until(WAIT, || {
        adopted
            .iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    });
    assert!(
        gone,
        "orphans {adopted:?} left: zombies {:?}\n{}",
        pid1.zombies(),
        pid1.log_text()
    );
    assert!(
        wait_until(WAIT, || pid1.zombies().is_empty()),
        "zombies {:?}",
        pid1.zombies()
    );
}

fn assert_exits_zero(pid1: &mut Pid1, signal: &str) {
    let status = pid1.wait_exit();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "after {signal}: {status:?}\n{}",
        pid1.log_text()
    );
    assert!(pid1.log_text().contains("exiting with status 0"));
}

#[test]
fn pid1_reaps_every_orphan_and_exits_0_on_sigterm() {
    if skip_unless(can_unshare(), "root and unshare(1) for a PID namespace") {
        return;
    }
    let dir = TestDir::new("pid1-term");
    let mut pid1 = Pid1::start(&dir);
    assert_orphans_reaped(&pid1);
    kill(pid1.master, Signal::SIGTERM);
    assert_exits_zero(&mut pid1, "SIGTERM");
}

#[test]
fn pid1_exits_0_on_sigint() {
    if skip_unless(can_unshare(), "root and unshare(1) for a PID namespace") {
        return;
    }
    let dir = TestDir::new("pid1-int");
    let mut pid1 = Pid1::start(&dir);
    kill(pid1.master, Signal::SIGINT);
    assert_exits_zero(&mut pid1, "SIGINT");
}

/// SIGQUIT sent from inside the namespace (`kill -QUIT 1`, as `docker stop` or a shell in the
/// container would): the kernel drops signals to a namespace's init that it has no handler
/// for, unless they are blocked, which is how the master reads them.
#[test]
fn pid1_stops_gracefully_on_sigquit_from_inside_its_namespace() {
    if skip_unless(can_unshare(), "root and unshare(1) for a PID namespace") {
        return;
    }
    let dir = TestDir::new("pid1-quit");
    let mut pid1 = Pid1::start(&dir);
    let target = pid1.master.to_string();
    // Its status says little: the shell is in the namespace, and dies with PID 1 if the
    // master is quicker than the shell's exit. The master's log and status say it all.
    let _ = Command::new("nsenter")
        .args(["--target", &target, "--pid", "--mount", "--", "sh", "-c"])
        .arg("kill -QUIT 1")
        .status()
        .expect("run nsenter");
    assert_exits_zero(&mut pid1, "SIGQUIT");
    assert!(pid1.log_text().contains("SIGQUIT"), "{}", pid1.log_text());
}
