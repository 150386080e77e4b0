//! Faults: bind retries, readiness with services down, unresolved entries.

use super::*;

#[test]
fn bind_backoff_doubles_from_one_second_to_a_minute() {
    let secs: Vec<u64> = (1..=9)
        .map(|n| crate::supervisor::faults::bind_backoff(n).as_secs())
        .collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(
        crate::supervisor::faults::bind_backoff(u32::MAX).as_secs(),
        60
    );
}

#[test]
fn a_failed_bind_is_retried_with_backoff_until_the_port_is_free() {
    let mut h = booted_with_pop3_down();
    // Start-up completes with pop3 down: the ready file waits.
    assert!(h.started);
    assert!(!h.ready);
    assert_eq!(h.workers_of("imap").len(), 1);
    assert!(h.workers_of("pop3").is_empty());
    let tries = |h: &Harness| h.binds.iter().filter(|n| *n == "pop3").count();
    assert_eq!(tries(&h), 1);
    let failed = h.logged(LogEvent::BindFailed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].field(Field::Service), Some("pop3"));
    assert_eq!(
        failed[0].field(Field::Error),
        Some("Address already in use")
    );
    assert_eq!(failed[0].field(Field::Seconds), Some("1"));
    let ready = h.logged(LogEvent::Ready);
    assert_eq!(
        (ready.len(), ready[0].level),
        (1, Level::Warn),
        "ready, pop3 down"
    );
    // Retries at 1 s, then 2 s later, then 4 s later.
    h.advance(Duration::from_millis(900));
    assert_eq!(tries(&h), 1);
    h.advance(Duration::from_millis(100));
    assert_eq!(tries(&h), 2);
    h.advance(Duration::from_millis(1900));
    assert_eq!(tries(&h), 2);
    h.advance(Duration::from_millis(100));
    assert_eq!(tries(&h), 3);
    assert_eq!(
        h.sup.next_deadline().map(|t| t - h.now.mono),
        Some(Duration::from_secs(4)),
        "the next retry is the next deadline"
    );
    // The port is freed: the next retry binds, workers come, the ready file appears.
    h.failing_binds.clear();
    h.advance(Duration::from_secs(4));
    assert_eq!(tries(&h), 4);
    assert!(h.ready);
    assert_eq!(h.workers_of("pop3").len(), 1);
    let still: Vec<Option<&str>> = h
        .logged(LogEvent::BindStillFailing)
        .iter()
        .map(|r| r.field(Field::Count))
        .collect();
    assert_eq!(still, vec![Some("2"), Some("3")]);
    let up = h.logged(LogEvent::ServiceUp);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].field(Field::Service), Some("pop3"));
    assert_eq!(h.logged(LogEvent::AllListening).len(), 1);
    // No more retries once it is up.
    h.advance(Duration::from_secs(120));
    assert_eq!(tries(&h), 4);
}

#[test]
fn every_bind_ok_means_ready_at_once() {
    let h = Harness::booted(config(vec![service("imap", 143, 0, None)]));
    assert!(h.started && h.ready);
    let h = Harness::booted(config(vec![]));
    assert!(h.started && h.ready, "no service: ready all the same");
}

#[test]
fn bind_errors_fatal_stops_start_up_with_ex_unavailable() {
    let mut h = Harness::new(config(vec![
        service("imap", 143, 1, None),
        service("pop3", 110, 1, None),
    ]));
    h.sup.settings.bind_errors_fatal = true;
    h.failing_binds.insert("imap".into());
    h.feed(Input::Boot);
    assert!(!h.ready);
    assert_eq!(h.exit, Some(EXIT_BIND_FAILED));
}

#[test]
fn bind_errors_fatal_does_not_apply_at_reload() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    h.sup.settings.bind_errors_fatal = true;
    h.failing_binds.insert("pop3".into());
    h.pending_config = Some(config(vec![
        service("imap", 143, 1, None),
        service("pop3", 110, 1, None),
    ]));
    h.feed(Input::ReloadRequested);
    assert_eq!(h.exit, None);
    h.failing_binds.clear();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.workers_of("pop3").len(), 1);
}

#[test]
fn a_reload_leaves_a_running_service_it_cannot_resolve_untouched() {
    let mut h = Harness::booted(config(vec![
        service("imap", 143, 2, None),
        service("pop3", 110, 1, None),
    ]));
    let imap = h.workers_of("imap");
    let pop3 = h.workers_of("pop3");
    let mut new = config(vec![service("pop3", 110, 1, None)]);
    new.unresolved.services.push("imap".into());
    h.pending_config = Some(new);
    h.feed(Input::ReloadRequested);
    for pid in &imap {
        assert!(
            h.signals_to(*pid).is_empty(),
            "imap worker {pid} left alone"
        );
    }
    assert!(h.released.is_empty(), "imap's socket stays");
    assert_eq!(h.workers_of("imap"), imap);
    // pop3 is recycled as usual.
    assert_eq!(h.signals_to(pop3[0]), vec![Sig::Hup]);
    // imap's old generation goes on: a worker that exits is replaced from the old spec.
    h.exit(imap[0], ExitStatus::Code(0));
    assert_eq!(h.workers_of("imap").len(), 2);
    assert!(h.sup.config().services.iter().any(|s| s.name == "imap"));
}

#[test]
fn a_reload_leaves_a_running_daemon_it_cannot_resolve_untouched() {
    let daemon = daemon("notifier", "notifier");
    let mut c = config(vec![]);
    c.daemons.push(daemon);
    let mut h = Harness::booted(c);
    let pid = h.spawned[0].0;
    let mut new = config(vec![]);
    new.unresolved.daemons.push("notifier".into());
    h.pending_config = Some(new);
    h.feed(Input::ReloadRequested);
    assert!(h.signals_to(pid).is_empty());
    assert_eq!(h.spawned.len(), 1);
}

/// imap and pop3, pop3's bind failing: started with pop3 down.
fn booted_with_pop3_down() -> Harness {
    let mut h = Harness::new(config(vec![
        service("imap", 143, 1, None),
        service("pop3", 110, 1, None),
    ]));
    h.failing_binds.insert("pop3".into());
    h.feed(Input::Boot);
    h
}

#[test]
fn a_bind_retry_overtaken_by_a_reload_releases_what_it_bound() {
    let mut h = booted_with_pop3_down();
    assert_eq!(h.binds, vec!["imap".to_string(), "pop3".to_string()]);
    h.failing_binds.clear();
    // The operator replaces pop3 by pop3s elsewhere; SIGHUP handled just as the retry is due.
    h.pending_config = Some(config(vec![
        service("imap", 143, 1, None),
        service("pop3s", 995, 1, None),
    ]));
    h.now.mono += Duration::from_secs(1);
    h.feed(Input::ReloadRequested);
    // The retry may have run before the reload retired pop3; whatever it bound was released
    // after it was bound.
    let pop3 = ServiceKey(1);
    let last_bind = h
        .carried
        .iter()
        .rposition(|a| matches!(a, Action::Bind { service, .. } if *service == pop3));
    let last_release = h
        .carried
        .iter()
        .rposition(|a| matches!(a, Action::Release { service, .. } if *service == pop3));
    assert!(
        last_release > last_bind,
        "a retired service was bound and never released: {:?} {:?}",
        h.binds,
        h.released
    );
    assert!(h
        .sup
        .services
        .values()
        .all(|s| s.spec.name != "pop3" || s.retiring));
}

#[test]
fn fixing_a_down_service_by_reload_writes_the_ready_file() {
    let mut h = booted_with_pop3_down();
    assert!(h.started && !h.ready);
    // The operator moves pop3 to a free port.
    h.failing_binds.clear();
    h.pending_config = Some(config(vec![
        service("imap", 143, 1, None),
        service("pop3", 1110, 1, None),
    ]));
    h.advance(Duration::from_millis(100));
    h.feed(Input::ReloadRequested);
    assert_eq!(h.workers_of("pop3").len(), 1, "new pop3 serves");
    h.advance(Duration::from_secs(120));
    assert!(h.ready, "every service listens, yet no ready file");
}

#[test]
fn removing_a_down_service_by_reload_writes_the_ready_file() {
    let mut h = booted_with_pop3_down();
    assert!(h.started && !h.ready);
    h.pending_config = Some(config(vec![service("imap", 143, 1, None)]));
    h.advance(Duration::from_millis(100));
    h.feed(Input::ReloadRequested);
    h.advance(Duration::from_secs(120));
    assert!(h.ready, "every service listens, yet no ready file");
}

#[test]
fn a_down_service_moved_to_a_busy_port_retries_the_new_port() {
    let mut h = booted_with_pop3_down();
    h.pending_config = Some(config(vec![
        service("imap", 143, 1, None),
        service("pop3", 1110, 1, None),
    ]));
    h.advance(Duration::from_millis(100));
    h.feed(Input::ReloadRequested);
    let listens: Vec<String> = h
        .sup
        .services
        .values()
        .filter(|s| s.spec.name == "pop3" && !s.retiring)
        .map(|s| s.spec.listen.to_string())
        .collect();
    assert_eq!(
        listens,
        vec!["127.0.0.1:1110".to_string()],
        "the configured address is the one retried"
    );
}
