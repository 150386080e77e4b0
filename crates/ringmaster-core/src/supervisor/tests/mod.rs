//! Unit and property tests of the supervisor, driven through a fake runtime.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ringmaster_proto::{Message, RawNote};

use super::schedule::utc;
use super::*;
use crate::config::{
    Command, Config, DaemonEntry, EventEntry, Listen, Location, Proto, RunAs, Schedule,
    ServiceEntry, StartEntry,
};

mod faults;
mod leftovers;
mod lifecycle;
mod on_demand;
mod plan;
mod pools;
mod props;
mod reload;
mod scale;
mod status;
mod upgrade;

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
    queue: std::collections::VecDeque<Input>,
    /// Every action carried out, in order.
    carried: Vec<Action>,
    /// Every log record, in order.
    logs: Vec<LogRecord>,
}

fn cmd(text: &str) -> Command {
    Command {
        argv: text.split_whitespace().map(String::from).collect(),
    }
}

/// A DAEMON entry that does not hold the services back (`wait=n`).
fn daemon(name: &str, program: &str) -> DaemonEntry {
    DaemonEntry {
        name: name.into(),
        cmd: cmd(program),
        wait: false,
        run_as: RunAs::default(),
        location: Location::default(),
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
            log_debug: true,
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
            queue: Default::default(),
            carried: vec![],
            logs: vec![],
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

    /// As the runtime: one input at a time, each answer queued until every action of the
    /// input that asked for it is carried out.
    fn feed(&mut self, input: Input) {
        self.queue.push_back(input);
        while let Some(input) = self.queue.pop_front() {
            let actions = self.sup.handle(input, self.now);
            // Every test also checks the indexes (index.rs) against a recount.
            self.sup.check_invariants();
            for action in actions {
                self.carry_out(action);
            }
        }
    }

    fn carry_out(&mut self, action: Action) {
        self.carried.push(action.clone());
        match action {
            Action::Bind { service, name, .. } => {
                self.binds.push(name.clone());
                if self.failing_binds.contains(&name) {
                    self.queue.push_back(Input::BindFailed {
                        service,
                        error: "Address already in use".into(),
                    })
                } else {
                    self.queue.push_back(Input::Bound {
                        service,
                        families: vec![0],
                    })
                }
            }
            Action::Spawn(req) => {
                let pid = self.next_pid;
                self.next_pid += 1;
                self.spawned.push((pid, req.clone()));
                self.queue.push_back(Input::Spawned {
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
                    Some(c) => self.queue.push_back(Input::ConfigLoaded(Box::new(c))),
                    None => self.queue.push_back(Input::ConfigRejected {
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
            Action::Log(record) => self.logs.push(record),
            Action::Exit(code) => self.exit = Some(code),
        }
    }

    /// The records of one kind, in order.
    fn logged(&self, event: LogEvent) -> Vec<&LogRecord> {
        self.logs.iter().filter(|r| r.event == event).collect()
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

    /// Each of `pids` says it is ready (AVAILABLE), as an announcing worker does at start.
    fn announce(&mut self, pids: &[Pid]) {
        for &pid in pids {
            self.note(pid, Message::Available);
        }
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
