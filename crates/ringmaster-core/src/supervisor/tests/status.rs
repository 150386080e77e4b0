//! The status snapshot and reload reports.

use super::*;

fn imap_status(h: &Harness) -> PoolStatus {
    let status = h.sup.status();
    status
        .pools
        .into_iter()
        .find(|p| p.service == "imap" && !p.retiring)
        .expect("imap has a pool")
}

#[test]
fn status_counts_workers_by_state_and_exits_by_reason() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, Some(10))]));
    let workers = h.workers_of("imap");
    h.note(workers[0], Message::Available);
    h.note(workers[1], Message::Connection);
    let s = imap_status(&h);
    assert_eq!(s.listen, "127.0.0.1:143");
    assert_eq!(s.maxchild, Some(10));
    // One ready, one busy, and the replacement forked for the busy one is starting.
    assert_eq!(
        (s.workers.ready, s.workers.busy, s.workers.starting),
        (1, 1, 1)
    );
    assert_eq!(s.counters.forks, 3);
    h.exit(workers[1], ExitStatus::Code(0));
    h.exit(
        workers[0],
        ExitStatus::Signal {
            signal: 11,
            core: true,
        },
    );
    let s = imap_status(&h);
    assert_eq!(s.counters.exits(ExitReason::Normal), 1);
    assert_eq!(s.counters.exits(ExitReason::Signal), 1);
    assert_eq!(s.counters.ready_fails, 1, "it died idle");
    assert_eq!(h.sup.status().phase, MasterPhase::Running);
    assert!(h.sup.status().all_listening);
}

#[test]
fn status_shows_recycled_workers_as_draining_and_counts_their_exits() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let old = h.workers_of("imap")[0];
    h.note(old, Message::Connection);
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    h.feed(Input::ReloadRequested);
    let s = imap_status(&h);
    assert_eq!(s.generation, 1);
    assert_eq!(
        s.workers.draining, 2,
        "the busy one and the idle one forked for it"
    );
    h.exit(old, ExitStatus::Code(0));
    assert_eq!(imap_status(&h).counters.exits(ExitReason::Recycled), 1);
}

#[test]
fn an_applied_reload_is_reported_once_it_settles() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let id = {
        h.pending_config = Some(config(vec![service("imap", 143, 2, None)]));
        h.feed(Input::ReloadRequested);
        h.sup.reload_answering_request()
    };
    assert_eq!(id, 1);
    assert!(h.reloads.is_empty(), "the new workers have not started yet");
    assert!(h.sup.status().reload_in_progress.is_some());
    // Workers that never announce count as ready after a moment.
    h.advance(Duration::from_millis(300));
    assert_eq!(h.reloads.len(), 1);
    let report = &h.reloads[0];
    assert_eq!(report.id, 1);
    assert_eq!(
        report.result,
        ReloadResult::Applied {
            bind_errors: vec![],
            settled: true
        }
    );
    let status = h.sup.status();
    assert_eq!(status.reloads.applied, 1);
    assert_eq!(status.reloads.last.as_ref(), Some(report));
    assert!(status.reload_in_progress.is_none());
    // The "complete" line carries what the reload left, as fields.
    let settled = h.logged(LogEvent::ReloadSettled);
    assert_eq!(settled.len(), 1);
    let fields: Vec<Option<&str>> = [
        Field::Reload,
        Field::Services,
        Field::Workers,
        Field::Draining,
        Field::BindErrors,
    ]
    .iter()
    .map(|&f| settled[0].field(f))
    .collect();
    assert_eq!(
        fields,
        [Some("1"), Some("1"), Some("2"), Some("1"), Some("0")],
        "{:?}",
        settled[0]
    );
    assert!(
        settled[0]
            .message
            .contains("(1 service, 2 workers on the new configuration, 1 old worker draining)"),
        "{}",
        settled[0].message
    );
}

#[test]
fn a_rejected_reload_is_reported_at_once_with_its_errors() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    h.pending_config = None;
    h.feed(Input::ReloadRequested);
    assert_eq!(h.reloads.len(), 1);
    assert_eq!(
        h.reloads[0].result,
        ReloadResult::Rejected {
            errors: vec!["cyrus.conf:1:1: bad".into()]
        }
    );
    assert_eq!(h.sup.status().reloads.rejected, 1);
}

#[test]
fn a_failed_bind_makes_a_partial_reload_that_names_it() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    h.failing_binds.insert("imap".into());
    h.pending_config = Some(config(vec![service("imap", 1143, 1, None)]));
    h.feed(Input::ReloadRequested);
    h.advance(Duration::from_millis(300));
    assert_eq!(h.reloads.len(), 1);
    let ReloadResult::Applied { bind_errors, .. } = &h.reloads[0].result else {
        panic!("{:?}", h.reloads[0]);
    };
    assert_eq!(bind_errors.len(), 1);
    assert!(
        bind_errors[0].starts_with("imap on 127.0.0.1:1143: "),
        "{bind_errors:?}"
    );
    assert_eq!(h.reloads[0].result.kind(), "partial");
}

#[test]
fn a_coalesced_request_is_answered_by_the_next_reload() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    h.feed(Input::ReloadRequested);
    assert_eq!(h.sup.reload_answering_request(), 1);
    h.feed(Input::ReloadRequested);
    assert_eq!(
        h.sup.reload_answering_request(),
        2,
        "coalesced behind the first"
    );
    h.advance(Duration::from_millis(300));
    h.advance(Duration::from_millis(300));
    h.advance(Duration::from_millis(300));
    let ids: Vec<u64> = h.reloads.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn a_failed_spawn_is_the_pools_last_exec_error() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let role = h.spawned[0].1.role.clone();
    assert_eq!(h.sup.status().pools[0].counters.last_exec_error, None);
    h.feed(Input::SpawnFailed {
        role,
        error: "/usr/lib/cyrus/bin/imapd: Permission denied".into(),
    });
    let status = h.sup.status();
    assert_eq!(
        status.pools[0].counters.last_exec_error.as_deref(),
        Some("/usr/lib/cyrus/bin/imapd: Permission denied")
    );
}
