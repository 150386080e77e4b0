//! Debian's real Cyrus IMAP 3.6.1 under ringmaster: a complete instance in a temp dir (imapd,
//! pop3d, lmtpd, timsieved, notifyd, ctl_cyrusdb as START and EVENT), real sessions over IMAP,
//! LMTP, POP3 and ManageSieve, a SIGHUP reload of imapd.conf under an open session with no
//! connection failing, and crashed workers reaped, replaced and cleaned up after.
//!
//! Needs root and Debian's cyrus-common, cyrus-imapd, cyrus-pop3d and sasl2-bin: skipped with a
//! reason without them, except under CI=true, where they must run. Everything listens on
//! 127.0.0.1 or on unix sockets in the temp dir. Set `RINGMASTER_INTEROP_MASTER` to another
//! master taking Cyrus's flags (e.g. `/usr/lib/cyrus/bin/master`) to run the same scenarios
//! under it, for comparison: Debian's 3.6.1 master is expected to fail the crash clean-up.

mod common;
mod cyrus;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use cyrus::*;
use nix::sys::signal::Signal;

#[test]
fn debian_cyrus_serves_imap_lmtp_pop3_and_sieve() {
    let Some(mut cyrus) = instance("cyrus-serve") else {
        return;
    };

    // START ran, to the end, before any service listened.
    let probe = read_to_string(&cyrus.path("start-probe.out"));
    assert_eq!(probe.trim(), "before-services", "{}", cyrus.diagnostics());
    // The checkpoint EVENT ran once at start-up: ctl_cyrusdb -c archives into db.backup1.
    assert!(
        wait_until(WAIT, || cyrus.path("db.backup1").is_dir()),
        "the checkpoint event did not run at start-up\n{}",
        cyrus.diagnostics()
    );

    // Every worker runs as cyrus; notifyd waits on its unix datagram socket.
    workers_run_as_cyrus(&mut cyrus);

    // The greeting names the servername of imapd.conf.
    let first = Imap::connect(cyrus.imap).expect("connect");
    assert!(first.greeting.contains(BEFORE), "{}", first.greeting);
    drop(first);

    cyrus.create_alice();
    cyrus.deliver_to_alice();

    // alice reads it over IMAP...
    let mut imap = Imap::connect(cyrus.imap).expect("alice connects");
    imap.login(ALICE).expect("alice logs in");
    let select = imap.ok("SELECT INBOX").expect("SELECT INBOX");
    assert!(select.iter().any(|l| l == "* 1 EXISTS"), "{select:?}");
    let fetch = imap
        .ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .expect("FETCH");
    assert!(
        fetch.iter().any(|l| l == &format!("Subject: {SUBJECT}")),
        "{fetch:?}"
    );
    imap.logout().expect("alice logs out");

    // ...and over POP3.
    alice_reads_over_pop3(&cyrus);

    // timsieved answers with its capabilities, then OK.
    let mut sieve = Lines::tcp(cyrus.sieve).expect("connect to sieve");
    let banner = sieve.line().expect("sieve banner");
    assert!(banner.starts_with("\"IMPLEMENTATION\""), "{banner}");
    let mut last = banner;
    for _ in 0..50 {
        if last.starts_with("OK") {
            break;
        }
        last = sieve.line().expect("sieve capability");
    }
    assert!(last.starts_with("OK"), "sieve: {last}");
    drop(sieve);

    assert!(
        cyrus.master.stop().is_some(),
        "master did not stop\n{}",
        cyrus.master.log_text()
    );
}

fn workers_run_as_cyrus(cyrus: &mut Cyrus) {
    let cyrus_uid = nix::unistd::User::from_name("cyrus")
        .ok()
        .flatten()
        .expect("user cyrus")
        .uid
        .as_raw();
    let mut notifyd = vec![];
    assert!(
        wait_until(WAIT, || {
            notifyd = cyrus.workers("notifyd");
            notifyd.len() == 1
        }),
        "notifyd not running\n{}",
        cyrus.diagnostics()
    );
    let imapd = cyrus.workers("imapd");
    assert!(
        !imapd.is_empty(),
        "no preforked imapd\n{}",
        cyrus.diagnostics()
    );
    for pid in imapd.iter().chain(&notifyd) {
        assert_eq!(uid_of(*pid), Some(cyrus_uid), "worker {pid} is not cyrus");
    }
    assert!(cyrus.path("socket/notify").exists());
}

fn alice_reads_over_pop3(cyrus: &Cyrus) {
    let mut pop = Lines::tcp(cyrus.pop3).expect("connect to POP3");
    let greeting = pop.line().expect("POP3 greeting");
    assert!(
        greeting.starts_with("+OK") && greeting.contains(BEFORE),
        "{greeting}"
    );
    for command in [format!("USER {}", ALICE.0), format!("PASS {}", ALICE.1)] {
        pop.send(&command).expect("send");
        let reply = pop.line().expect("POP3 reply");
        assert!(reply.starts_with("+OK"), "POP3 {command}: {reply}");
    }
    pop.send("STAT").expect("send");
    let stat = pop.line().expect("STAT");
    assert!(stat.starts_with("+OK 1 "), "STAT: {stat}");
    pop.send("RETR 1").expect("send");
    let mut message = vec![pop.line().expect("RETR")];
    assert!(message[0].starts_with("+OK"), "RETR: {message:?}");
    loop {
        let line = pop.line().expect("message line");
        if line == "." {
            break;
        }
        message.push(line);
    }
    assert!(
        message.contains(&format!("Subject: {SUBJECT}")) && message.contains(&"body line".into()),
        "{message:?}"
    );
    pop.send("QUIT").expect("send");
    assert!(pop.line().expect("QUIT").starts_with("+OK"));
}

/// What the connection loop saw across the reload.
#[derive(Default, Debug)]
struct LoopReport {
    ok_before: u32,
    ok_after: u32,
    failures: Vec<String>,
}

/// Connects again and again until `stop`: greeting, LOGOUT; counts what it saw.
fn connection_loop(port: u16, stop: Arc<AtomicBool>) -> LoopReport {
    let mut report = LoopReport::default();
    while !stop.load(Ordering::SeqCst) {
        let result = Imap::connect(port).and_then(|mut imap| {
            imap.logout()?;
            Ok(imap.greeting)
        });
        match result {
            Ok(greeting) if greeting.contains(AFTER) => report.ok_after += 1,
            Ok(_) => report.ok_before += 1,
            Err(e) => report.failures.push(e),
        }
        thread::sleep(Duration::from_millis(5));
    }
    report
}

#[test]
fn sighup_reload_reaches_new_sessions_and_drops_nothing() {
    let Some(mut cyrus) = instance("cyrus-reload") else {
        return;
    };
    cyrus.create_alice();

    // An open, logged-in, idle session on the old configuration.
    let mut old = Imap::connect(cyrus.imap).expect("connect");
    assert!(old.greeting.contains(BEFORE), "{}", old.greeting);
    old.login(ALICE).expect("login");
    old.ok("SELECT INBOX").expect("SELECT");
    let old_pid = cyrus.session_pid(ALICE.0);

    // Clients connect in loops, three at a time, all through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let loopers: Vec<_> = (0..3)
        .map(|_| {
            let (port, stop) = (cyrus.imap, stop.clone());
            thread::spawn(move || connection_loop(port, stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(300));

    cyrus.set_servername(AFTER);
    cyrus.master.signal(Signal::SIGHUP);

    // New sessions show the new servername, soon...
    let mut last = String::new();
    let reloaded = wait_until(WAIT, || {
        last = Imap::connect(cyrus.imap)
            .map(|i| i.greeting)
            .unwrap_or_else(|e| e);
        last.contains(AFTER)
    });
    assert!(
        reloaded,
        "never saw {AFTER}: {last}\n{}",
        cyrus.diagnostics()
    );
    // ...and from then on, every one of them, and they work.
    for _ in 0..10 {
        let mut fresh = Imap::connect(cyrus.imap).expect("connect after reload");
        assert!(fresh.greeting.contains(AFTER), "{}", fresh.greeting);
        fresh.login(ALICE).expect("login after reload");
        fresh.logout().expect("logout after reload");
    }

    // The old session kept its worker and still works, until LOGOUT.
    old.ok("NOOP")
        .expect("NOOP on the old session after the reload");
    old.ok("SELECT INBOX")
        .expect("SELECT on the old session after the reload");
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut report = LoopReport::default();
    for looper in loopers {
        let one = looper.join().expect("connection loop");
        report.ok_before += one.ok_before;
        report.ok_after += one.ok_after;
        report.failures.extend(one.failures);
    }

    old.logout().expect("LOGOUT on the old session");
    drop(old);
    // Its worker, told to recycle, exits once its client has gone.
    assert!(
        wait_until(WAIT, || state_of(old_pid).is_none()),
        "old imapd {old_pid} still alive after its client left\n{}",
        cyrus.diagnostics()
    );

    eprintln!("connection loop across the reload: {report:?}");
    assert!(
        report.failures.is_empty(),
        "{} connections failed across the reload: {:?}\n{}",
        report.failures.len(),
        report.failures,
        cyrus.diagnostics()
    );
    assert!(
        report.ok_before > 0 && report.ok_after > 0,
        "the loop did not run on both sides of the reload: {report:?}"
    );
    cyrus.master.stop();
}

#[test]
fn crashed_imapd_is_reaped_replaced_and_cleaned_up() {
    let Some(mut cyrus) = instance("cyrus-crash") else {
        return;
    };
    cyrus.create_alice();

    // A logged-in worker...
    let mut session = Imap::connect(cyrus.imap).expect("connect");
    session.login(ALICE).expect("login");
    session.ok("SELECT INBOX").expect("SELECT");
    let busy = cyrus.session_pid(ALICE.0);
    // ...and an idle one (prefork=1 replaces the one that took the session).
    let mut idle = 0;
    let found = wait_until(WAIT, || {
        idle = cyrus
            .workers("imapd")
            .into_iter()
            .find(|&p| p != busy && cyrus.idle_socket(p).exists())
            .unwrap_or(0);
        idle != 0
    });
    assert!(found, "no idle imapd\n{}", cyrus.diagnostics());
    assert!(cyrus.proc_file(busy).exists());
    assert!(cyrus.idle_socket(busy).exists());

    kill(busy, Signal::SIGSEGV);
    kill(idle, Signal::SIGSEGV);

    // Both are reaped (no zombie left)...
    for pid in [busy, idle] {
        assert!(
            wait_until(WAIT, || state_of(pid).is_none()),
            "crashed imapd {pid} not reaped\n{}",
            cyrus.diagnostics()
        );
    }
    // ...their per-process files are removed...
    for path in [
        cyrus.proc_file(busy),
        cyrus.idle_socket(busy),
        cyrus.idle_socket(idle),
    ] {
        assert!(
            wait_until(WAIT, || !path.exists()),
            "{} left behind by a crashed imapd\n{}",
            path.display(),
            cyrus.diagnostics()
        );
    }
    // ...and the crashes are logged (Cyrus's own master logs to syslog instead).
    if !cyrus.reference {
        for pid in [busy, idle] {
            assert!(
                cyrus
                    .master
                    .wait_logged("worker_crashed", &[&format!("pid={pid}")]),
                "crash of {pid} not logged\n{}",
                cyrus.master.log_text()
            );
        }
    }

    // The client of the crashed worker sees its connection end.
    assert!(session.command("NOOP").is_err());
    // A worker is ready again, and new sessions work.
    assert!(
        wait_until(WAIT, || cyrus
            .workers("imapd")
            .iter()
            .any(|&p| p != busy && p != idle)),
        "crashed imapd not replaced\n{}",
        cyrus.diagnostics()
    );
    let mut fresh = Imap::connect(cyrus.imap).expect("connect after the crash");
    fresh.login(ALICE).expect("login after the crash");
    fresh.ok("SELECT INBOX").expect("SELECT after the crash");
    fresh.logout().expect("logout after the crash");
    cyrus.master.stop();
}

#[test]
fn crash_cleanup_removes_a_half_written_proc_file() {
    let Some(mut cyrus) = instance("cyrus-procnew") else {
        return;
    };
    cyrus.create_alice();
    let mut session = Imap::connect(cyrus.imap).expect("connect");
    session.login(ALICE).expect("login");
    let busy = cyrus.session_pid(ALICE.0);
    // Cyrus 3.6.1 (imap/proc.c) writes `<proc_path>/<pid>.new`, then renames it to
    // `<proc_path>/<pid>`: a crash between the two leaves the .new file. Stand one in.
    let new = cyrus.proc_file_new(busy);
    fs::write(&new, "imap\tlocalhost [127.0.0.1]\talice\t\t\n").expect("write .new");
    kill(busy, Signal::SIGSEGV);
    assert!(
        wait_until(WAIT, || state_of(busy).is_none()),
        "crashed imapd {busy} not reaped\n{}",
        cyrus.diagnostics()
    );
    for path in [cyrus.proc_file(busy), new] {
        assert!(
            wait_until(WAIT, || !path.exists()),
            "{} left behind by a crashed imapd\n{}",
            path.display(),
            cyrus.diagnostics()
        );
    }
    drop(session);
    cyrus.master.stop();
}
