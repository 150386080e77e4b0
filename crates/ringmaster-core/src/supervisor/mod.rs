//! The supervisor: every decision of the master, as a pure state machine.
//!
//! `handle(input, now)` takes one thing that happened and returns what to do, log records
//! included (log.rs: it never logs itself); it makes no syscall. The runtime turns fds and signals into [`Input`]s and carries out [`Action`]s;
//! their answers (spawned pids, bound sockets, loaded configs) join a queue of inputs and are
//! handled once every action of the input that asked for them is carried out, so `handle` is
//! never re-entered. Between an action and its answer the supervisor counts it as pending
//! (a pool's `in_flight` forks, a reload's `binding` services).
//!
//! Lifecycles, each one `match` per transition:
//! - master: `Starting` (START commands in order, then `wait=y` daemons) -> `Running` ->
//!   `Draining` (SIGQUIT) -> `Stopping` (SIGTERM, or the drain ran out) -> exit.
//! - worker: `Starting` (forked; Cyrus counts it ready) -> `Ready` <-> `Busy` -> `Exiting`
//!   (sent the exit note) -> reaped.
//! - daemon (daemons.rs): `DaemonRun::Down { restart_at }` -> (spawned) `Up { pid, started_at,
//!   term_at, killed }` -> (SIGTERM by a reload or the stop: `term_at` set; SIGKILL after the
//!   stop timeout: `killed`) -> (exit) `Down`, restarted with back-off, or at once as
//!   `DaemonNext::Replace` says, or forgotten on `Remove` (which a later reload that brings
//!   it back turns into `Replace`).
//! - pool generations: a reload bumps the generation; only current-generation workers count
//!   as ready; older ones get SIGHUP, then SIGTERM and SIGKILL if they outstay the drain.
//!
//! Worker state x event, as in s6-supervise (`-`: no change). A worker has two lifecycles:
//! `WorkerState` (what it says of itself) and `Recycle` (what the master sent it; recycle.rs,
//! whose methods `hold`, `end_hold`, `hup`, `term` and `kill` are the only transitions):
//!
//! | state    | AVAILABLE | UNAVAILABLE, CONNECTION | CONNECTION_MULTI | EXITING | exit    |
//! |----------|-----------|-------------------------|------------------|---------|---------|
//! | Starting | Ready [1] | Busy                    | -                | Exiting | [2]     |
//! | Ready    | -         | Busy                    | -                | Exiting | [2]     |
//! | Busy     | Ready     | -                       | Ready            | Exiting | [2] [3] |
//! | Exiting  | -         | -                       | -                | -       | [2] [3] |
//!
//! | `Recycle`          | reload         | hold ends [1] | drain over | TERM (stop) | timeout  |
//! |--------------------|----------------|---------------|------------|-------------|----------|
//! | `Serving`          | `Held` [6], [4]| -             | -          | `Termed` [5]| -        |
//! | `Held { until }`   | same, or [4]   | `Hupped` [4]  | -          | `Termed` [5]| -        |
//! | `Hupped { at }`    | -              | -             | `Termed`   | `Termed` [5]| -        |
//! | `Termed { at, .. }`| -              | -             | -          | -           | `Killed` |
//! | `Killed { .. }`    | -              | -             | -          | -           | -        |
//!
//! `[4]` there is `Hupped`. `Termed` and `Killed` keep `hupped`, whether SIGHUP came first.
//! Only `Ready` and `Busy` workers become `Held`; otherwise the two lifecycles are
//! independent. SIGKILL to everything at the stop timeout makes every worker `Killed`.
//!
//! 1. The pool is marked as announcing; a current-generation worker ends one hold.
//! 2. Reaped and forgotten. A worker left alone (not recycled nor stopped) that dies unclean
//!    while idle or before serving, or exits within `QUICK_EXIT` without serving, counts
//!    toward the pool's throttle (pools.rs). An unclean exit of a worker neither recycled nor
//!    stopped is cleaned up after (`CleanupAfterCrash`).
//! 3. Busy and Exiting workers count as failures only if they never served a client.
//! 4. No longer counted ready; exiting clean or by SIGHUP is a recycle, never a failure; still
//!    running after the drain (or `MAX_LIVE_GENERATIONS` reloads later): SIGTERM. SIGQUIT
//!    sends it to every worker at once.
//! 5. SIGKILL if still running after the stop timeout.
//! 6. Only in a pool whose workers announce: busy ones, and idle ones up to the prefork, keep
//!    serving until a new worker says AVAILABLE, `HOLD_LIMIT` passes, or the pool needs room
//!    to fork (reload.rs, pools.rs).

mod daemons;
mod events;
mod faults;
pub mod handover;
mod index;
mod leftovers;
mod log;
mod plan;
mod pools;
mod recycle;
mod reload;
pub mod schedule;
mod start;
mod status;
mod stop;
mod types;
mod upgrade;

#[cfg(test)]
mod tests;

pub use daemons::{readiness, Readiness};
pub use faults::EXIT_BIND_FAILED;
pub use log::{Field, Level, LogEvent, LogRecord};
pub use plan::*;
pub use schedule::{utc, LocalClock, LocalTime};
pub use status::*;
pub use types::*;
pub use upgrade::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::config::{Config, ServiceEntry};
use crate::ratelimit::RateLimiter;
use daemons::{daemon_backoff, Daemon, DaemonRun};
use events::Event;
use log::Logs;
use pools::{NoteProblem, Pool, PoolLimits, Worker, WorkerState};
use recycle::Recycle;
use reload::ReloadState;

/// sysexits.h EX_CONFIG, the exit status when the configuration is invalid: the master's
/// when start-up fails on it (as Cyrus's), and `ringmaster check`'s when it would.
pub const EXIT_CONFIG: i32 = 78;
/// Exit status when a START command fails (as Cyrus).
pub const EXIT_START_FAILED: i32 = 1;

/// Knobs of the master that are not in cyrus.conf.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long SIGTERMed children get before SIGKILL.
    pub stop_timeout: Duration,
    /// How long a recycled worker may go on serving its client before SIGTERM.
    pub drain_timeout: Duration,
    /// Extra environment for every child (the exit-note offer, for one).
    pub worker_env: Vec<(String, String)>,
    /// imapd.conf's `master_bind_errors_fatal`: a bind failure at start-up stops the master.
    pub bind_errors_fatal: bool,
    /// Build debug-level log records (the shell prints them): off, a fork or an exit costs
    /// no record at all.
    pub log_debug: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stop_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(300),
            worker_env: Vec::new(),
            bind_errors_fatal: false,
            log_debug: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Service {
    spec: ServiceEntry,
    limits: PoolLimits,
    families: Vec<u8>,
    /// Removed or replaced by a reload: its workers drain, it forks no more.
    retiring: bool,
    /// Bound (or tried to).
    bound: bool,
    /// Its last bind failed: down until a retry succeeds.
    down: Option<faults::BindDown>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Running START commands, one at a time.
    StartCommands {
        next: usize,
        running: Option<Pid>,
    },
    /// Waiting for `wait=y` daemons to say "ok".
    WaitDaemons,
    Running,
    /// SIGQUIT: listeners closed, workers finishing their clients until `until`.
    Draining {
        until: Instant,
    },
    /// SIGTERM: everything got SIGTERM at `since`; SIGKILL at `since + stop_timeout`.
    Stopping {
        since: Instant,
        killed: bool,
    },
    Exited,
}

/// The supervisor: all state of the master, no syscalls.
pub struct Supervisor {
    config: Config,
    settings: Settings,
    local: LocalClock,
    phase: Phase,
    exit_code: i32,
    next_service_key: u32,
    services: BTreeMap<ServiceKey, Service>,
    pools: BTreeMap<PoolId, Pool>,
    workers: HashMap<Pid, Worker>,
    /// When each recycled worker next needs a look (index.rs).
    worker_timers: index::Timers<Pid>,
    /// When each pool next needs a look while running: its throttle ends, or the fork rate
    /// allows the fork it wants.
    pool_timers: index::Timers<PoolId>,
    /// Pools the current input may have changed: the only ones `maintain` looks at.
    touched: BTreeSet<PoolId>,
    /// Retired services with no pool left are to be looked for (after a reload or a stop).
    sweep_services: bool,
    daemons: Vec<Daemon>,
    events: Vec<Event>,
    /// Children that are neither workers nor daemons nor events (START commands).
    others: HashMap<Pid, Role>,
    reload: ReloadState,
    faults: faults::Faults,
    /// Process groups reaped workers left behind.
    leftovers: leftovers::Leftovers,
    /// Complaints about status notes, bounded per pipe: a worker writing garbage must not
    /// flood the log.
    note_log: RateLimiter<(PoolId, NoteProblem)>,
    /// Records to return with the actions of this `handle`.
    logs: Logs,
}

impl Supervisor {
    pub fn new(config: Config, settings: Settings, local: LocalClock) -> Supervisor {
        let logs = Logs::new(settings.log_debug);
        Supervisor {
            config,
            settings,
            local,
            phase: Phase::StartCommands {
                next: 0,
                running: None,
            },
            exit_code: 0,
            next_service_key: 0,
            services: BTreeMap::new(),
            pools: BTreeMap::new(),
            workers: HashMap::new(),
            worker_timers: index::Timers::default(),
            pool_timers: index::Timers::default(),
            touched: BTreeSet::new(),
            sweep_services: false,
            daemons: Vec::new(),
            events: Vec::new(),
            others: HashMap::new(),
            reload: ReloadState::default(),
            faults: faults::Faults::default(),
            leftovers: leftovers::Leftovers::default(),
            note_log: RateLimiter::default(),
            logs,
        }
    }

    /// The config now in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Pids of every child we know of (for tests and a last-ditch cleanup).
    pub fn children(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self.workers.keys().copied().collect();
        pids.extend(self.daemons.iter().filter_map(Daemon::pid));
        pids.extend(self.events.iter().flat_map(|e| e.running.iter().copied()));
        pids.extend(self.others.keys().copied());
        pids
    }

    /// The earliest moment at which `handle(Input::Tick)` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let running = self.phase == Phase::Running;
        [
            self.stop_deadline(),
            self.worker_timers.first(),
            running.then(|| self.pool_timers.first()).flatten(),
            running.then(|| self.events_deadline()).flatten(),
            running.then(|| self.reload_deadline()).flatten(),
            running.then(|| self.next_bind_retry()).flatten(),
            self.daemons_deadline(),
            self.note_log.next_report(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Exited {
            return out;
        }
        let phase = std::mem::discriminant(&self.phase);
        match input {
            Input::Boot => self.run_next_start_command(now, &mut out),
            Input::Tick => {}
            Input::ListenerReadable { pool, waiting } => {
                self.on_readable(pool, waiting, now, &mut out)
            }
            Input::Note { pool, note } => self.on_note(pool, note, now),
            Input::Notes { pool, notes } => {
                for note in notes {
                    self.on_note(pool, note, now);
                }
            }
            Input::Exited {
                pid,
                status,
                pgid,
                group_alive,
            } => self.on_exit(pid, status, (pgid, group_alive), now, &mut out),
            Input::Spawned { role, pid } => {
                // A new process got this number, so no group held it: a group left behind
                // under it is over, whether or not a reap showed it.
                self.leftovers.group_gone(pid);
                self.on_spawned(role, pid, now);
            }
            Input::GroupGone { pgid } => self.leftovers.group_gone(pgid),
            Input::SpawnFailed { role, error } => self.on_spawn_failed(role, &error, now, &mut out),
            Input::Bound { service, families } => {
                self.on_bound(service, families, &mut out);
                self.on_reload_bind_answer(service, None, now, &mut out);
            }
            Input::BindFailed { service, error } => {
                self.on_bind_failed(service, &error, now, &mut out);
                self.on_reload_bind_answer(service, Some(&error), now, &mut out);
            }
            Input::DaemonReady { name } => self.on_daemon_ready(&name, now, &mut out),
            Input::DaemonNotReady { name, reason } => {
                self.logs
                    .error(
                        LogEvent::DaemonNotReady,
                        format!("daemon {name} did not say it was ready: {reason}"),
                    )
                    .with(Field::Entry, &name)
                    .with(Field::Error, &reason);
                if self.phase == Phase::WaitDaemons {
                    self.begin_stop(now, EXIT_CONFIG, &mut out);
                }
            }
            Input::ReloadRequested => self.on_reload_requested(now, &mut out),
            Input::ConfigLoaded(config) => self.apply_reload(*config, now, &mut out),
            Input::ConfigRejected { errors } => {
                // The launcher logged why (unreadable or invalid) and that the old one runs on.
                self.logs
                    .debug(LogEvent::ReloadRejected, "reload: configuration rejected")
                    .with(Field::Count, errors.len());
                self.on_config_rejected(errors, now, &mut out);
            }
            Input::Stop { graceful } => self.on_stop(graceful, now, &mut out),
        }
        if std::mem::discriminant(&self.phase) != phase {
            self.touch_all_pools();
        }
        self.on_timers(now, &mut out);
        self.retry_binds(now.mono, &mut out);
        self.report_suppressed_notes(now);
        if std::mem::discriminant(&self.phase) != phase {
            self.touch_all_pools();
        }
        self.maintain(now, &mut out);
        self.logs.drain_into(&mut out);
        out
    }

    // ----- services -------------------------------------------------------------------

    fn add_service(
        &mut self,
        spec: ServiceEntry,
        take_over: Vec<ServiceKey>,
        out: &mut Vec<Action>,
    ) -> ServiceKey {
        let key = ServiceKey(self.next_service_key);
        self.next_service_key += 1;
        out.push(Action::Bind {
            service: key,
            name: spec.name.clone(),
            listen: spec.listen.clone(),
            proto: spec.proto,
            take_over,
        });
        self.services.insert(
            key,
            Service {
                limits: PoolLimits::of(&spec),
                spec,
                families: Vec::new(),
                retiring: false,
                bound: false,
                down: None,
            },
        );
        key
    }

    fn on_bound(&mut self, key: ServiceKey, families: Vec<u8>, out: &mut Vec<Action>) {
        let Some(service) = self.services.get_mut(&key).filter(|s| !s.retiring) else {
            // A bind retry that a reload overtook: the service is gone, its sockets must go.
            out.push(Action::Release {
                service: key,
                refuse: true,
            });
            return;
        };
        let first = !service.bound;
        service.bound = true;
        for &family in &families {
            let id = PoolId {
                service: key,
                family,
            };
            self.pools.entry(id).or_insert_with(Pool::new);
            self.touched.insert(id);
        }
        service.families = families;
        self.bind_succeeded(key, first, out);
    }

    // ----- children: spawn answers and exits ------------------------------------------

    fn on_spawned(&mut self, role: Role, pid: Pid, now: Now) {
        match role {
            Role::Worker { pool } => {
                let Some(p) = self.pools.get_mut(&pool) else {
                    return;
                };
                p.in_flight = p.in_flight.saturating_sub(1);
                let worker = Worker {
                    pool,
                    generation: p.generation,
                    state: WorkerState::Starting,
                    forked_at: now.mono,
                    recycle: Recycle::Serving,
                    served: false,
                };
                self.insert_worker(pid, worker);
                if self.logs.debug_on() {
                    let message = format!("forked worker {pid} for {}", self.pool_name(pool));
                    self.pool_log(Level::Debug, LogEvent::WorkerForked, pool, message)
                        .with(Field::Pid, pid);
                }
            }
            Role::Start { index } => {
                if let Phase::StartCommands { running, next } = &mut self.phase {
                    if *next == index {
                        *running = Some(pid);
                    }
                }
                self.others.insert(pid, Role::Start { index });
            }
            Role::Daemon { name } => {
                if let Some(d) = self.daemons.iter_mut().find(|d| d.spec.name == name) {
                    d.starts += 1;
                    d.run = DaemonRun::Up {
                        pid,
                        started_at: now.mono,
                        term_at: None,
                        killed: false,
                    };
                    self.logs
                        .info(
                            LogEvent::DaemonStarted,
                            format!("started daemon {name} as pid {pid}"),
                        )
                        .with(Field::Entry, &name)
                        .with(Field::Pid, pid);
                }
            }
            Role::Event { name } => {
                if let Some(e) = self.events.iter_mut().find(|e| e.spec.name == name) {
                    e.running.push(pid);
                } else {
                    self.others.insert(pid, Role::Event { name });
                }
            }
        }
    }

    fn on_spawn_failed(&mut self, role: Role, err: &str, now: Now, out: &mut Vec<Action>) {
        match role {
            Role::Worker { pool } => {
                let message = format!("cannot start a worker for {}: {err}", self.pool_name(pool));
                self.pool_log(Level::Error, LogEvent::WorkerSpawnFailed, pool, message)
                    .with(Field::Error, err);
                if let Some(p) = self.pools.get_mut(&pool) {
                    p.in_flight = p.in_flight.saturating_sub(1);
                    p.counters.last_exec_error = Some(err.to_string());
                }
                self.touched.insert(pool);
                self.count_ready_fail(pool, now, out);
            }
            Role::Start { index } => {
                let name = self
                    .config
                    .start
                    .get(index)
                    .map_or("?", |s| s.name.as_str());
                self.logs
                    .error(
                        LogEvent::StartFailed,
                        format!("cannot run START {name}: {err}"),
                    )
                    .with(Field::Entry, name)
                    .with(Field::Error, err);
                self.begin_stop(now, EXIT_START_FAILED, out);
            }
            Role::Daemon { name } => {
                self.logs
                    .error(
                        LogEvent::DaemonSpawnFailed,
                        format!("cannot start daemon {name}: {err}"),
                    )
                    .with(Field::Entry, &name)
                    .with(Field::Error, err);
                if self.phase == Phase::WaitDaemons {
                    self.begin_stop(now, EXIT_CONFIG, out);
                } else if let Some(d) = self.daemons.iter_mut().find(|d| d.spec.name == name) {
                    d.quick_deaths += 1;
                    d.restart_at(Some(now.mono + daemon_backoff(d.quick_deaths)));
                }
            }
            Role::Event { name } => {
                self.logs
                    .error(
                        LogEvent::EventSpawnFailed,
                        format!("cannot run event {name}: {err}"),
                    )
                    .with(Field::Entry, &name)
                    .with(Field::Error, err);
            }
        }
    }

    fn on_exit(
        &mut self,
        pid: Pid,
        status: ExitStatus,
        (pgid, group_alive): (Option<Pid>, bool),
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if let Some(worker) = self.remove_worker(pid) {
            // A worker's group is its own, numbered by its pid: members left mean leftovers.
            if group_alive && pgid == Some(pid) {
                let (name, maxchild) = match self.services.get(&worker.pool.service) {
                    Some(s) => (s.spec.name.clone(), s.limits.maxchild),
                    None => (self.pool_name(worker.pool), u32::MAX),
                };
                let bound = leftovers::bound_for(maxchild);
                self.leftovers
                    .left_behind(&name, pid, bound, now.mono, &mut self.logs, out);
            }
            self.on_worker_exit(pid, worker, status, now, out);
        } else if let Some(index) = self.daemons.iter().position(|d| d.pid() == Some(pid)) {
            self.on_daemon_exit(index, status, now, out);
        } else if let Some(event) = self.events.iter_mut().find(|e| e.running.contains(&pid)) {
            event.running.retain(|&p| p != pid);
            if !status.is_clean() {
                self.logs
                    .warn(
                        LogEvent::EventFailed,
                        format!("event {} (pid {pid}) ended with {status}", event.spec.name),
                    )
                    .with(Field::Entry, &event.spec.name)
                    .with(Field::Pid, pid)
                    .with(Field::Status, status);
            }
        } else if let Some(role) = self.others.remove(&pid) {
            if let Role::Start { index } = role {
                self.on_start_command_exit(index, pid, status, now, out);
            }
        } else if let Some((group, w)) =
            pgid.and_then(|g| self.workers.get(&g).map(|w| (g, w.pool)))
        {
            // A live worker's descendant whose parent went first came back to us: normal for
            // a worker that runs a program which forks (a sendmail, say).
            if self.logs.debug_on() {
                let message = format!(
                    "{}: reaped process {pid} ({status}) started under worker {group}",
                    self.pool_name(w)
                );
                self.pool_log(Level::Debug, LogEvent::StrayDescendantReaped, w, message)
                    .with(Field::Pid, pid)
                    .with(Field::Status, status)
                    .with(Field::Pgid, group);
            }
        } else {
            self.leftovers
                .reaped_unknown(pid, status, pgid, now.mono, &mut self.logs);
        }
        if let (Some(pgid), false) = (pgid, group_alive) {
            self.leftovers.group_gone(pgid);
        }
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Draining { .. })
            && self.no_children()
        {
            self.logs.info(
                LogEvent::AllExited,
                "all children have exited, closing down",
            );
            self.phase = Phase::Exited;
            self.leftovers.signal_all(Sig::Kill, out);
            out.push(Action::Exit(self.exit_code));
        }
    }

    // ----- timers ---------------------------------------------------------------------

    /// Every deadline that has passed, each thing's own in its file: the stop's, recycled
    /// workers' and SIGTERMed daemons' always; throttled pools', daemon restarts', events' and
    /// reloads' only while running.
    fn on_timers(&mut self, now: Now, out: &mut Vec<Action>) {
        self.tick_stop(now, out);
        self.tick_recycled_workers(now, out);
        self.tick_stuck_daemons(now, out);
        if self.phase != Phase::Running {
            return;
        }
        self.tick_throttled_pools(now, out);
        self.tick_daemons(now, out);
        self.tick_events(now, out);
        self.tick_reload(now, out);
    }

    /// A record about a pool: with its service and family.
    fn pool_log(
        &mut self,
        level: Level,
        event: LogEvent,
        pool: PoolId,
        message: String,
    ) -> &mut LogRecord {
        let service = self.service_name(pool.service);
        self.logs
            .push(level, event, message)
            .with(Field::Service, service)
            .with(Field::Family, pool.family)
    }

    /// A service's entry name, for log records.
    fn service_name(&self, key: ServiceKey) -> String {
        match self.services.get(&key) {
            Some(s) => s.spec.name.clone(),
            None => format!("service#{}", key.0),
        }
    }

    /// `service/family`, for log lines.
    pub fn pool_name(&self, id: PoolId) -> String {
        match self.services.get(&id.service) {
            Some(s) => format!("{}/{}", s.spec.name, id.family),
            None => format!("service#{}/{}", id.service.0, id.family),
        }
    }
}

/// The earlier of two optional moments.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
