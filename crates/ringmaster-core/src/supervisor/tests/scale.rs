//! Tests of the supervisor at scale: thousands of workers recycled in bursts of notes and
//! exits, and a proptest that every pool's tally and every timer equal a recount from
//! scratch after any sequence of inputs (index.rs).

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::*;

/// A fake runtime that answers binds, spawns and loads (queued, as the runtime does: after
/// every action of the input that asked), and records the rest.
struct Fake {
    sup: Supervisor,
    now: Now,
    next_pid: Pid,
    /// Live workers as the runtime knows them: pid -> pool.
    workers: BTreeMap<Pid, PoolId>,
    hupped: BTreeSet<Pid>,
    termed: BTreeSet<Pid>,
    config: Config,
    exited: Option<i32>,
    reports: Vec<ReloadReport>,
    queue: VecDeque<Input>,
}

fn service(i: u16, prefork: u32, maxchild: Option<u32>) -> ServiceEntry {
    ServiceEntry {
        cmd: cmd("worker"),
        ..super::service(&format!("s{i}"), 20000 + i, prefork, maxchild)
    }
}

fn config(services: u16, prefork: u32, maxchild: Option<u32>) -> Config {
    Config {
        services: (0..services)
            .map(|i| service(i, prefork, maxchild))
            .collect(),
        ..Config::default()
    }
}

impl Fake {
    fn booted(config: Config) -> Fake {
        let settings = Settings {
            stop_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(60),
            ..Settings::default()
        };
        let mut f = Fake {
            sup: Supervisor::new(config.clone(), settings, utc),
            now: Now {
                mono: Instant::now(),
                unix: 1_795_733_363,
            },
            next_pid: 1000,
            workers: BTreeMap::new(),
            hupped: BTreeSet::new(),
            termed: BTreeSet::new(),
            config,
            exited: None,
            reports: Vec::new(),
            queue: VecDeque::new(),
        };
        f.feed(Input::Boot);
        f
    }

    fn feed(&mut self, input: Input) {
        self.queue.push_back(input);
        while let Some(input) = self.queue.pop_front() {
            let actions = self.sup.handle(input, self.now);
            for action in actions {
                self.carry_out(action);
            }
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Bind { service, .. } => self.queue.push_back(Input::Bound {
                service,
                families: vec![0],
            }),
            Action::Spawn(req) => {
                let pid = self.next_pid;
                self.next_pid += 1;
                if let Role::Worker { pool } = req.role {
                    self.workers.insert(pid, pool);
                }
                self.queue.push_back(Input::Spawned {
                    role: req.role,
                    pid,
                });
            }
            Action::Signal { pid, signal } => {
                match signal {
                    Sig::Hup => self.hupped.insert(pid),
                    _ => self.termed.insert(pid),
                };
            }
            Action::LoadConfig => {
                let config = Box::new(self.config.clone());
                self.queue.push_back(Input::ConfigLoaded(config));
            }
            Action::ReloadFinished(report) => self.reports.push(report),
            Action::Exit(code) => self.exited = Some(code),
            _ => {}
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.feed(Input::Tick);
    }

    /// Every pool's notes as one batch per pool, the way the runtime reads a pipe.
    fn notes(&mut self, pids: &[Pid], message: Message) {
        let mut by_pool: BTreeMap<PoolId, Vec<RawNote>> = BTreeMap::new();
        for pid in pids {
            if let Some(pool) = self.workers.get(pid) {
                by_pool
                    .entry(*pool)
                    .or_default()
                    .push(RawNote::new(message, *pid));
            }
        }
        for (pool, notes) in by_pool {
            self.feed(Input::Notes { pool, notes });
        }
    }

    fn exit(&mut self, pid: Pid, status: ExitStatus) {
        self.workers.remove(&pid);
        self.feed(Input::Exited {
            pid,
            status,
            pgid: Some(pid),
            group_alive: false,
        });
    }

    /// Workers that got SIGHUP or SIGTERM exit, all in one burst.
    fn signalled_ones_exit(&mut self) {
        let leaving: Vec<Pid> = self
            .workers
            .keys()
            .filter(|p| self.hupped.contains(p) || self.termed.contains(p))
            .copied()
            .collect();
        for pid in leaving {
            self.exit(pid, ExitStatus::Code(0));
        }
    }

    fn live(&self) -> BTreeSet<Pid> {
        self.workers.keys().copied().collect()
    }
}

/// The case of the issue: 100 services of 50 announcing workers; a SIGHUP; every new worker
/// announces in one burst, every recycled one exits in one burst. No old worker is left and
/// exactly 5,000 new ones run, and the reload is reported settled.
#[test]
fn five_thousand_announcing_workers_are_all_recycled() {
    let mut f = Fake::booted(config(100, 50, None));
    let old = f.live();
    assert_eq!(old.len(), 5000);
    f.notes(&old.iter().copied().collect::<Vec<_>>(), Message::Available);
    f.sup.check_invariants();

    f.feed(Input::ReloadRequested);
    let first = f.live().difference(&old).count();
    assert_eq!(first, 100 * 8, "a few replacements at a time per pool");
    assert!(f.hupped.is_empty(), "old workers serve until replaced");
    // Each burst of announcements retires as many old workers and starts as many new ones.
    let mut announced = BTreeSet::new();
    for _ in 0..50 {
        let burst: Vec<Pid> = f.live().difference(&old).copied().collect();
        let burst: Vec<Pid> = burst
            .into_iter()
            .filter(|p| !announced.contains(p))
            .collect();
        if burst.is_empty() {
            break;
        }
        f.notes(&burst, Message::Available);
        announced.extend(burst);
        f.sup.check_invariants();
        assert_eq!(
            f.hupped.len(),
            announced.len(),
            "one old worker per announcement"
        );
    }
    assert_eq!(announced.len(), 5000, "one replacement per old worker");
    assert_eq!(f.hupped, old, "each announcement retires one old worker");
    f.signalled_ones_exit();
    f.sup.check_invariants();

    assert!(f.live().is_disjoint(&old));
    assert_eq!(f.live().len(), 5000);
    assert!(f
        .sup
        .workers
        .values()
        .all(|w| w.recycle == Recycle::Serving));
    // The reload is reported settled at its next look (reload.rs: `tick_reload`).
    f.advance(Duration::from_millis(100));
    assert_eq!(f.reports.len(), 1);
    assert_eq!(
        f.reports[0].result,
        ReloadResult::Applied {
            bind_errors: Vec::new(),
            settled: true
        }
    );
    assert_eq!(f.reports[0].draining, 0);
}

/// Workers that never announce: old ones held nowhere, all SIGHUPed at once, replaced by as
/// many; a second SIGHUP while the first settles is coalesced and done later.
#[test]
fn quiet_workers_are_recycled_and_a_second_reload_waits_its_turn() {
    let mut f = Fake::booted(config(40, 50, Some(60)));
    let old = f.live();
    assert_eq!(old.len(), 2000);
    f.feed(Input::ReloadRequested);
    assert_eq!(f.hupped, old);
    f.feed(Input::ReloadRequested);
    f.signalled_ones_exit();
    f.sup.check_invariants();
    let first = f.live();
    assert_eq!(first.len(), 2000);
    // Settled by age: the coalesced reload comes, and recycles the first round.
    f.advance(Duration::from_millis(300));
    f.signalled_ones_exit();
    f.sup.check_invariants();
    assert!(f.live().is_disjoint(&first));
    assert_eq!(f.live().len(), 2000);
}

/// A SIGTERM stop of many workers ends when the last one is reaped; SIGKILL for those that
/// outstay the stop timeout.
#[test]
fn a_stop_of_many_workers_ends_with_the_last_exit() {
    let mut f = Fake::booted(config(50, 40, None));
    let all = f.live();
    f.feed(Input::Stop { graceful: false });
    assert_eq!(f.termed, all);
    let stubborn = *all.iter().next().unwrap_or(&0);
    for pid in all.iter().skip(1) {
        f.exit(
            *pid,
            ExitStatus::Signal {
                signal: 15,
                core: false,
            },
        );
    }
    f.sup.check_invariants();
    assert_eq!(f.exited, None);
    assert_eq!(
        f.sup.next_deadline().map(|t| t - f.now.mono),
        Some(Duration::from_secs(5))
    );
    f.advance(Duration::from_secs(5));
    f.exit(
        stubborn,
        ExitStatus::Signal {
            signal: 9,
            core: false,
        },
    );
    assert_eq!(f.exited, Some(0));
}

#[derive(Debug, Clone)]
enum Step {
    Note(usize, u8),
    Exit(usize, bool),
    Readable(usize),
    Reload,
    Advance(u16),
    SpawnFailed(usize),
    Quit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<usize>(), 0u8..6).prop_map(|(i, m)| Step::Note(i, m)),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, c)| Step::Exit(i, c)),
        2 => any::<usize>().prop_map(Step::Readable),
        2 => Just(Step::Reload),
        3 => (0u16..3000).prop_map(Step::Advance),
        1 => any::<usize>().prop_map(Step::SpawnFailed),
        1 => Just(Step::Quit),
    ]
}

const MESSAGES: [Message; 6] = [
    Message::Available,
    Message::Unavailable,
    Message::Connection,
    Message::ConnectionMulti,
    Message::Exiting,
    Message::Available,
];

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens, every pool's counters, pid set and hold order, and every worker's
    /// timer, equal a recount from scratch.
    #[test]
    fn tallies_equal_a_recount(
        prefork in 0u32..4,
        maxchild in 1u32..6,
        steps in proptest::collection::vec(step(), 1..150),
    ) {
        let mut f = Fake::booted(config(3, prefork, Some(maxchild)));
        f.sup.check_invariants();
        for s in steps {
            let live: Vec<Pid> = f.live().into_iter().collect();
            let pools: Vec<PoolId> = f.sup.pools.keys().copied().collect();
            match s {
                Step::Note(i, m) => {
                    if let Some(pid) = pick(&live, i) {
                        f.notes(&[pid], MESSAGES[m as usize]);
                    }
                }
                Step::Exit(i, clean) => {
                    if let Some(pid) = pick(&live, i) {
                        let status = if clean {
                            ExitStatus::Code(0)
                        } else {
                            ExitStatus::Signal { signal: 11, core: false }
                        };
                        f.exit(pid, status);
                    }
                }
                Step::Readable(i) => {
                    if let Some(pool) = pick(&pools, i) {
                        f.feed(Input::ListenerReadable { pool, waiting: 1 + (i % 3) as u32 });
                    }
                }
                Step::Reload => f.feed(Input::ReloadRequested),
                Step::Advance(ms) => f.advance(Duration::from_millis(u64::from(ms))),
                Step::SpawnFailed(i) => {
                    if let Some(pool) = pick(&pools, i) {
                        f.feed(Input::SpawnFailed { role: Role::Worker { pool }, error: "EAGAIN".into() });
                    }
                }
                Step::Quit => f.feed(Input::Stop { graceful: true }),
            }
            f.sup.check_invariants();
        }
    }
}
