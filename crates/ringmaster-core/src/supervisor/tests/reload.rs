//! Reload: recycling workers onto a new generation, holding old ones for announcing pools, coalescing.

use super::*;

#[test]
fn reload_recycles_idle_and_busy_workers() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let idle = h.workers_of("imap")[0];
    h.note(idle, Message::Connection);
    let busy = idle;
    let idle = *h.workers_of("imap").iter().find(|p| **p != busy).unwrap();
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    h.feed(Input::ReloadRequested);
    assert_eq!(h.signals_to(idle), vec![Sig::Hup]);
    assert_eq!(h.signals_to(busy), vec![Sig::Hup]);
    // The new prefork is there at once, before the old workers are gone.
    assert_eq!(h.workers_of("imap").len(), 3);
    // The busy one outstays the drain: TERM, then KILL.
    h.exit(idle, ExitStatus::Code(0));
    h.advance(Duration::from_secs(61));
    assert_eq!(h.signals_to(busy), vec![Sig::Hup, Sig::Term]);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.signals_to(busy), vec![Sig::Hup, Sig::Term, Sig::Kill]);
}

#[test]
fn announcing_pools_keep_old_workers_until_replacements_are_ready() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let old = h.workers_of("imap")[0];
    h.note(old, Message::Available);
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    h.feed(Input::ReloadRequested);
    assert!(
        h.signals_to(old).is_empty(),
        "kept until a new one is ready"
    );
    let new = *h.workers_of("imap").iter().find(|p| **p != old).unwrap();
    h.note(new, Message::Available);
    assert_eq!(h.signals_to(old), vec![Sig::Hup]);
}

#[test]
fn busy_old_workers_of_announcing_pools_stay_until_a_replacement_is_ready() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    let old = h.workers_of("imap");
    h.announce(&old);
    h.note(old[0], Message::Connection);
    // (A third worker was forked to keep two ready; it has not announced yet.)
    let before = h.workers_of("imap");
    h.pending_config = Some(config(vec![service("imap", 143, 2, None)]));
    h.feed(Input::ReloadRequested);
    assert!(old.iter().all(|p| h.signals_to(*p).is_empty()));
    // The busy one finishes its client and takes the next: still kept, still not told.
    h.note(old[0], Message::Available);
    h.note(old[0], Message::Connection);
    assert!(h.signals_to(old[0]).is_empty());
    let new: Vec<Pid> = h
        .workers_of("imap")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 2);
    // The first replacement retires the idle old worker, the second the busy one.
    h.note(new[0], Message::Available);
    assert_eq!(h.signals_to(old[1]), vec![Sig::Hup]);
    assert!(h.signals_to(old[0]).is_empty());
    h.note(new[1], Message::Available);
    assert_eq!(h.signals_to(old[0]), vec![Sig::Hup]);
}

#[test]
fn a_full_pool_is_replaced_one_worker_at_a_time() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, Some(2))]));
    let old = h.workers_of("imap");
    h.announce(&old);
    h.pending_config = Some(config(vec![service("imap", 143, 2, Some(2))]));
    h.feed(Input::ReloadRequested);
    h.advance(Duration::from_millis(1));
    let told: Vec<Pid> = old
        .iter()
        .copied()
        .filter(|p| !h.signals_to(*p).is_empty())
        .collect();
    assert_eq!(told.len(), 1, "one old worker makes room, the other serves");
    assert_eq!(h.workers_of("imap").len(), 2, "maxchild holds");
    h.exit(told[0], ExitStatus::Code(0));
    let new: Vec<Pid> = h
        .workers_of("imap")
        .into_iter()
        .filter(|p| !old.contains(p))
        .collect();
    assert_eq!(new.len(), 1);
    h.note(new[0], Message::Available);
    h.advance(Duration::from_millis(1));
    assert!(old.iter().all(|p| !h.signals_to(*p).is_empty()));
}

#[test]
fn a_reload_whose_bind_fails_leaves_the_old_service_serving() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let old = h.workers_of("imap")[0];
    h.failing_binds.insert("imap".into());
    h.pending_config = Some(config(vec![service("imap", 1143, 1, None)]));
    h.feed(Input::ReloadRequested);
    assert!(h.signals_to(old).is_empty(), "not recycled");
    assert!(h.released.is_empty(), "its socket stays open");
    assert_eq!(h.workers_of("imap"), vec![old]);
}

#[test]
fn no_more_old_workers_are_kept_than_replacements_come() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    let first = h.workers_of("imap");
    h.announce(&first);
    // A client came and went: a third worker was forked and is ready too.
    h.note(first[0], Message::Connection);
    h.note(first[0], Message::Available);
    let old = h.workers_of("imap");
    assert_eq!(old.len(), 3);
    h.announce(&old);
    h.pending_config = Some(config(vec![service("imap", 143, 2, None)]));
    h.feed(Input::ReloadRequested);
    let hupped: Vec<Pid> = old
        .iter()
        .copied()
        .filter(|p| !h.signals_to(*p).is_empty())
        .collect();
    assert_eq!(
        hupped.len(),
        1,
        "two kept for the two replacements, the third retired now"
    );
    let new: Vec<Pid> = h
        .workers_of("imap")
        .into_iter()
        .filter(|p| !old.contains(p))
        .collect();
    assert_eq!(new.len(), 2);
    h.announce(&new);
    for &w in &old {
        assert_eq!(
            h.signals_to(w),
            vec![Sig::Hup],
            "every old worker retired at once"
        );
    }
}

#[test]
fn reload_storm_is_coalesced() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    for _ in 0..100 {
        h.feed(Input::ReloadRequested);
        h.advance(Duration::from_millis(10));
    }
    // One second of SIGHUPs every 10 ms: at most one reload per settle period.
    assert!(h.loads <= 5, "{} reloads", h.loads);
    assert!(h.loads >= 2);
    h.advance(Duration::from_secs(3));
    let (_, ready) = h.sup.pool_counts(h.pool_of(h.workers_of("imap")[0]));
    assert!(ready >= 1);
}

#[test]
fn invalid_config_on_reload_changes_nothing() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    let before = h.workers_of("imap");
    h.pending_config = None;
    h.feed(Input::ReloadRequested);
    assert_eq!(h.loads, 1);
    assert!(h.signals.is_empty());
    assert_eq!(h.workers_of("imap"), before);
}

#[test]
fn reload_adds_removes_and_moves_services() {
    let mut h = Harness::booted(config(vec![
        service("imap", 143, 1, None),
        service("pop3", 110, 1, None),
    ]));
    let pop = h.workers_of("pop3")[0];
    let imap = h.workers_of("imap")[0];
    h.pending_config = Some(config(vec![
        service("imap", 1143, 1, None),
        service("sieve", 4190, 1, None),
    ]));
    h.feed(Input::ReloadRequested);
    assert_eq!(h.signals_to(pop), vec![Sig::Hup]);
    assert_eq!(h.signals_to(imap), vec![Sig::Hup]);
    assert_eq!(h.released.len(), 2, "old imap socket and pop3 released");
    assert_eq!(h.workers_of("sieve").len(), 1);
    assert_eq!(
        h.workers_of("imap").len(),
        2,
        "new imap worker on the new port, old one draining"
    );
}

#[test]
fn two_announcements_in_one_batch_retire_two_held_workers() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    let old = h.workers_of("imap");
    h.announce(&old);
    h.pending_config = Some(config(vec![service("imap", 143, 2, None)]));
    h.feed(Input::ReloadRequested);
    assert!(old.iter().all(|p| h.signals_to(*p).is_empty()));
    let new: Vec<Pid> = h
        .workers_of("imap")
        .into_iter()
        .filter(|p| !old.contains(p))
        .collect();
    assert_eq!(new.len(), 2);
    let pool = h.pool_of(new[0]);
    h.feed(Input::Notes {
        pool,
        notes: vec![
            RawNote::new(Message::Available, new[0]),
            RawNote::new(Message::Available, new[1]),
        ],
    });
    assert!(old.iter().all(|p| h.signals_to(*p) == vec![Sig::Hup]));
}
