//! Process groups that workers leave behind.

use super::*;

fn exit_leaving_group(h: &mut Harness, pid: Pid) {
    h.feed(Input::Exited {
        pid,
        status: ExitStatus::Code(0),
        pgid: Some(pid),
        group_alive: true,
    });
}

#[test]
fn groups_left_behind_are_counted_and_forgotten_when_empty() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let w = h.workers_of("imap")[0];
    h.note(w, Message::Connection);
    exit_leaving_group(&mut h, w);
    assert_eq!(h.sup.leftovers.live_groups("imap"), 1);
    let left = h.logged(LogEvent::LeftBehind);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].field(Field::Service), Some("imap"));
    assert_eq!(left[0].field(Field::Pgid), Some(w.to_string().as_str()));
    // One of its processes comes back to us and is reaped; others remain.
    h.feed(Input::Exited {
        pid: 50_000,
        status: ExitStatus::Code(0),
        pgid: Some(w),
        group_alive: true,
    });
    assert_eq!(h.sup.leftovers.live_groups("imap"), 1);
    // The last one: the group is empty.
    h.feed(Input::Exited {
        pid: 50_001,
        status: ExitStatus::Code(0),
        pgid: Some(w),
        group_alive: false,
    });
    assert_eq!(h.sup.leftovers.live_groups("imap"), 0);
    assert!(h.group_signals.is_empty());
    assert_eq!(h.logged(LogEvent::LeftoverReaped).len(), 2);
}

#[test]
fn groups_left_behind_are_bounded_per_service_and_killed_at_stop() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let mut leavers = Vec::new();
    for _ in 0..20 {
        let w = h.workers_of("imap")[0];
        h.note(w, Message::Connection);
        exit_leaving_group(&mut h, w);
        leavers.push(w);
    }
    assert_eq!(h.sup.leftovers.live_groups("imap"), 16);
    let killed: Vec<(Pid, Sig)> = leavers[..4].iter().map(|&p| (p, Sig::Kill)).collect();
    assert_eq!(h.group_signals, killed, "the four oldest groups are killed");
    // A killed group's processes are still attributed, and it is forgotten once empty.
    h.feed(Input::Exited {
        pid: 60_000,
        status: ExitStatus::Signal {
            signal: 9,
            core: false,
        },
        pgid: Some(leavers[0]),
        group_alive: false,
    });
    assert!(h.paused.is_empty(), "served workers: no throttle");
    h.group_signals.clear();
    h.feed(Input::Stop { graceful: false });
    let termed: BTreeSet<Pid> = h
        .group_signals
        .iter()
        .filter(|(_, s)| *s == Sig::Term)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(termed.len(), 19, "every known group gets SIGTERM at stop");
    let w = h.workers_of("imap")[0];
    h.group_signals.clear();
    h.exit(w, ExitStatus::Code(75));
    assert_eq!(h.exit, Some(0));
    let killed: BTreeSet<Pid> = h
        .group_signals
        .iter()
        .filter(|(_, s)| *s == Sig::Kill)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(killed, termed, "and SIGKILL as the master exits");
}

#[test]
fn a_group_found_without_our_children_is_forgotten_and_never_signalled_again() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let mut leavers = Vec::new();
    for _ in 0..3 {
        let w = h.workers_of("imap")[0];
        h.note(w, Message::Connection);
        exit_leaving_group(&mut h, w);
        leavers.push(w);
    }
    assert_eq!(h.sup.leftovers.live_groups("imap"), 3);
    // Its last member left it (setsid) unseen: the runtime found no child of ours in it.
    h.feed(Input::GroupGone { pgid: leavers[1] });
    assert_eq!(h.sup.leftovers.live_groups("imap"), 2);
    // Said twice, or of a group never known: nothing happens.
    h.feed(Input::GroupGone { pgid: leavers[1] });
    h.feed(Input::GroupGone { pgid: 99_999 });
    assert_eq!(h.sup.leftovers.live_groups("imap"), 2);
    h.feed(Input::Stop { graceful: false });
    let signalled: BTreeSet<Pid> = h.group_signals.iter().map(|(p, _)| *p).collect();
    assert_eq!(signalled, BTreeSet::from([leavers[0], leavers[2]]));
}

#[test]
fn a_group_number_given_to_a_new_process_ends_the_old_group() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let w = h.workers_of("imap")[0];
    h.note(w, Message::Connection);
    exit_leaving_group(&mut h, w);
    assert_eq!(h.sup.leftovers.live_groups("imap"), 1);
    // The group emptied unseen and the pid wrapped: the next worker gets its number, which
    // the kernel hands out only when no group holds it.
    h.next_pid = w;
    let current = h.workers_of("imap")[0];
    h.note(current, Message::Connection);
    h.exit(current, ExitStatus::Code(0));
    assert_eq!(h.spawned.last().map(|(p, _)| *p), Some(w));
    assert_eq!(h.sup.leftovers.live_groups("imap"), 0);
    h.feed(Input::Stop { graceful: false });
    assert!(h.group_signals.is_empty(), "{:?}", h.group_signals);
}

#[test]
fn a_live_workers_stray_descendant_is_no_leftover() {
    let mut h = Harness::booted(config(vec![service("lmtp", 24, 1, None)]));
    let w = h.workers_of("lmtp")[0];
    h.feed(Input::Exited {
        pid: 70_000,
        status: ExitStatus::Code(0),
        pgid: Some(w),
        group_alive: true,
    });
    assert_eq!(h.sup.leftovers.live_groups("lmtp"), 0);
    assert_eq!(h.workers_of("lmtp"), vec![w]);
    assert!(h.group_signals.is_empty() && h.signals.is_empty());
}
