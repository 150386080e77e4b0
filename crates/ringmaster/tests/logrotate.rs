//! SIGUSR1 reopens the `-L` log file, as logrotate's `postrotate` needs (no copytruncate):
//! after the file is renamed and the signal sent, new lines land in a new file at the path.

mod common;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn sigusr1_reopens_the_log_file() {
    let dir = TestDir::new("logrotate");
    let port = free_port();
    let log = dir.path("ringmaster.log");
    let conf =
        format!("SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{port}\" prefork=1\n}}\n");
    let mut m = Start::new(&dir, &conf)
        .arg("-L")
        .arg(&log.display().to_string())
        .start();
    assert!(wait_until(WAIT, || read_to_string(&log).contains("ready for work")));

    let rotated = dir.path("ringmaster.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    m.signal(Signal::SIGUSR1);
    assert!(
        wait_until(WAIT, || read_to_string(&log).contains("reopened")),
        "no new log file; old one:\n{}",
        read_to_string(&rotated)
    );
    // Lines after the reopen go to the new file only.
    m.signal(Signal::SIGHUP);
    assert!(wait_until(WAIT, || read_to_string(&log)
        .contains("SIGHUP: reload requested")));
    assert!(!read_to_string(&rotated).contains("reload requested"));
    assert!(read_to_string(&rotated).contains("SIGUSR1: reopening the log file"));

    // A path that cannot be opened: the master says so, in the file it keeps writing.
    let second = dir.path("ringmaster.log.2");
    std::fs::rename(&log, &second).expect("rotate again");
    std::fs::create_dir(&log).expect("a directory in the way");
    m.signal(Signal::SIGUSR1);
    assert!(
        wait_until(WAIT, || read_to_string(&second)
            .contains("cannot reopen log file")),
        "no complaint:\n{}",
        read_to_string(&second)
    );
    assert!(m.exited().is_none());
    m.stop();
}
