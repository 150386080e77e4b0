//! Tests of `Supervisor::plan`: the dry run of a reload says what the reload then does.

use super::*;

fn event(name: &str, minutes: u32) -> EventEntry {
    EventEntry {
        name: name.into(),
        cmd: cmd("ctl_cyrusdb -c"),
        schedule: Schedule::Period { minutes },
        run_as: RunAs::default(),
        location: Location::default(),
    }
}

fn change_of(plan: &ReloadPlan, name: &str) -> (ServiceChange, u32) {
    let s = plan.services.iter().find(|s| s.name == name).expect(name);
    (s.change, s.recycle)
}

#[test]
fn services_are_kept_rebound_added_and_removed_as_a_reload_would() {
    let mut old = config(vec![
        service("imap", 143, 2, None),
        service("pop3", 110, 1, None),
        service("lmtp", 24, 1, None),
    ]);
    old.events.push(event("checkpoint", 30));
    old.events.push(event("prune", 60));
    old.daemons.push(daemon("idled", "idled"));
    let mut h = Harness::booted(old);
    let mut new = config(vec![
        service("imap", 143, 3, None),
        service("pop3", 1110, 1, None),
        service("sieve", 4190, 1, None),
    ]);
    new.events.push(event("checkpoint", 30));
    new.events.push(event("prune", 120));
    new.events.push(event("tls_prune", 60));
    new.daemons.push(daemon("idled", "idled -v"));
    new.daemons.push(daemon("notifyd", "notifyd"));

    let plan = h.sup.plan(&new);
    assert_eq!(change_of(&plan, "imap"), (ServiceChange::Kept, 2));
    assert_eq!(change_of(&plan, "pop3"), (ServiceChange::Rebound, 1));
    let pop3 = plan.services.iter().find(|s| s.name == "pop3").unwrap();
    assert_eq!(pop3.old_listen.as_deref(), Some("127.0.0.1:110"));
    assert_eq!(pop3.listen, "127.0.0.1:1110");
    assert_eq!(change_of(&plan, "sieve"), (ServiceChange::Added, 0));
    assert_eq!(change_of(&plan, "lmtp"), (ServiceChange::Removed, 1));
    assert_eq!(plan.recycle, 4);
    let ev: Vec<(&str, EntryChange)> = plan
        .events
        .iter()
        .map(|e| (e.name.as_str(), e.change))
        .collect();
    assert_eq!(
        ev,
        vec![
            ("checkpoint", EntryChange::Same),
            ("prune", EntryChange::Changed),
            ("tls_prune", EntryChange::Added),
        ]
    );
    let d: Vec<(&str, EntryChange)> = plan
        .daemons
        .iter()
        .map(|e| (e.name.as_str(), e.change))
        .collect();
    assert_eq!(
        d,
        vec![
            ("idled", EntryChange::Changed),
            ("notifyd", EntryChange::Added)
        ]
    );

    // A plan changes nothing: no action came of it, and the reload it describes happens
    // as described.
    let spawned = h.spawned.len();
    let _ = h.sup.plan(&new);
    assert_eq!(h.spawned.len(), spawned);
    let imap = h.workers_of("imap");
    let lmtp = h.workers_of("lmtp");
    h.pending_config = Some(new);
    h.feed(Input::ReloadRequested);
    for pid in imap.iter().chain(&lmtp) {
        assert_eq!(h.signals_to(*pid), vec![Sig::Hup]);
    }
    assert_eq!(h.workers_of("sieve").len(), 1);
}

#[test]
fn removed_events_and_daemons_and_unresolved_entries() {
    let mut old = config(vec![service("imap", 143, 1, None)]);
    old.events.push(event("checkpoint", 30));
    old.daemons.push(daemon("idled", "idled"));
    let h = Harness::booted(old);
    let mut new = config(vec![]);
    new.unresolved.services.push("imap".into());
    let plan = h.sup.plan(&new);
    assert_eq!(change_of(&plan, "imap"), (ServiceChange::Untouched, 0));
    assert_eq!(plan.events[0].change, EntryChange::Removed);
    assert_eq!(plan.daemons[0].change, EntryChange::Removed);
    assert_eq!(plan.recycle, 0);
}
