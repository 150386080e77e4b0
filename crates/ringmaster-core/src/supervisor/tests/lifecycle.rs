//! Start-up, stop, daemons and events.

use super::*;

#[test]
fn start_commands_run_in_order_and_failure_stops() {
    let mut c = config(vec![service("imap", 143, 1, None)]);
    for name in ["recover", "prune"] {
        c.start.push(StartEntry {
            name: name.into(),
            cmd: cmd(name),
            run_as: RunAs::default(),
            location: Location::default(),
        });
    }
    let mut h = Harness::booted(c.clone());
    assert_eq!(h.spawned.len(), 1);
    let first = h.spawned[0].0;
    h.exit(first, ExitStatus::Code(0));
    assert_eq!(h.spawned.len(), 2);
    assert_eq!(h.spawned[1].1.name, "prune");
    assert!(!h.ready);
    let second = h.spawned[1].0;
    h.exit(second, ExitStatus::Code(0));
    assert!(h.ready);

    let mut h = Harness::booted(c);
    let first = h.spawned[0].0;
    h.exit(first, ExitStatus::Code(1));
    assert_eq!(h.exit, Some(EXIT_START_FAILED));
    assert_eq!(h.spawned.len(), 1, "the second START never runs");
}

#[test]
fn wait_daemons_gate_services() {
    let mut c = config(vec![service("imap", 143, 1, None)]);
    c.daemons.push(DaemonEntry {
        wait: true,
        ..daemon("idled", "idled")
    });
    let mut h = Harness::booted(c);
    assert!(!h.ready);
    assert!(h.workers_of("imap").is_empty());
    h.feed(Input::DaemonReady {
        name: "idled".into(),
    });
    assert!(h.ready);
    assert_eq!(h.workers_of("imap").len(), 1);
    let ready = h.logged(LogEvent::DaemonReady);
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].field(Field::Entry), Some("idled"));
}

#[test]
fn daemons_restart_with_backoff() {
    let mut c = config(vec![]);
    c.daemons.push(daemon("notifier", "notifier"));
    let mut h = Harness::booted(c);
    assert_eq!(h.spawned.len(), 1);
    let pid = h.spawned[0].0;
    h.exit(pid, ExitStatus::Code(1));
    assert_eq!(h.spawned.len(), 1, "not at once after a quick death");
    h.advance(Duration::from_millis(2100));
    assert_eq!(h.spawned.len(), 2);
    assert_eq!(
        h.spawned[1]
            .1
            .env
            .iter()
            .find(|(k, _)| k == "CYRUS_ISDAEMON")
            .map(|(_, v)| v.as_str()),
        Some("1")
    );
}

#[test]
fn events_fire_on_schedule() {
    let mut c = config(vec![]);
    c.events.push(EventEntry {
        name: "checkpoint".into(),
        cmd: cmd("ctl_cyrusdb -c"),
        schedule: Schedule::Period { minutes: 30 },
        run_as: RunAs::default(),
        location: Location::default(),
    });
    c.events.push(EventEntry {
        name: "prune".into(),
        cmd: cmd("expire"),
        schedule: Schedule::Daily(crate::config::TimeOfDay {
            hour: 23,
            minute: 0,
        }),
        run_as: RunAs::default(),
        location: Location::default(),
    });
    let mut h = Harness::booted(c);
    let count = |h: &Harness, name: &str| h.spawned.iter().filter(|(_, r)| r.name == name).count();
    assert_eq!(count(&h, "checkpoint"), 1, "periodic events run at start");
    assert_eq!(count(&h, "prune"), 0);
    // 22:49:23 -> 23:00:00 is 637 s away.
    h.advance(Duration::from_secs(636));
    assert_eq!(count(&h, "prune"), 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(count(&h, "prune"), 1);
    h.advance(Duration::from_secs(30 * 60));
    assert_eq!(count(&h, "checkpoint"), 2);
    assert_eq!(count(&h, "prune"), 1);
}

#[test]
fn stop_terms_then_kills_and_exits() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    let workers = h.workers_of("imap");
    h.feed(Input::Stop { graceful: false });
    for &pid in &workers {
        assert_eq!(h.signals_to(pid), vec![Sig::Term]);
    }
    assert_eq!(h.logged(LogEvent::StopRequested).len(), 1);
    h.exit(workers[0], ExitStatus::Code(75));
    assert_eq!(h.exit, None);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.signals_to(workers[1]), vec![Sig::Term, Sig::Kill]);
    let killed = h.logged(LogEvent::KillStragglers);
    assert_eq!(killed.len(), 1);
    assert_eq!(
        killed[0].field(Field::Pid),
        Some(workers[1].to_string().as_str())
    );
    h.exit(
        workers[1],
        ExitStatus::Signal {
            signal: 9,
            core: false,
        },
    );
    assert_eq!(h.exit, Some(0));
    assert_eq!(
        h.workers_of("imap").len(),
        0,
        "nothing forked while stopping"
    );
}

#[test]
fn graceful_stop_lets_clients_finish() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let w = h.workers_of("imap")[0];
    h.note(w, Message::Connection);
    let spare = h.workers_of("imap")[1];
    h.feed(Input::Stop { graceful: true });
    assert_eq!(h.signals_to(w), vec![Sig::Hup]);
    assert_eq!(h.signals_to(spare), vec![Sig::Hup]);
    h.exit(spare, ExitStatus::Code(0));
    assert_eq!(h.exit, None);
    h.exit(w, ExitStatus::Code(0));
    assert_eq!(h.exit, Some(0));
}

#[test]
fn a_daemon_removed_then_added_back_before_it_ends_starts_again() {
    let daemon = |cmdline: &str| daemon("notifier", cmdline);
    let mut c = config(vec![]);
    c.daemons.push(daemon("notifier"));
    let mut h = Harness::booted(c);
    let pid = h.spawned[0].0;
    h.pending_config = Some(config(vec![]));
    h.feed(Input::ReloadRequested);
    assert_eq!(h.signals_to(pid), vec![Sig::Term]);
    // Added back (with another command) while it is still on its way out.
    let mut back = config(vec![]);
    back.daemons.push(daemon("notifier -v"));
    h.pending_config = Some(back);
    h.feed(Input::ReloadRequested);
    assert_eq!(h.signals_to(pid), vec![Sig::Term], "SIGTERM once is enough");
    h.exit(pid, ExitStatus::Code(0));
    assert_eq!(h.spawned.len(), 2, "started again at once");
    assert_eq!(h.spawned[1].1.argv, vec!["notifier", "-v"]);
    assert!(h.sup.children().contains(&h.spawned[1].0));
}

#[test]
fn a_daemon_that_ignores_a_reloads_sigterm_is_killed_and_leaves_no_deadline_in_the_past() {
    let mut c = config(vec![]);
    c.daemons.push(daemon("notifier", "notifier"));
    let mut h = Harness::booted(c.clone());
    let pid = h.spawned[0].0;
    h.pending_config = Some(c);
    h.feed(Input::ReloadRequested);
    assert_eq!(h.signals_to(pid), vec![Sig::Term]);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.signals_to(pid), vec![Sig::Term, Sig::Kill]);
    let killed = h.logged(LogEvent::DaemonKilled);
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0].field(Field::Entry), Some("notifier"));
    assert!(h.sup.next_deadline().is_none_or(|d| d > h.now.mono));
    h.advance(Duration::from_secs(6));
    assert_eq!(h.signals_to(pid), vec![Sig::Term, Sig::Kill], "killed once");
    h.exit(
        pid,
        ExitStatus::Signal {
            signal: 9,
            core: false,
        },
    );
    assert_eq!(h.spawned.len(), 2, "its replacement starts at once");
}

#[test]
fn a_held_worker_at_sigterm_leaves_no_deadline_in_the_past() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let old = h.workers_of("imap")[0];
    h.note(old, Message::Available);
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    h.feed(Input::ReloadRequested);
    assert!(h.signals_to(old).is_empty());
    h.feed(Input::Stop { graceful: false });
    h.advance(Duration::from_secs(3));
    let d = h.sup.next_deadline();
    assert!(
        d.is_some_and(|d| d > h.now.mono),
        "deadline in the past: busy loop"
    );
}

#[test]
fn a_daemon_death_while_waiting_for_a_wait_daemon_leaves_no_deadline_in_the_past() {
    let mut c = config(vec![]);
    for (name, wait) in [("idled", true), ("notifier", false)] {
        c.daemons.push(DaemonEntry {
            wait,
            ..daemon(name, name)
        });
    }
    let mut h = Harness::booted(c);
    let notifier = h
        .spawned
        .iter()
        .find(|(_, r)| r.name == "notifier")
        .map(|(p, _)| *p)
        .unwrap();
    h.exit(notifier, ExitStatus::Code(1));
    h.advance(Duration::from_secs(3));
    let d = h.sup.next_deadline();
    assert!(d.is_none_or(|d| d > h.now.mono));
}

#[test]
fn a_wait_daemons_ready_line_is_judged_on_its_bytes() {
    assert_eq!(readiness(b"", false), Readiness::Waiting);
    assert_eq!(readiness(b"ok\r", false), Readiness::Waiting);
    assert_eq!(readiness(b"ok\r\n", false), Readiness::Ready);
    assert_eq!(readiness(b"ok\r\nmore", true), Readiness::Ready);
    let Readiness::NotReady(reason) = readiness(b"ok", true) else {
        panic!("end of file before the line is no")
    };
    assert!(reason.ends_with("got \"ok\" and end of file"), "{reason}");
    let Readiness::NotReady(reason) = readiness(&[b'x'; 100], false) else {
        panic!("garbage is no")
    };
    assert!(
        reason.contains(&format!("{}\"...", "x".repeat(32))),
        "{reason}"
    );
}
