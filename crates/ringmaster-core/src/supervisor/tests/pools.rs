//! Pools: prefork, forking on demand, maxforkrate, the throttle, status notes.

use super::*;

#[test]
fn prefork_is_reached_and_held() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 3, None)]));
    assert!(h.ready);
    let workers = h.workers_of("imap");
    assert_eq!(workers.len(), 3);
    // A worker takes a client: a replacement is forked so three stay ready.
    h.note(workers[0], Message::Connection);
    assert_eq!(h.workers_of("imap").len(), 4);
    // It finishes and exits (max uses): nothing new is needed.
    h.exit(workers[0], ExitStatus::Code(0));
    assert_eq!(h.workers_of("imap").len(), 3);
}

#[test]
fn on_demand_spawn_watches_only_when_needed() {
    let mut h = Harness::booted(config(vec![service("pop3", 110, 0, Some(2))]));
    assert!(h.workers_of("pop3").is_empty());
    let pool = *h.watching.iter().next().expect("listener watched");
    h.feed(Input::ListenerReadable { pool, waiting: 2 });
    let both = h.workers_of("pop3");
    assert_eq!(both.len(), 2, "one per waiting client");
    assert!(!h.watching.contains(&pool), "at maxchild: no watch");
    h.note(both[0], Message::Connection);
    h.note(both[1], Message::Connection);
    h.feed(Input::ListenerReadable { pool, waiting: 1 });
    assert_eq!(h.workers_of("pop3").len(), 2, "never above maxchild");
    h.exit(both[0], ExitStatus::Code(0));
    assert!(h.watching.contains(&pool), "below maxchild again: watched");
    h.note(both[1], Message::Available);
    assert!(!h.watching.contains(&pool), "an idle worker: no watch");
}

#[test]
fn maxforkrate_spreads_forks() {
    let mut s = service("lmtp", 24, 5, None);
    s.maxforkrate = 2;
    let mut h = Harness::booted(config(vec![s]));
    assert_eq!(h.workers_of("lmtp").len(), 2);
    assert!(h.sup.next_deadline().is_some());
    h.advance(Duration::from_millis(1000));
    assert_eq!(h.workers_of("lmtp").len(), 4);
    h.advance(Duration::from_millis(1000));
    assert_eq!(h.workers_of("lmtp").len(), 5);
}

#[test]
fn maxforkrate_goes_on_forking_while_clients_wait() {
    // On demand only (prefork=0), clients arriving faster than the rate: once the rate
    // window reopens, the listener is watched again and forking goes on.
    let mut s = service("lmtp", 24, 0, None);
    s.maxforkrate = 2;
    let mut h = Harness::booted(config(vec![s]));
    let pool = *h.watching.iter().next().expect("listener watched");
    let mut forked = 0;
    for round in 1..=4 {
        h.feed(Input::ListenerReadable { pool, waiting: 5 });
        let workers = h.workers_of("lmtp");
        assert_eq!(
            workers.len() - forked,
            2,
            "round {round}: the rate allows two"
        );
        forked = workers.len();
        for &w in &workers {
            h.note(w, Message::Connection);
        }
        assert!(!h.watching.contains(&pool), "rate-limited: not watched");
        let next = h
            .sup
            .next_deadline()
            .expect("a deadline for the rate window");
        assert!(next > h.now.mono);
        h.advance(next - h.now.mono);
        assert!(h.watching.contains(&pool), "window reopened: watched again");
    }
}

#[test]
fn crashes_before_serving_throttle_then_retry() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    for _ in 0..5 {
        let w = h.workers_of("imap")[0];
        h.exit(
            w,
            ExitStatus::Signal {
                signal: 11,
                core: false,
            },
        );
    }
    assert_eq!(h.paused.len(), 1, "throttled after five");
    assert!(h.workers_of("imap").is_empty());
    let crashes = h.logged(LogEvent::WorkerCrashed);
    assert_eq!(crashes.len(), 5);
    assert_eq!(crashes[0].level, Level::Warn);
    assert_eq!(crashes[0].field(Field::Service), Some("imap"));
    assert_eq!(crashes[0].field(Field::Status), Some("signal 11"));
    let throttled = h.logged(LogEvent::PoolThrottled);
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0].level, Level::Error);
    assert_eq!(throttled[0].field(Field::Service), Some("imap"));
    assert_eq!(throttled[0].field(Field::Family), Some("0"));
    assert_eq!(throttled[0].field(Field::Seconds), Some("10"));
    h.advance(Duration::from_secs(5));
    assert!(h.workers_of("imap").is_empty());
    h.advance(Duration::from_secs(6));
    assert!(h.paused.is_empty(), "retried after the pause");
    assert_eq!(h.workers_of("imap").len(), 1);
    assert_eq!(h.logged(LogEvent::PoolResumed).len(), 1);
}

#[test]
fn clean_exits_before_serving_throttle_too() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    for _ in 0..5 {
        let w = h.workers_of("imap")[0];
        h.exit(w, ExitStatus::Code(0));
    }
    assert_eq!(h.paused.len(), 1, "throttled after five quick clean exits");
    assert!(h.workers_of("imap").is_empty());
    h.advance(Duration::from_secs(11));
    assert_eq!(h.workers_of("imap").len(), 1, "retried after the pause");
}

#[test]
fn served_long_lived_and_recycled_workers_are_no_failures() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    // Served once, then exits cleanly (its -U uses are over), many times over.
    for _ in 0..10 {
        let w = h.workers_of("imap")[0];
        h.note(w, Message::Connection);
        h.exit(w, ExitStatus::Code(0));
    }
    // Lived a while, never served, exits 0 (Cyrus: its program file changed).
    for _ in 0..10 {
        h.advance(Duration::from_secs(6));
        let w = h.workers_of("imap")[0];
        h.exit(w, ExitStatus::Code(0));
    }
    // Recycled by reloads before serving.
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    for _ in 0..10 {
        let old = h.workers_of("imap");
        h.feed(Input::ReloadRequested);
        for pid in old {
            h.exit(pid, ExitStatus::Code(0));
        }
        h.advance(Duration::from_secs(3));
    }
    assert!(h.paused.is_empty(), "never throttled");
    assert_eq!(h.workers_of("imap").len(), 1);
}

#[test]
fn a_sighup_death_after_recycle_is_not_a_crash() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    h.pending_config = Some(config(vec![service("imap", 143, 2, None)]));
    for round in 0..10 {
        let old = h.workers_of("imap");
        h.feed(Input::ReloadRequested);
        for pid in old {
            assert_eq!(h.signals_to(pid), vec![Sig::Hup], "round {round}");
            h.exit(
                pid,
                ExitStatus::Signal {
                    signal: 1,
                    core: false,
                },
            );
        }
        h.advance(Duration::from_secs(3));
    }
    assert!(h.paused.is_empty());
    assert_eq!(h.workers_of("imap").len(), 2);
}

#[test]
fn exit_notes_let_the_replacement_start_early() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, Some(1))]));
    let w = h.workers_of("imap")[0];
    h.note(w, Message::Connection);
    assert_eq!(h.workers_of("imap").len(), 1, "maxchild 1");
    h.note(w, Message::Exiting);
    assert_eq!(
        h.workers_of("imap").len(),
        2,
        "replacement forked before the reap"
    );
}

#[test]
fn junk_notes_are_survived() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let w = h.workers_of("imap")[0];
    let pool = h.pool_of(w);
    h.feed(Input::Note {
        pool,
        note: RawNote { code: 99, pid: w },
    });
    h.feed(Input::Note {
        pool,
        note: RawNote {
            code: 1,
            pid: 424242,
        },
    });
    h.feed(Input::Exited {
        pid: 31337,
        status: ExitStatus::Code(0),
        pgid: None,
        group_alive: false,
    });
    assert_eq!(h.workers_of("imap"), vec![w]);
}

#[test]
fn a_batch_of_notes_acts_like_the_notes_one_by_one() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    let workers = h.workers_of("imap");
    let pool = h.pool_of(workers[0]);
    // Junk between real notes changes nothing about the real ones.
    h.feed(Input::Notes {
        pool,
        notes: vec![
            RawNote::new(Message::Connection, workers[0]),
            RawNote { code: 77, pid: 5 },
            RawNote::new(Message::Connection, workers[1]),
            RawNote::new(Message::Available, 999_999),
        ],
    });
    // Both took a client: two replacements keep the pool at two ready.
    assert_eq!(h.workers_of("imap").len(), 4);
    h.feed(Input::Notes {
        pool,
        notes: vec![RawNote::new(Message::Available, workers[0])],
    });
    h.exit(workers[1], ExitStatus::Code(0));
    assert_eq!(h.workers_of("imap").len(), 3);
}

#[test]
fn a_flood_of_junk_notes_is_counted_and_reported_when_its_window_ends() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let w = h.workers_of("imap")[0];
    let pool = h.pool_of(w);
    assert_eq!(h.sup.next_deadline(), None);
    for i in 0..10_000 {
        h.feed(Input::Note {
            pool,
            note: RawNote {
                code: 1000 + i,
                pid: i,
            },
        });
    }
    assert_eq!(h.workers_of("imap"), vec![w]);
    // The count of what was left out is due when the window ends: the loop must wake for it.
    let due = h.sup.next_deadline().expect("a report is due");
    assert!(due <= h.now.mono + crate::ratelimit::WINDOW);
    h.advance(crate::ratelimit::WINDOW);
    assert_eq!(h.sup.next_deadline(), None);
}
