//! Unit and property tests of the supervisor, driven through a fake runtime.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringmaster_proto::{Message, RawNote};

use super::schedule::utc;
use super::*;
use crate::config::{
    Command, Config, DaemonEntry, EventEntry, Listen, Location, Proto, RunAs, Schedule,
    ServiceEntry, StartEntry,
};

/// A fake runtime: carries out actions the way the real one does, without syscalls.
struct Harness {
    sup: Supervisor,
    start: Instant,
    now: Now,
    next_pid: Pid,
    signals: Vec<(Pid, Sig)>,
    group_signals: Vec<(Pid, Sig)>,
    spawned: Vec<(Pid, SpawnRequest)>,
    watching: BTreeSet<PoolId>,
    paused: BTreeSet<PoolId>,
    released: Vec<ServiceKey>,
    exit: Option<i32>,
    ready: bool,
    /// Action::Ready came (start-up complete), whether or not every service listens.
    started: bool,
    loads: u32,
    reloads: Vec<ReloadReport>,
    pending_config: Option<Config>,
    /// Binds of services with these names fail.
    failing_binds: BTreeSet<String>,
    binds: Vec<String>,
}

fn cmd(text: &str) -> Command {
    Command {
        argv: text.split_whitespace().map(String::from).collect(),
    }
}

fn service(name: &str, port: u16, prefork: u32, maxchild: Option<u32>) -> ServiceEntry {
    ServiceEntry {
        name: name.to_string(),
        cmd: cmd("worker -U 30"),
        listen: Listen::Inet {
            host: Some("127.0.0.1".into()),
            port,
        },
        proto: Proto::Tcp,
        prefork,
        maxchild,
        maxforkrate: 0,
        babysit: false,
        maxfds: 0,
        run_as: RunAs::default(),
        location: Location::default(),
    }
}

impl Harness {
    fn new(config: Config) -> Harness {
        let start = Instant::now();
        let settings = Settings {
            stop_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(60),
            worker_env: vec![],
            bind_errors_fatal: false,
        };
        Harness {
            sup: Supervisor::new(config, settings, utc),
            start,
            now: Now {
                mono: start,
                unix: 1_795_733_363,
            },
            next_pid: 1000,
            signals: vec![],
            group_signals: vec![],
            spawned: vec![],
            watching: BTreeSet::new(),
            paused: BTreeSet::new(),
            released: vec![],
            exit: None,
            ready: false,
            started: false,
            loads: 0,
            reloads: Vec::new(),
            pending_config: None,
            failing_binds: BTreeSet::new(),
            binds: vec![],
        }
    }

    fn booted(config: Config) -> Harness {
        let mut h = Harness::new(config);
        h.feed(Input::Boot);
        h
    }

    fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.now.unix = 1_795_733_363 + (self.now.mono - self.start).as_secs() as i64;
        self.feed(Input::Tick);
    }

    fn feed(&mut self, input: Input) {
        let actions = self.sup.handle(input, self.now);
        for action in actions {
            self.carry_out(action);
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Bind { service, name, .. } => {
                self.binds.push(name.clone());
                if self.failing_binds.contains(&name) {
                    self.feed(Input::BindFailed {
                        service,
                        error: "Address already in use".into(),
                    })
                } else {
                    self.feed(Input::Bound {
                        service,
                        families: vec![0],
                    })
                }
            }
            Action::Spawn(req) => {
                let pid = self.next_pid;
                self.next_pid += 1;
                self.spawned.push((pid, req.clone()));
                self.feed(Input::Spawned {
                    role: req.role,
                    pid,
                });
            }
            Action::Signal { pid, signal } => self.signals.push((pid, signal)),
            Action::SignalGroup { pgid, signal } => self.group_signals.push((pgid, signal)),
            Action::SignalEscaped { .. } => {}
            Action::Watch { pool, on } => {
                if on {
                    self.watching.insert(pool);
                } else {
                    self.watching.remove(&pool);
                }
            }
            Action::Pause { pool } => {
                self.paused.insert(pool);
            }
            Action::Resume { pool } => {
                self.paused.remove(&pool);
            }
            Action::Release { service, .. } => self.released.push(service),
            Action::CleanupAfterCrash { .. } => {}
            Action::LoadConfig => {
                self.loads += 1;
                match self.pending_config.clone() {
                    Some(c) => self.feed(Input::ConfigLoaded(Box::new(c))),
                    None => self.feed(Input::ConfigRejected {
                        errors: vec!["cyrus.conf:1:1: bad".into()],
                    }),
                }
            }
            Action::ReloadFinished(report) => self.reloads.push(report),
            Action::Ready { all_listening } => {
                assert!(!self.ready, "Ready with every service listening comes once");
                self.started = true;
                self.ready = all_listening;
            }
            Action::Exit(code) => self.exit = Some(code),
        }
    }

    fn workers_of(&self, name: &str) -> Vec<Pid> {
        let live: BTreeSet<Pid> = self.sup.children().into_iter().collect();
        self.spawned
            .iter()
            .filter(|(pid, r)| {
                r.name == name && matches!(r.role, Role::Worker { .. }) && live.contains(pid)
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn pool_of(&self, pid: Pid) -> PoolId {
        match self.spawned.iter().find(|(p, _)| *p == pid) {
            Some((
                _,
                SpawnRequest {
                    role: Role::Worker { pool },
                    ..
                },
            )) => *pool,
            _ => panic!("{pid} is not a worker"),
        }
    }

    fn note(&mut self, pid: Pid, message: Message) {
        let pool = self.pool_of(pid);
        self.feed(Input::Note {
            pool,
            note: RawNote::new(message, pid),
        });
    }

    fn exit(&mut self, pid: Pid, status: ExitStatus) {
        self.feed(Input::Exited {
            pid,
            status,
            pgid: Some(pid),
            group_alive: false,
        });
    }

    fn signals_to(&self, pid: Pid) -> Vec<Sig> {
        self.signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| *s)
            .collect()
    }
}

fn config(services: Vec<ServiceEntry>) -> Config {
    Config {
        services,
        ..Config::default()
    }
}

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
    h.feed(Input::ListenerReadable { pool, waiting: 1 });
    let first = h.workers_of("pop3");
    assert_eq!(first.len(), 1);
    assert!(
        !h.watching.contains(&pool),
        "a ready worker exists: no watch"
    );
    h.note(first[0], Message::Connection);
    assert!(h.watching.contains(&pool));
    h.feed(Input::ListenerReadable { pool, waiting: 1 });
    let both = h.workers_of("pop3");
    assert_eq!(both.len(), 2);
    h.note(both[1], Message::Connection);
    assert!(!h.watching.contains(&pool), "at maxchild: no watch");
    h.feed(Input::ListenerReadable { pool, waiting: 1 });
    assert_eq!(h.workers_of("pop3").len(), 2, "never above maxchild");
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
    h.advance(Duration::from_secs(5));
    assert!(h.workers_of("imap").is_empty());
    h.advance(Duration::from_secs(6));
    assert!(h.paused.is_empty(), "retried after the pause");
    assert_eq!(h.workers_of("imap").len(), 1);
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
    for &w in &old {
        h.note(w, Message::Available);
    }
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
    for &w in &old {
        h.note(w, Message::Available);
    }
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
    for &w in &first {
        h.note(w, Message::Available);
    }
    // A client came and went: a third worker was forked and is ready too.
    h.note(first[0], Message::Connection);
    h.note(first[0], Message::Available);
    let old = h.workers_of("imap");
    assert_eq!(old.len(), 3);
    for &w in &old {
        h.note(w, Message::Available);
    }
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
    for w in new {
        h.note(w, Message::Available);
    }
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
        name: "idled".into(),
        cmd: cmd("idled"),
        wait: true,
        run_as: RunAs::default(),
        location: Location::default(),
    });
    let mut h = Harness::booted(c);
    assert!(!h.ready);
    assert!(h.workers_of("imap").is_empty());
    h.feed(Input::DaemonReady {
        name: "idled".into(),
    });
    assert!(h.ready);
    assert_eq!(h.workers_of("imap").len(), 1);
}

#[test]
fn daemons_restart_with_backoff() {
    let mut c = config(vec![]);
    c.daemons.push(DaemonEntry {
        name: "notifier".into(),
        cmd: cmd("notifier"),
        wait: false,
        run_as: RunAs::default(),
        location: Location::default(),
    });
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
    h.exit(workers[0], ExitStatus::Code(75));
    assert_eq!(h.exit, None);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.signals_to(workers[1]), vec![Sig::Term, Sig::Kill]);
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

#[derive(Debug, Clone)]
enum Step {
    Note(usize, u8),
    Exit(usize, bool),
    Readable,
    Reload,
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<usize>(), 0u8..6).prop_map(|(w, m)| Step::Note(w, m)),
        (any::<usize>(), any::<bool>()).prop_map(|(w, c)| Step::Exit(w, c)),
        Just(Step::Readable),
        Just(Step::Reload),
        (0u16..3000).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens, a pool never runs more than maxchild workers, the ready count only
    /// counts current-generation idle workers, and no worker is sent SIGHUP twice.
    #[test]
    fn invariants_hold(prefork in 0u32..4, maxchild in 1u32..6, steps in proptest::collection::vec(step(), 1..120)) {
        let c = config(vec![service("imap", 143, prefork, Some(maxchild))]);
        let mut h = Harness::booted(c.clone());
        h.pending_config = Some(c);
        for s in steps {
            let live = h.workers_of("imap");
            match s {
                Step::Note(i, m) if !live.is_empty() => {
                    let pid = live[i % live.len()];
                    let message = [Message::Available, Message::Unavailable, Message::Connection,
                        Message::ConnectionMulti, Message::Exiting, Message::Available][m as usize];
                    h.note(pid, message);
                }
                Step::Exit(i, clean) if !live.is_empty() => {
                    let pid = live[i % live.len()];
                    let status = if clean { ExitStatus::Code(0) } else { ExitStatus::Signal { signal: 11, core: false } };
                    h.exit(pid, status);
                }
                Step::Readable => {
                    if let Some(pool) = h.watching.iter().next().copied() {
                        h.feed(Input::ListenerReadable { pool, waiting: 1 + (h.next_pid as u32 % 4) });
                    }
                }
                Step::Reload => h.feed(Input::ReloadRequested),
                Step::Advance(ms) => h.advance(Duration::from_millis(u64::from(ms))),
                _ => {}
            }
            let live = h.workers_of("imap");
            let exiting: usize = live.iter().filter(|p| h.sup.workers.get(p).is_some_and(|w| w.state == WorkerState::Exiting)).count();
            prop_assert!((live.len() - exiting) as u32 <= maxchild, "{} live, {} exiting, maxchild {}", live.len(), exiting, maxchild);
            for pid in &live {
                let hups = h.signals_to(*pid).iter().filter(|s| **s == Sig::Hup).count();
                prop_assert!(hups <= 1);
            }
            for (id, pool) in &h.sup.pools {
                let (_, ready) = h.sup.pool_counts(*id);
                let expected = h.sup.workers.values().filter(|w| w.pool == *id && w.generation == pool.generation && w.is_idle() && !w.recycle.hupped()).count() as u32;
                prop_assert_eq!(ready, expected);
            }
        }
    }
}

// ----- faults: bind retries, readiness with services down, unresolved entries -------------

#[test]
fn bind_backoff_doubles_from_one_second_to_a_minute() {
    let secs: Vec<u64> = (1..=9)
        .map(|n| super::faults::bind_backoff(n).as_secs())
        .collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(super::faults::bind_backoff(u32::MAX).as_secs(), 60);
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
    let daemon = DaemonEntry {
        name: "notifier".into(),
        cmd: cmd("notifier"),
        wait: false,
        run_as: RunAs::default(),
        location: Location::default(),
    };
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
    // The retry may have run before the reload retired pop3; whatever it bound was released.
    let pop3_binds = h.binds.iter().filter(|n| *n == "pop3").count();
    if pop3_binds > 1 {
        let keys: Vec<ServiceKey> = h.released.clone();
        assert!(
            keys.len() >= 2,
            "a retired service was bound and never released: {:?} {:?}",
            h.binds,
            h.released
        );
    }
    assert!(h
        .sup
        .services
        .values()
        .all(|s| s.spec.name != "pop3" || s.retiring));
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

#[test]
fn two_announcements_in_one_batch_retire_two_held_workers() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 2, None)]));
    let old = h.workers_of("imap");
    for &w in &old {
        h.note(w, Message::Available);
    }
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

#[test]
fn a_daemon_death_while_waiting_for_a_wait_daemon_leaves_no_deadline_in_the_past() {
    let mut c = config(vec![]);
    for (name, wait) in [("idled", true), ("notifier", false)] {
        c.daemons.push(DaemonEntry {
            name: name.into(),
            cmd: cmd(name),
            wait,
            run_as: RunAs::default(),
            location: Location::default(),
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

// ----- status and reload reports ----------------------------------------------------------

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

mod plan;
mod status;
