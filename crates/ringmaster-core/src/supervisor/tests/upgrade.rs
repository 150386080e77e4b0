//! Export and adoption across a binary upgrade.

use super::*;

fn full_config() -> Config {
    let mut c = config(vec![service("imap", 143, 2, Some(10))]);
    c.daemons.push(daemon("notifier", "notifier"));
    c.events.push(EventEntry {
        name: "checkpoint".into(),
        cmd: cmd("ctl_cyrusdb -c"),
        schedule: Schedule::Period { minutes: 30 },
        run_as: RunAs::default(),
        location: Location::default(),
    });
    c
}

/// `h`'s supervisor replaced by one adopted from its own export.
fn adopt_in_place(h: &mut Harness) -> Vec<Action> {
    let state = h.sup.export_state(h.now.mono);
    let (sup, actions) = Supervisor::adopt(
        h.sup.config().clone(),
        h.sup.settings.clone(),
        utc,
        state,
        h.now,
    )
    .expect("adopted");
    h.sup = sup;
    actions
}

#[test]
fn an_adopted_supervisor_exports_the_same_state_and_forks_nothing() {
    let mut h = Harness::booted(full_config());
    h.advance(Duration::from_secs(3));
    let workers = h.workers_of("imap");
    h.note(workers[0], Message::Connection);
    h.note(workers[1], Message::Available);
    let before = h.sup.export_state(h.now.mono);
    assert!(before.daemons[0].pid.is_some());
    assert_eq!(
        before.workers.len(),
        3,
        "two preforked and the busy one's replacement"
    );
    let actions = adopt_in_place(&mut h);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Spawn(_))),
        "{actions:?}"
    );
    h.sup.check_invariants();
    assert_eq!(h.sup.export_state(h.now.mono), before);
    // The adopted supervisor goes on: the exit of a worker forked before is its own.
    h.exit(workers[0], ExitStatus::Code(0));
    h.sup.check_invariants();
    assert!(!h.workers_of("imap").contains(&workers[0]));
    assert_eq!(
        h.sup.status().pools[0].counters.exits(ExitReason::Normal),
        1
    );
}

#[test]
fn an_upgrade_waits_for_a_reload_and_refuses_while_stopping() {
    let mut h = Harness::booted(full_config());
    assert_eq!(h.sup.upgrade_blocker(), None);
    h.sup.reload.pending = true;
    assert!(h.sup.upgrade_blocker().is_some());
    h.sup.reload.pending = false;
    // A reload applied and settling (its old workers being retired) is still in progress.
    let daemon = h.sup.export_state(h.now.mono).daemons[0]
        .pid
        .expect("a daemon");
    h.pending_config = Some(full_config());
    h.feed(Input::ReloadRequested);
    assert!(h.sup.reload.settling);
    assert_eq!(
        h.sup.upgrade_blocker().as_deref(),
        Some("a reload is in progress")
    );
    h.advance(Duration::from_secs(3));
    h.feed(Input::Tick);
    // The reload restarts the daemon: not before it has exited and started again.
    assert_eq!(
        h.sup.upgrade_blocker().as_deref(),
        Some("a daemon is being stopped or replaced")
    );
    h.exit(
        daemon,
        ExitStatus::Signal {
            signal: 15,
            core: false,
        },
    );
    h.advance(Duration::from_secs(1));
    h.feed(Input::Tick);
    assert_eq!(h.sup.upgrade_blocker(), None, "settled");
    h.feed(Input::Stop { graceful: true });
    assert_eq!(
        h.sup.upgrade_blocker().as_deref(),
        Some("the master is stopping")
    );
}

#[test]
fn a_state_naming_a_service_the_configuration_lacks_is_refused() {
    let h = Harness::booted(full_config());
    let mut state = h.sup.export_state(h.now.mono);
    state.services[0].name = "pop3".into();
    let adopted = Supervisor::adopt(
        h.sup.config().clone(),
        h.sup.settings.clone(),
        utc,
        state,
        h.now,
    );
    assert!(adopted.is_err());
}

#[test]
fn a_throttled_pool_stays_paused_and_resumes_on_time_after_adoption() {
    let mut h = Harness::booted(full_config());
    for _ in 0..8 {
        if let Some(&pid) = h.workers_of("imap").first() {
            h.exit(pid, ExitStatus::Code(1));
        }
    }
    assert!(!h.paused.is_empty(), "the pool is throttled");
    let before = h.sup.export_state(h.now.mono);
    assert!(before.services[0].pools[0].throttled_ms.is_some());
    let actions = adopt_in_place(&mut h);
    assert!(!actions.iter().any(|a| matches!(a, Action::Spawn(_))));
    assert_eq!(h.sup.export_state(h.now.mono), before);
    let until = h.sup.next_deadline().expect("the throttle's end");
    h.advance(until - h.now.mono);
    h.feed(Input::Tick);
    assert!(h.paused.is_empty(), "resumed after the pause");
}
