//! On-demand spawning against a model of the accept queue: workers forked ahead while clients
//! wait, never a watch that would spin, never a waiting client left with no worker coming.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[test]
fn arrivals_while_a_batch_starts_get_their_own_workers() {
    let mut h = Harness::booted(config(vec![service("pop3", 110, 0, None)]));
    let pool = *h.watching.iter().next().expect("listener watched");
    h.feed(Input::ListenerReadable { pool, waiting: 3 });
    assert_eq!(h.workers_of("pop3").len(), 3, "one per waiting client");
    assert!(h.watching.contains(&pool), "starting only: still watched");
    h.feed(Input::ListenerReadable { pool, waiting: 5 });
    assert_eq!(h.workers_of("pop3").len(), 5, "two more came: two more");
    for total in 6..=8 {
        h.feed(Input::ListenerReadable { pool, waiting: 5 });
        assert_eq!(h.workers_of("pop3").len(), total, "at least one per event");
    }
    assert!(!h.watching.contains(&pool), "eight starting: no watch");
    h.feed(Input::ListenerReadable { pool, waiting: 9 });
    assert_eq!(h.workers_of("pop3").len(), 8, "never above eight starting");
    let workers = h.workers_of("pop3");
    h.note(workers[0], Message::Connection);
    assert!(h.watching.contains(&pool), "one took its client: watched");
    h.note(workers[1], Message::Available);
    assert!(!h.watching.contains(&pool), "an idle worker: no watch");
}

#[test]
fn a_lone_client_gets_its_worker_and_none_ahead() {
    let mut h = Harness::booted(config(vec![service("pop3", 110, 0, None)]));
    let pool = *h.watching.iter().next().expect("listener watched");
    h.feed(Input::ListenerReadable { pool, waiting: 1 });
    assert_eq!(h.workers_of("pop3").len(), 1);
    assert!(
        !h.watching.contains(&pool),
        "one starting for one client: no watch"
    );
    h.feed(Input::ListenerReadable { pool, waiting: 1 });
    assert_eq!(h.workers_of("pop3").len(), 1, "a stale event forks nothing");
    let workers = h.workers_of("pop3");
    h.note(workers[0], Message::Connection);
    assert!(h.watching.contains(&pool), "it took its client: watched");
    h.feed(Input::ListenerReadable { pool, waiting: 2 });
    assert_eq!(h.workers_of("pop3").len(), 3, "two clients: two workers");
    assert!(
        h.watching.contains(&pool),
        "two starting for two clients: watched"
    );
    h.feed(Input::ListenerReadable { pool, waiting: 2 });
    assert_eq!(
        h.workers_of("pop3").len(),
        4,
        "and one ahead, up to twice the clients"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Is {
    /// Forked, said nothing: in accept() soon, or already.
    Starting,
    Idle,
    Busy,
}

#[derive(Debug, Clone)]
enum Op {
    Arrive(u8),
    Readable,
    /// A starting or idle worker (the nth) takes a waiting client.
    Accept(usize),
    Announce(usize),
    /// A starting worker exits without accepting (clean or not).
    Die(usize, bool),
    /// A busy worker is done: exits (one use) or is idle again.
    Done(usize, bool),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..4).prop_map(Op::Arrive),
        Just(Op::Readable),
        any::<usize>().prop_map(Op::Accept),
        any::<usize>().prop_map(Op::Announce),
        (any::<usize>(), any::<bool>()).prop_map(|(w, c)| Op::Die(w, c)),
        (any::<usize>(), any::<bool>()).prop_map(|(w, e)| Op::Done(w, e)),
        (0u16..3000).prop_map(Op::Advance),
    ]
}

/// The harness, the clients in the accept queue, and what each live worker is doing.
struct Model {
    h: Harness,
    pool: PoolId,
    queue: u32,
    workers: BTreeMap<Pid, Is>,
}

impl Model {
    fn new(prefork: u32, maxchild: Option<u32>, maxforkrate: u32) -> Model {
        let mut s = service("lmtp", 24, prefork, maxchild);
        s.maxforkrate = maxforkrate;
        let h = Harness::booted(config(vec![s]));
        let pool = *h.sup.pools.keys().next().expect("one pool");
        let mut m = Model {
            h,
            pool,
            queue: 0,
            workers: BTreeMap::new(),
        };
        m.sync();
        m
    }

    fn sync(&mut self) {
        for pid in self.h.workers_of("lmtp") {
            self.workers.entry(pid).or_insert(Is::Starting);
        }
        // A throttled listener is shut down: its clients are refused, not left waiting.
        if self.h.paused.contains(&self.pool) {
            self.queue = 0;
        }
    }

    fn watched(&self) -> bool {
        self.h.watching.contains(&self.pool)
    }

    fn nth(&self, n: usize, states: &[Is]) -> Option<Pid> {
        let pids: Vec<Pid> = (self.workers.iter())
            .filter(|(_, is)| states.contains(is))
            .map(|(pid, _)| *pid)
            .collect();
        (!pids.is_empty()).then(|| pids[n % pids.len()])
    }

    /// What epoll would report: readable only while watched and a client waits.
    fn readable(&mut self) -> bool {
        if !self.watched() || self.queue == 0 {
            return false;
        }
        let forks = self.h.spawned.len();
        let waiting = self.queue;
        self.h.feed(Input::ListenerReadable {
            pool: self.pool,
            waiting,
        });
        assert!(
            self.h.spawned.len() > forks || !self.watched(),
            "readable while watched gave no fork and kept the watch: the loop would spin"
        );
        true
    }

    fn set(&mut self, pid: Pid, is: Option<Is>) {
        match is {
            Some(is) => self.workers.insert(pid, is),
            None => self.workers.remove(&pid),
        };
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Arrive(n) => self.queue += u32::from(n),
            Op::Readable => {
                self.readable();
            }
            Op::Accept(n) if self.queue > 0 => {
                if let Some(pid) = self.nth(n, &[Is::Starting, Is::Idle]) {
                    self.queue -= 1;
                    self.h.note(pid, Message::Connection);
                    self.set(pid, Some(Is::Busy));
                }
            }
            Op::Accept(_) => {}
            Op::Announce(n) => {
                if let Some(pid) = self.nth(n, &[Is::Starting]) {
                    self.h.note(pid, Message::Available);
                    self.set(pid, Some(Is::Idle));
                }
            }
            Op::Die(n, clean) => {
                if let Some(pid) = self.nth(n, &[Is::Starting]) {
                    self.h.exit(pid, ExitStatus::Code(i32::from(!clean)));
                    self.set(pid, None);
                }
            }
            Op::Done(n, exits) => {
                if let Some(pid) = self.nth(n, &[Is::Busy]) {
                    if exits {
                        self.h.exit(pid, ExitStatus::Code(0));
                        self.set(pid, None);
                    } else {
                        self.h.note(pid, Message::Available);
                        self.set(pid, Some(Is::Idle));
                    }
                }
            }
            Op::Advance(ms) => self.h.advance(Duration::from_millis(u64::from(ms))),
        }
        self.sync();
    }

    /// Invariants after every step.
    fn check(&self) {
        let now = self.h.now.mono;
        if self.watched() {
            assert!(
                self.h.sup.may_fork_for_waiting(self.pool, now),
                "watched while nothing may be forked"
            );
        }
        if self.queue > 0 && !self.watched() {
            assert!(
                !self.workers.is_empty() || self.h.sup.next_deadline().is_some(),
                "{} clients wait, unwatched, no worker and nothing due",
                self.queue
            );
        }
    }

    /// Everything runs its course: every waiting client gets a worker.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            self.sync();
            self.check();
            if self.queue == 0 {
                return;
            }
            if self.readable() {
                continue;
            } else if let Some(pid) = self.nth(0, &[Is::Starting, Is::Idle]) {
                self.queue -= 1;
                self.h.note(pid, Message::Connection);
                self.set(pid, Some(Is::Busy));
            } else if let Some(pid) = self.nth(0, &[Is::Busy]) {
                self.h.exit(pid, ExitStatus::Code(0));
                self.set(pid, None);
            } else if let Some(due) = self.h.sup.next_deadline() {
                let by = due.saturating_duration_since(self.h.now.mono);
                self.h.advance(by);
            } else {
                panic!("{} clients stranded: nothing will come", self.queue);
            }
        }
        panic!("{} clients still wait after 10,000 steps", self.queue);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_waiting_client_is_never_stranded_and_the_loop_never_spins(
        limits in prop_oneof![
            Just((0, None, 0)),
            Just((0, Some(3), 0)),
            Just((2, Some(6), 0)),
            Just((0, None, 3)),
            Just((1, Some(10), 2)),
        ],
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let (prefork, maxchild, rate) = limits;
        let mut m = Model::new(prefork, maxchild, rate);
        for op in &ops {
            m.apply(op);
            m.check();
        }
        m.drain();
    }
}
