//! The supervisor: every decision of the master, as a pure state machine.
//!
//! `handle(input, now)` takes one thing that happened and returns what to do; it makes no
//! syscall. The runtime turns fds and signals into [`Input`]s and carries out [`Action`]s,
//! feeding the answers (spawned pids, bound sockets, loaded configs) straight back in.
//!
//! Lifecycles, each one `match` per transition:
//! - master: `Starting` (START commands in order, then `wait=y` daemons) -> `Running` ->
//!   `Draining` (SIGQUIT) -> `Stopping` (SIGTERM, or the drain ran out) -> exit.
//! - worker: `Starting` (forked; Cyrus counts it ready) -> `Ready` <-> `Busy` -> `Exiting`
//!   (sent the exit note) -> reaped.
//! - pool generations: a reload bumps the generation; only current-generation workers count
//!   as ready; older ones get SIGHUP, then SIGTERM and SIGKILL if they outstay the drain.

mod faults;
mod leftovers;
pub mod schedule;
mod types;

#[cfg(test)]
mod tests;

pub use faults::EXIT_BIND_FAILED;
pub use schedule::{utc, LocalClock, LocalTime};
pub use types::*;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ringmaster_proto::Message;
use tracing::{debug, error, info, warn};

use crate::config::{Config, DaemonEntry, EventEntry, Schedule, ServiceEntry};
use crate::ratelimit::{RateLimiter, Verdict};

/// A worker that dies failing before it served, this many times in a row...
const MAX_READY_FAILS: u32 = 5;
/// ...each within this long of the one before, throttles its pool.
const READY_FAIL_INTERVAL: Duration = Duration::from_secs(10);
/// A worker that exits cleanly without serving counts as a failure only when it lived less
/// than this: Cyrus's idle workers exit 0 unserved when their program file changed (a package
/// upgrade), all at once, and their replacements are healthy.
const QUICK_EXIT: Duration = Duration::from_secs(5);
/// First pause of a throttled pool; it doubles each time, up to [`MAX_THROTTLE`].
const FIRST_THROTTLE: Duration = Duration::from_secs(10);
const MAX_THROTTLE: Duration = Duration::from_secs(300);
/// A babysat pool pauses this long, every time, then tries again.
const BABYSIT_PAUSE: Duration = Duration::from_secs(10);
/// A daemon that lived this long was healthy: restart it at once.
const DAEMON_HEALTHY: Duration = Duration::from_secs(10);
const DAEMON_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Workers that never announce readiness count as settled after living this long; a
/// coalesced reload waits at most [`SETTLE_LIMIT`] for a reload to settle.
const SETTLE_AGE: Duration = Duration::from_millis(250);
const SETTLE_LIMIT: Duration = Duration::from_secs(2);
const SETTLE_RECHECK: Duration = Duration::from_millis(50);
/// An old idle worker kept for a ready-announcing pool is retired by then at the latest.
const HOLD_LIMIT: Duration = Duration::from_secs(2);
/// Generations older than this many reloads are terminated without waiting for the drain.
const MAX_LIVE_GENERATIONS: u64 = 8;
const ONE_SECOND: Duration = Duration::from_secs(1);

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stop_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(300),
            worker_env: Vec::new(),
            bind_errors_fatal: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Forked, said nothing yet. Counted ready, as Cyrus does.
    Starting,
    Ready,
    Busy,
    /// Sent the exit note: accepts nothing more, no longer counted.
    Exiting,
}

#[derive(Debug, Clone)]
struct Worker {
    pool: PoolId,
    generation: u64,
    state: WorkerState,
    forked_at: Instant,
    /// When we sent SIGHUP (recycle), if we did.
    hup_at: Option<Instant>,
    /// When we sent SIGTERM, if we did.
    term_at: Option<Instant>,
    killed: bool,
    /// Old idle worker kept serving until a ready replacement exists (or until then).
    held_until: Option<Instant>,
    /// It counted a connection (CONNECTION or CONNECTION_MULTI) at least once.
    served: bool,
}

impl Worker {
    fn is_idle(&self) -> bool {
        matches!(self.state, WorkerState::Starting | WorkerState::Ready)
    }
}

/// What a pool needs from its entry, with Cyrus's adjustments applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PoolLimits {
    prefork: u32,
    maxchild: u32,
    maxforkrate: u32,
    babysit: bool,
}

impl PoolLimits {
    fn of(spec: &ServiceEntry) -> PoolLimits {
        let mut limits = PoolLimits {
            prefork: spec.prefork,
            maxchild: spec.maxchild.unwrap_or(u32::MAX),
            maxforkrate: spec.maxforkrate,
            babysit: spec.babysit,
        };
        if spec.proto.is_udp() {
            // One worker reads the socket at a time, as Cyrus does for UDP.
            limits.prefork = limits.prefork.min(1);
            limits.maxchild = 1;
            limits.babysit = false;
        }
        if limits.babysit {
            limits.prefork = limits.prefork.max(1);
            if limits.maxforkrate == 0 {
                limits.maxforkrate = 10;
            }
        }
        limits
    }
}

#[derive(Debug, Clone)]
struct Pool {
    generation: u64,
    /// Forks started whose pid we do not know yet.
    in_flight: u32,
    /// Forks of the last second, for maxforkrate.
    recent_forks: VecDeque<Instant>,
    /// Consecutive failures before serving, and when the last one was.
    ready_fails: u32,
    last_ready_fail: Option<Instant>,
    /// Throttled: the listener is paused until then.
    throttled_until: Option<Instant>,
    times_throttled: u32,
    /// Some worker of this pool said AVAILABLE before its first client: its workers tell us
    /// when they are really ready.
    announces: bool,
    /// What we last told the runtime about watching the listener.
    watching: bool,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            generation: 0,
            in_flight: 0,
            recent_forks: VecDeque::new(),
            ready_fails: 0,
            last_ready_fail: None,
            throttled_until: None,
            times_throttled: 0,
            announces: false,
            watching: false,
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

#[derive(Debug, Clone)]
struct Daemon {
    spec: DaemonEntry,
    pid: Option<Pid>,
    started_at: Option<Instant>,
    restart_at: Option<Instant>,
    quick_deaths: u32,
    ready: bool,
    /// The config this daemon comes back with after a reload recycles it; None with
    /// `removed` set means it does not come back.
    replacement: Option<DaemonEntry>,
    removed: bool,
    term_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Event {
    spec: EventEntry,
    /// Next firing, monotonic (periods) ...
    next_mono: Option<Instant>,
    /// ... or wall clock (at=, cron=).
    next_unix: Option<i64>,
    running: Vec<Pid>,
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

/// A reload whose new services' sockets are being bound: nothing old is retired before
/// every new bind has answered, so a bind that fails leaves the old service serving.
#[derive(Debug, Clone)]
struct PendingReload {
    config: Config,
    /// Running entries the new config could not resolve: they go on as they are.
    untouched: faults::Untouched,
    releases: Vec<ServiceKey>,
    /// New services (already on the new configuration: not recycled).
    added: Vec<ServiceKey>,
    /// New services whose bind has not answered yet.
    binding: Vec<ServiceKey>,
    /// New services whose bind failed.
    failed: Vec<ServiceKey>,
}

/// Reload bookkeeping: one at a time, later SIGHUPs coalesced.
#[derive(Debug, Clone, Default)]
struct ReloadState {
    /// The reload being applied, waiting for its binds.
    applying: Option<Box<PendingReload>>,
    /// A reload was asked for and waits for the last one to settle.
    pending: bool,
    /// When the last reload was applied.
    applied_at: Option<Instant>,
    /// While one is pending: when to look again whether the last one has settled.
    recheck_at: Option<Instant>,
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
}

/// What is wrong with a status note, for [`Supervisor::note_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NoteProblem {
    Unrecognized,
    UnknownPid,
    WrongPipe,
}

impl Supervisor {
    pub fn new(config: Config, settings: Settings, local: LocalClock) -> Supervisor {
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
            daemons: Vec::new(),
            events: Vec::new(),
            others: HashMap::new(),
            reload: ReloadState::default(),
            faults: faults::Faults::default(),
            leftovers: leftovers::Leftovers::default(),
            note_log: RateLimiter::default(),
        }
    }

    /// The config now in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Pids of every child we know of (for tests and a last-ditch cleanup).
    pub fn children(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self.workers.keys().copied().collect();
        pids.extend(self.daemons.iter().filter_map(|d| d.pid));
        pids.extend(self.events.iter().flat_map(|e| e.running.iter().copied()));
        pids.extend(self.others.keys().copied());
        pids
    }

    /// Workers of a pool: (all live, current-generation ready-or-starting).
    pub fn pool_counts(&self, pool: PoolId) -> (u32, u32) {
        let generation = self.pools.get(&pool).map_or(0, |p| p.generation);
        let mut active = 0;
        let mut ready = 0;
        for w in self.workers.values().filter(|w| w.pool == pool) {
            if w.state != WorkerState::Exiting {
                active += 1;
            }
            if w.generation == generation && w.is_idle() && w.hup_at.is_none() {
                ready += 1;
            }
        }
        (active, ready)
    }

    /// The earliest moment at which `handle(Input::Tick)` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        match self.phase {
            Phase::Draining { until } => consider(Some(until)),
            Phase::Stopping {
                since,
                killed: false,
            } => consider(Some(since + self.settings.stop_timeout)),
            _ => {}
        }
        for w in self.workers.values() {
            if w.term_at.is_none() && w.hup_at.is_none() {
                consider(w.held_until);
            }
            if let Some(term) = w.term_at {
                if !w.killed {
                    consider(Some(term + self.settings.stop_timeout));
                }
            } else if let Some(hup) = w.hup_at {
                consider(Some(hup + self.settings.drain_timeout));
            }
        }
        if matches!(self.phase, Phase::Running) {
            for (id, pool) in &self.pools {
                consider(pool.throttled_until);
                if self.wants_fork(*id) || self.rate_holds_watch(*id) {
                    consider(self.fork_allowed_at(*id));
                }
            }
            for e in &self.events {
                consider(e.next_mono);
            }
            if self.reload.pending {
                consider(self.reload.recheck_at);
            }
            consider(self.next_bind_retry());
        }
        if !matches!(self.phase, Phase::Stopping { .. } | Phase::Exited) {
            for d in &self.daemons {
                // Daemons are restarted only while running (`on_timers`).
                if self.phase == Phase::Running {
                    consider(d.restart_at);
                }
                if let Some(term) = d.term_at {
                    consider(Some(term + self.settings.stop_timeout));
                }
            }
        }
        consider(self.note_log.next_report());
        next
    }

    /// Takes one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Exited {
            return out;
        }
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
                self.on_reload_bind_answer(service, false, now, &mut out);
            }
            Input::BindFailed { service, error } => {
                self.on_bind_failed(service, &error, now, &mut out);
                self.on_reload_bind_answer(service, true, now, &mut out);
            }
            Input::DaemonReady { name } => self.on_daemon_ready(&name, now, &mut out),
            Input::DaemonNotReady { name, reason } => {
                error!("daemon {name} did not say it was ready: {reason}");
                if self.phase == Phase::WaitDaemons {
                    self.begin_stop(now, EXIT_CONFIG, &mut out);
                }
            }
            Input::ReloadRequested => self.on_reload_requested(now, &mut out),
            Input::ConfigLoaded(config) => self.apply_reload(*config, now, &mut out),
            Input::ConfigRejected => {
                // The launcher said why (unreadable or invalid) and that the old one runs on.
                debug!("reload: configuration rejected");
            }
            Input::Stop { graceful } => self.on_stop(graceful, now, &mut out),
        }
        self.on_timers(now, &mut out);
        self.retry_binds(now.mono, &mut out);
        self.report_suppressed_notes(now);
        self.maintain(now, &mut out);
        out
    }

    // ----- start-up -------------------------------------------------------------------

    fn run_next_start_command(&mut self, now: Now, out: &mut Vec<Action>) {
        let Phase::StartCommands {
            next,
            running: None,
        } = self.phase
        else {
            return;
        };
        if let Some(entry) = self.config.start.get(next) {
            info!("running START {}: {}", entry.name, entry.cmd);
            out.push(Action::Spawn(SpawnRequest {
                role: Role::Start { index: next },
                name: entry.name.clone(),
                argv: entry.cmd.argv.clone(),
                env: self.settings.worker_env.clone(),
                run_as: entry.run_as.clone(),
                maxfds: 0,
                fds: ChildFds::None,
            }));
            return;
        }
        self.phase = Phase::WaitDaemons;
        for spec in self.config.daemons.clone() {
            self.daemons.push(Daemon {
                spec,
                pid: None,
                started_at: None,
                restart_at: None,
                quick_deaths: 0,
                ready: false,
                replacement: None,
                removed: false,
                term_at: None,
            });
        }
        for index in 0..self.daemons.len() {
            self.spawn_daemon(index, out);
        }
        self.finish_start_if_daemons_ready(now, out);
    }

    fn finish_start_if_daemons_ready(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.phase != Phase::WaitDaemons {
            return;
        }
        if self.daemons.iter().any(|d| d.spec.wait && !d.ready) {
            return;
        }
        self.phase = Phase::Running;
        for spec in self.config.services.clone() {
            self.add_service(spec, Vec::new(), out);
        }
        let binds = self.config.services.len();
        self.events = self
            .config
            .events
            .clone()
            .into_iter()
            .map(|spec| self.new_event(spec, now))
            .collect();
        // Action::Ready follows once every bind has an outcome (faults.rs).
        self.expect_startup_binds(binds, out);
    }

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
            self.pools
                .entry(PoolId {
                    service: key,
                    family,
                })
                .or_insert_with(Pool::new);
        }
        service.families = families;
        self.bind_succeeded(key, first, out);
    }

    // ----- events in ------------------------------------------------------------------

    fn on_spawned(&mut self, role: Role, pid: Pid, now: Now) {
        match role {
            Role::Worker { pool } => {
                let Some(p) = self.pools.get_mut(&pool) else {
                    return;
                };
                p.in_flight = p.in_flight.saturating_sub(1);
                self.workers.insert(
                    pid,
                    Worker {
                        pool,
                        generation: p.generation,
                        state: WorkerState::Starting,
                        forked_at: now.mono,
                        hup_at: None,
                        term_at: None,
                        killed: false,
                        held_until: None,
                        served: false,
                    },
                );
                debug!("forked worker {pid} for {}", self.pool_name(pool));
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
                    d.pid = Some(pid);
                    d.started_at = Some(now.mono);
                    d.restart_at = None;
                    info!("started daemon {name} as pid {pid}");
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
                error!("cannot start a worker for {}: {err}", self.pool_name(pool));
                if let Some(p) = self.pools.get_mut(&pool) {
                    p.in_flight = p.in_flight.saturating_sub(1);
                }
                self.count_ready_fail(pool, now, out);
            }
            Role::Start { index } => {
                let name = self
                    .config
                    .start
                    .get(index)
                    .map_or("?", |s| s.name.as_str());
                error!("cannot run START {name}: {err}");
                self.begin_stop(now, EXIT_START_FAILED, out);
            }
            Role::Daemon { name } => {
                error!("cannot start daemon {name}: {err}");
                if self.phase == Phase::WaitDaemons {
                    self.begin_stop(now, EXIT_CONFIG, out);
                } else if let Some(d) = self.daemons.iter_mut().find(|d| d.spec.name == name) {
                    d.quick_deaths += 1;
                    d.restart_at = Some(now.mono + daemon_backoff(d.quick_deaths));
                }
            }
            Role::Event { name } => error!("cannot run event {name}: {err}"),
        }
    }

    /// Connections wait and no worker is ready: fork one per waiting connection (as far as
    /// maxchild and maxforkrate allow), so that they start side by side rather than one
    /// after the other.
    fn on_readable(&mut self, pool: PoolId, waiting: u32, now: Now, out: &mut Vec<Action>) {
        for _ in 0..waiting.max(1) {
            if !self.wants_watch(pool, now.mono) && !self.may_fork_for_waiting(pool, now.mono) {
                break;
            }
            self.spawn_worker(pool, now, out);
        }
    }

    /// Room for one more worker for connections already waiting.
    fn may_fork_for_waiting(&self, id: PoolId, now: Instant) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        let (Some(pool), Some(service)) = (self.pools.get(&id), self.services.get(&id.service))
        else {
            return false;
        };
        if service.retiring || pool.throttled_until.is_some() {
            return false;
        }
        let (active, _) = self.pool_counts(id);
        active + pool.in_flight < service.limits.maxchild
            && self.fork_allowed_at(id).is_none_or(|t| t <= now)
    }

    fn on_note(&mut self, pool: PoolId, note: ringmaster_proto::RawNote, now: Now) {
        let Some(message) = note.message() else {
            if self.note_allowed(pool, NoteProblem::Unrecognized, now) {
                warn!(
                    "{}: unrecognized status note {} from pid {}",
                    self.pool_name(pool),
                    note.code,
                    note.pid
                );
            }
            return;
        };
        let problem = match self.workers.get(&note.pid) {
            None => Some(NoteProblem::UnknownPid),
            Some(w) if w.pool != pool => Some(NoteProblem::WrongPipe),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            if self.note_allowed(pool, problem, now) {
                if problem == NoteProblem::UnknownPid {
                    debug!(
                        "{}: status note {message:?} from unknown pid {}",
                        self.pool_name(pool),
                        note.pid
                    );
                } else {
                    warn!(
                        "status note from pid {} on the pipe of another service; ignored",
                        note.pid
                    );
                }
            }
            return;
        }
        let Some(worker) = self.workers.get_mut(&note.pid) else {
            return;
        };
        let before = worker.state;
        worker.state = match (worker.state, message) {
            (WorkerState::Exiting, _) => WorkerState::Exiting,
            (_, Message::Exiting) => WorkerState::Exiting,
            (_, Message::Available) => WorkerState::Ready,
            (_, Message::Unavailable) | (_, Message::Connection) => WorkerState::Busy,
            (WorkerState::Busy, Message::ConnectionMulti) => WorkerState::Ready,
            (state, Message::ConnectionMulti) => state,
        };
        if matches!(message, Message::Connection | Message::ConnectionMulti) {
            worker.served = true;
        }
        let worker = worker.clone();
        if before == WorkerState::Starting && worker.state == WorkerState::Ready {
            // It told us it is ready before its first client: this pool's workers announce.
            if let Some(p) = self.pools.get_mut(&pool) {
                p.announces = true;
                if worker.generation == p.generation {
                    self.retire_one_held(pool, now);
                }
            }
        }
        if matches!(message, Message::Connection | Message::ConnectionMulti) {
            if let Some(p) = self.pools.get_mut(&pool) {
                // It served: the run of failures is over. (UNAVAILABLE alone is no proof:
                // a Cyrus worker that fails its start-up sends it just before exiting.)
                p.ready_fails = 0;
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
        if let Some(worker) = self.workers.remove(&pid) {
            // A worker's group is its own, numbered by its pid: members left mean leftovers.
            if group_alive && pgid == Some(pid) {
                let (name, maxchild) = match self.services.get(&worker.pool.service) {
                    Some(s) => (s.spec.name.clone(), s.limits.maxchild),
                    None => (self.pool_name(worker.pool), u32::MAX),
                };
                let bound = leftovers::bound_for(maxchild);
                self.leftovers.left_behind(&name, pid, bound, now.mono, out);
            }
            self.on_worker_exit(pid, worker, status, now, out);
        } else if let Some(index) = self.daemons.iter().position(|d| d.pid == Some(pid)) {
            self.on_daemon_exit(index, status, now, out);
        } else if let Some(event) = self.events.iter_mut().find(|e| e.running.contains(&pid)) {
            event.running.retain(|&p| p != pid);
            if !status.is_clean() {
                warn!("event {} (pid {pid}) ended with {status}", event.spec.name);
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
            debug!(
                "{}: reaped process {pid} ({status}) started under worker {group}",
                self.pool_name(w)
            );
        } else {
            self.leftovers.reaped_unknown(pid, status, pgid, now.mono);
        }
        if let (Some(pgid), false) = (pgid, group_alive) {
            self.leftovers.group_gone(pgid);
        }
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Draining { .. })
            && self.children().is_empty()
        {
            info!("all children have exited, closing down");
            self.phase = Phase::Exited;
            self.leftovers.signal_all(Sig::Kill, out);
            out.push(Action::Exit(self.exit_code));
        }
    }

    fn on_worker_exit(
        &mut self,
        pid: Pid,
        w: Worker,
        status: ExitStatus,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let name = self.pool_name(w.pool);
        let recycled = w.hup_at.is_some()
            && (status.is_clean()
                || status
                    == ExitStatus::Signal {
                        signal: SIGHUP,
                        core: false,
                    });
        // A removed service's listener is shut down under its idle workers, which may then
        // fail their accept() before they see our SIGHUP: that too is a recycle.
        let retired = w.hup_at.is_some()
            && self
                .services
                .get(&w.pool.service)
                .is_none_or(|s| s.retiring);
        let recycled = recycled || retired;
        let stopped = w.term_at.is_some() || matches!(self.phase, Phase::Stopping { .. });
        // Failures count only for workers we let be: not recycled, retired nor stopped.
        let ours = !stopped && !recycled && w.hup_at.is_none();
        if !status.is_clean() && !recycled {
            if !stopped {
                out.push(Action::CleanupAfterCrash { pid });
                warn!("{name}: worker {pid} ended with {status}");
            }
            if ours && (w.is_idle() || !w.served) {
                self.count_ready_fail(w.pool, now, out);
            }
        } else {
            debug!("{name}: worker {pid} exited ({status})");
            // Exiting at once without serving, whatever the status, is a failure too: a
            // worker that exits 0 at start would otherwise be forked as fast as it exits.
            if ours && !w.served && now.mono.saturating_duration_since(w.forked_at) < QUICK_EXIT {
                debug!("{name}: worker {pid} exited before serving a client");
                self.count_ready_fail(w.pool, now, out);
            }
        }
    }

    fn on_start_command_exit(
        &mut self,
        index: usize,
        pid: Pid,
        status: ExitStatus,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Phase::StartCommands { next, running } = self.phase else {
            return;
        };
        if next != index || running != Some(pid) {
            return;
        }
        let name = self
            .config
            .start
            .get(index)
            .map_or("?", |s| s.name.as_str())
            .to_string();
        if status == ExitStatus::Code(0) {
            self.phase = Phase::StartCommands {
                next: next + 1,
                running: None,
            };
            self.run_next_start_command(now, out);
        } else {
            error!("START {name} failed ({status}); not starting");
            self.begin_stop(now, EXIT_START_FAILED, out);
        }
    }

    fn on_daemon_exit(
        &mut self,
        index: usize,
        status: ExitStatus,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let stopping = matches!(self.phase, Phase::Stopping { .. } | Phase::Draining { .. });
        let waiting = self.phase == Phase::WaitDaemons;
        let d = &mut self.daemons[index];
        let name = d.spec.name.clone();
        let lived = d.started_at.map_or(Duration::ZERO, |t| now.mono - t);
        d.pid = None;
        d.started_at = None;
        d.term_at = None;
        if stopping {
            return;
        }
        if d.removed {
            info!("daemon {name} stopped (removed from the configuration)");
            self.daemons.remove(index);
            return;
        }
        if let Some(spec) = d.replacement.take() {
            d.spec = spec;
            d.quick_deaths = 0;
            self.spawn_daemon(index, out);
            return;
        }
        if waiting && d.spec.wait && !d.ready {
            error!("daemon {name} exited ({status}) before saying it was ready");
            self.begin_stop(now, EXIT_CONFIG, out);
            return;
        }
        if lived >= DAEMON_HEALTHY {
            d.quick_deaths = 0;
        } else {
            d.quick_deaths += 1;
        }
        let delay = if d.quick_deaths == 0 {
            Duration::ZERO
        } else {
            daemon_backoff(d.quick_deaths)
        };
        warn!(
            "daemon {name} ended with {status}; restarting in {:.1}s",
            delay.as_secs_f64()
        );
        d.restart_at = Some(now.mono + delay);
    }

    fn on_daemon_ready(&mut self, name: &str, now: Now, out: &mut Vec<Action>) {
        if let Some(d) = self.daemons.iter_mut().find(|d| d.spec.name == name) {
            d.ready = true;
            info!("daemon {name} is ready");
        }
        self.finish_start_if_daemons_ready(now, out);
    }

    // ----- reload ---------------------------------------------------------------------

    fn on_reload_requested(&mut self, now: Now, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Running => {}
            Phase::StartCommands { .. } | Phase::WaitDaemons => {
                info!("SIGHUP during start-up: reloading once start-up completes");
                self.reload.pending = true;
                return;
            }
            _ => {
                debug!("SIGHUP while stopping: ignored");
                return;
            }
        }
        if self.reload_settled(now.mono) {
            self.reload.pending = false;
            out.push(Action::LoadConfig);
        } else {
            debug!("SIGHUP while the last reload settles: coalesced");
            self.reload.pending = true;
        }
    }

    /// A reload has settled when every current pool has its prefork of ready workers (those
    /// that announce: announced; the others: alive a moment), or it has had long enough.
    fn reload_settled(&self, now: Instant) -> bool {
        let Some(applied) = self.reload.applied_at else {
            return true;
        };
        if now >= applied + SETTLE_LIMIT {
            return true;
        }
        self.pools.iter().all(|(id, pool)| {
            let Some(service) = self.services.get(&id.service) else {
                return true;
            };
            if service.retiring || pool.throttled_until.is_some() {
                return true;
            }
            let settled = self
                .workers
                .values()
                .filter(|w| w.pool == *id && w.generation == pool.generation)
                .filter(|w| match w.state {
                    WorkerState::Ready | WorkerState::Busy => true,
                    WorkerState::Starting => !pool.announces && now >= w.forked_at + SETTLE_AGE,
                    WorkerState::Exiting => false,
                })
                .count();
            settled as u64 >= u64::from(service.limits.prefork.min(service.limits.maxchild))
        })
    }

    fn apply_reload(&mut self, mut new: Config, now: Now, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        let untouched = self.keep_unresolved(&mut new);
        info!("reloading: recycling every service onto the new configuration");
        self.reload.applied_at = Some(now.mono);

        // Services: same (name, listen, proto) keeps its sockets; everything else binds anew.
        let mut kept = Vec::new();
        let mut added = Vec::new();
        for spec in &new.services {
            let same = self.services.iter().find(|(_, s)| {
                !s.retiring
                    && s.spec.name == spec.name
                    && s.spec.listen == spec.listen
                    && s.spec.proto == spec.proto
            });
            match same.map(|(k, _)| *k) {
                Some(key) => {
                    if let Some(s) = self.services.get_mut(&key) {
                        s.spec = spec.clone();
                        s.limits = PoolLimits::of(spec);
                    }
                    kept.push(key);
                }
                None => added.push(spec.clone()),
            }
        }
        let releases: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(k, s)| !s.retiring && !kept.contains(k))
            .map(|(k, _)| *k)
            .collect();
        let mut binding = Vec::new();
        for spec in added {
            // "reload: new service" is logged once its bind has an outcome (faults.rs).
            binding.push(self.add_service(spec, releases.clone(), out));
        }
        // Old services are retired only once every new bind has answered (the runtime
        // answers each Bind before it carries out the next action).
        self.reload.applying = Some(Box::new(PendingReload {
            config: new,
            untouched,
            releases,
            added: binding.clone(),
            binding,
            failed: Vec::new(),
        }));
        self.finish_reload_if_bound(now, out);
    }

    /// A new service's bind answered: the reload goes on once all have.
    fn on_reload_bind_answer(
        &mut self,
        key: ServiceKey,
        failed: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(pending) = self.reload.applying.as_mut() else {
            return;
        };
        let before = pending.binding.len();
        pending.binding.retain(|k| *k != key);
        if pending.binding.len() == before {
            return;
        }
        if failed {
            pending.failed.push(key);
        }
        self.finish_reload_if_bound(now, out);
    }

    fn finish_reload_if_bound(&mut self, now: Now, out: &mut Vec<Action>) {
        if self
            .reload
            .applying
            .as_ref()
            .is_none_or(|p| !p.binding.is_empty())
        {
            return;
        }
        let Some(pending) = self.reload.applying.take() else {
            return;
        };
        let PendingReload {
            config: new,
            untouched,
            mut releases,
            added,
            failed,
            ..
        } = *pending;
        // A new entry that could not bind leaves the service it replaces (same name)
        // serving as it was: no new generation, no recycling.
        let mut not_recycled: Vec<ServiceKey> = added;
        for key in failed {
            let Some(name) = self.services.get(&key).map(|s| s.spec.name.clone()) else {
                continue;
            };
            let predecessor = releases.iter().copied().find(|k| {
                self.services
                    .get(k)
                    .is_some_and(|s| s.spec.name == name && s.down.is_none())
            });
            if let Some(old) = predecessor {
                releases.retain(|k| *k != old);
                not_recycled.push(old);
                self.services.remove(&key);
                if let Some(s) = self.services.get(&old) {
                    error!(
                        "reload: {name} keeps serving on {} with its previous configuration",
                        s.spec.listen
                    );
                }
            }
        }
        for key in &releases {
            if let Some(s) = self.services.get_mut(key) {
                info!("reload: service {} on {} stops", s.spec.name, s.spec.listen);
                s.retiring = true;
            }
        }

        // Every kept pool moves to a new generation; every older worker is recycled.
        let pool_ids: Vec<PoolId> = self
            .pools
            .keys()
            .filter(|id| !not_recycled.contains(&id.service))
            .copied()
            .collect();
        for id in pool_ids {
            if untouched.services.contains(&id.service) {
                continue;
            }
            let retiring = self.services.get(&id.service).is_none_or(|s| s.retiring);
            let Some(pool) = self.pools.get_mut(&id) else {
                continue;
            };
            if !retiring {
                pool.generation += 1;
            }
            pool.ready_fails = 0;
            pool.last_ready_fail = None;
            pool.times_throttled = 0;
            if pool.throttled_until.take().is_some() {
                out.push(Action::Resume { pool: id });
            }
            let (generation, announces) = (pool.generation, pool.announces);
            let mut pids: Vec<Pid> = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == id && (retiring || w.generation < generation))
                .map(|(pid, _)| *pid)
                .collect();
            pids.sort_unstable();
            // Busy workers are all kept (told to go now, they would leave after their client
            // with no replacement ready); idle ones only as many as replacements will come.
            let busy = pids
                .iter()
                .filter(|p| {
                    self.workers
                        .get(p)
                        .is_some_and(|w| w.state == WorkerState::Busy && w.hup_at.is_none())
                })
                .count() as u32;
            let mut may_hold_idle = self.services.get(&id.service).map_or(0, |s| {
                s.limits.prefork.min(s.limits.maxchild).saturating_sub(busy)
            });
            for pid in pids {
                let Some(w) = self.workers.get_mut(&pid) else {
                    continue;
                };
                if w.hup_at.is_some() {
                    continue;
                }
                let serving = match w.state {
                    WorkerState::Busy => true,
                    WorkerState::Ready if may_hold_idle > 0 => {
                        may_hold_idle -= 1;
                        true
                    }
                    _ => false,
                };
                if !retiring && announces && serving {
                    // Keep serving, idle or busy, until a new worker says it is ready to take
                    // its place: clients never wait on a start. A storm of reloads does not
                    // push the limit back.
                    w.held_until.get_or_insert(now.mono + HOLD_LIMIT);
                } else {
                    self.send_hup(pid, now, out);
                }
            }
        }
        for key in releases {
            self.release_service(key, true, out);
        }

        // EVENTS: unchanged entries keep their schedule; new or changed ones start afresh.
        let old_events = std::mem::take(&mut self.events);
        for spec in new.events.clone() {
            match old_events.iter().find(|e| e.spec == spec) {
                Some(e) => self.events.push(e.clone()),
                None => {
                    let e = self.new_event(spec, now);
                    self.events.push(e);
                }
            }
        }
        for e in old_events {
            if !self.events.iter().any(|n| n.spec.name == e.spec.name) {
                for pid in e.running {
                    self.others.insert(
                        pid,
                        Role::Event {
                            name: e.spec.name.clone(),
                        },
                    );
                }
            } else if let Some(n) = self.events.iter_mut().find(|n| n.spec.name == e.spec.name) {
                for pid in e.running {
                    if !n.running.contains(&pid) {
                        n.running.push(pid);
                    }
                }
            }
        }

        // DAEMONs: every one is recycled (SIGTERM, then started from the new config).
        for d in &mut self.daemons {
            if untouched.daemons.contains(&d.spec.name) {
                continue;
            }
            match new.daemons.iter().find(|n| n.name == d.spec.name) {
                Some(spec) => d.replacement = Some(spec.clone()),
                None => d.removed = true,
            }
        }
        for index in 0..self.daemons.len() {
            let d = &mut self.daemons[index];
            if untouched.daemons.contains(&d.spec.name) {
                continue;
            }
            match d.pid {
                Some(pid) => {
                    d.term_at = Some(now.mono);
                    out.push(Action::Signal {
                        pid,
                        signal: Sig::Term,
                    });
                }
                None => {
                    if let Some(spec) = d.replacement.take() {
                        d.spec = spec;
                        d.restart_at = Some(now.mono);
                    }
                }
            }
        }
        self.daemons.retain(|d| !(d.removed && d.pid.is_none()));
        for spec in &new.daemons {
            if !self.daemons.iter().any(|d| d.spec.name == spec.name) {
                self.daemons.push(Daemon {
                    spec: spec.clone(),
                    pid: None,
                    started_at: None,
                    restart_at: Some(now.mono),
                    quick_deaths: 0,
                    ready: false,
                    replacement: None,
                    removed: false,
                    term_at: None,
                });
            }
        }
        self.config = new;
        // The reload may have retired or replaced the services that held the ready file back.
        self.check_started(out);
    }

    /// Retires one old worker kept for `pool`, now that a new one is ready: an idle one if
    /// there is one (it leaves at once), else a busy one (it finishes its client first).
    fn retire_one_held(&mut self, pool: PoolId, now: Now) {
        let held = self
            .workers
            .iter()
            .filter(|(_, w)| {
                // Not one whose hold already ends now: several replacements in one batch of
                // notes each retire their own.
                w.pool == pool && w.hup_at.is_none() && w.held_until.is_some_and(|t| t > now.mono)
            })
            .map(|(pid, w)| (w.state != WorkerState::Ready, *pid))
            .min()
            .map(|(_, pid)| pid);
        if let Some(pid) = held {
            // The caller's `out` is not reachable here without a borrow tangle, so the hold
            // simply ends now; `on_timers` sends the SIGHUP in this same `handle` call.
            if let Some(w) = self.workers.get_mut(&pid) {
                w.held_until = Some(now.mono);
            }
        }
    }

    fn release_service(&mut self, key: ServiceKey, refuse: bool, out: &mut Vec<Action>) {
        let pools: Vec<PoolId> = self
            .pools
            .keys()
            .filter(|p| p.service == key)
            .copied()
            .collect();
        for id in pools {
            if let Some(pool) = self.pools.get_mut(&id) {
                if pool.watching {
                    pool.watching = false;
                    out.push(Action::Watch {
                        pool: id,
                        on: false,
                    });
                }
            }
        }
        out.push(Action::Release {
            service: key,
            refuse,
        });
    }

    // ----- stopping -------------------------------------------------------------------

    fn on_stop(&mut self, graceful: bool, now: Now, out: &mut Vec<Action>) {
        match (&self.phase, graceful) {
            (Phase::Stopping { killed: false, .. }, false) => {
                warn!("second stop signal: killing every child now");
                self.kill_everything(out);
            }
            (Phase::Stopping { .. }, _) | (Phase::Draining { .. }, true) => {}
            (Phase::Running, true) => {
                info!("SIGQUIT: closing listeners, letting workers finish their clients");
                self.phase = Phase::Draining {
                    until: now.mono + self.settings.drain_timeout,
                };
                self.release_all(true, out);
                let pids: Vec<Pid> = self.workers.keys().copied().collect();
                for pid in pids {
                    self.send_hup(pid, now, out);
                }
                self.term_non_workers(now, out);
                self.exit_if_empty(out);
            }
            _ => {
                info!("stopping: SIGTERM to every child");
                self.begin_stop(now, 0, out);
            }
        }
    }

    fn begin_stop(&mut self, now: Now, code: i32, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Exited) {
            return;
        }
        self.exit_code = code;
        self.phase = Phase::Stopping {
            since: now.mono,
            killed: false,
        };
        let pids: Vec<Pid> = self.workers.keys().copied().collect();
        for pid in pids {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.held_until = None;
                if w.term_at.is_none() {
                    w.term_at = Some(now.mono);
                    out.push(Action::Signal {
                        pid,
                        signal: Sig::Term,
                    });
                }
            }
        }
        // Told to exit, the workers close the sockets themselves: shutting them down under
        // their feet would only make idle Cyrus workers log a failed accept().
        self.release_all(false, out);
        self.term_non_workers(now, out);
        self.leftovers.signal_all(Sig::Term, out);
        out.push(Action::SignalEscaped {
            signal: Sig::Term,
            known: self.children(),
        });
        self.exit_if_empty(out);
    }

    fn term_non_workers(&mut self, now: Now, out: &mut Vec<Action>) {
        for d in &mut self.daemons {
            d.restart_at = None;
            if let (Some(pid), None) = (d.pid, d.term_at) {
                d.term_at = Some(now.mono);
                out.push(Action::Signal {
                    pid,
                    signal: Sig::Term,
                });
            }
        }
        let mut pids: Vec<Pid> = self.events.iter().flat_map(|e| e.running.clone()).collect();
        pids.extend(self.others.keys().copied());
        for pid in pids {
            out.push(Action::Signal {
                pid,
                signal: Sig::Term,
            });
        }
    }

    fn kill_everything(&mut self, out: &mut Vec<Action>) {
        if let Phase::Stopping { killed, .. } = &mut self.phase {
            *killed = true;
        }
        let mut pids = self.children();
        pids.sort_unstable();
        for pid in pids {
            warn!("pid {pid} did not stop in time: SIGKILL");
            out.push(Action::Signal {
                pid,
                signal: Sig::Kill,
            });
        }
        for w in self.workers.values_mut() {
            w.killed = true;
        }
        self.leftovers.signal_all(Sig::Kill, out);
    }

    fn release_all(&mut self, refuse: bool, out: &mut Vec<Action>) {
        let keys: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(_, s)| !s.retiring)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(s) = self.services.get_mut(&key) {
                s.retiring = true;
            }
            self.release_service(key, refuse, out);
        }
    }

    fn exit_if_empty(&mut self, out: &mut Vec<Action>) {
        if self.children().is_empty() && self.phase != Phase::Exited {
            info!("all children have exited, closing down");
            self.phase = Phase::Exited;
            self.leftovers.signal_all(Sig::Kill, out);
            out.push(Action::Exit(self.exit_code));
        }
    }

    // ----- timers and upkeep ----------------------------------------------------------

    fn on_timers(&mut self, now: Now, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Draining { until } if now.mono >= until => {
                warn!("drain time is over: stopping the workers still serving");
                self.phase = Phase::Running; // let begin_stop take over
                self.begin_stop(now, 0, out);
            }
            Phase::Stopping {
                since,
                killed: false,
            } if now.mono >= since + self.settings.stop_timeout => {
                self.kill_everything(out);
            }
            _ => {}
        }
        // Recycled workers that outstay the drain: SIGTERM, then SIGKILL.
        let mut pids: Vec<Pid> = self.workers.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let Some(w) = self.workers.get(&pid) else {
                continue;
            };
            let pool_gen = self
                .pools
                .get(&w.pool)
                .map_or(w.generation, |p| p.generation);
            let too_old = pool_gen.saturating_sub(w.generation) > MAX_LIVE_GENERATIONS;
            if w.held_until.is_some_and(|t| now.mono >= t) && w.hup_at.is_none() {
                self.send_hup(pid, now, out);
                continue;
            }
            let name = self.pool_name(w.pool);
            let Some(w) = self.workers.get_mut(&pid) else {
                continue;
            };
            match (w.hup_at, w.term_at) {
                (_, Some(term)) if !w.killed && now.mono >= term + self.settings.stop_timeout => {
                    warn!("{name}: worker {pid} ignored SIGTERM: SIGKILL");
                    w.killed = true;
                    out.push(Action::Signal {
                        pid,
                        signal: Sig::Kill,
                    });
                }
                (Some(hup), None) if too_old || now.mono >= hup + self.settings.drain_timeout => {
                    warn!(
                        "{name}: worker {pid} still running {:.0}s after it was recycled: SIGTERM",
                        (now.mono - hup).as_secs_f64()
                    );
                    w.term_at = Some(now.mono);
                    out.push(Action::Signal {
                        pid,
                        signal: Sig::Term,
                    });
                }
                _ => {}
            }
        }
        if self.phase != Phase::Running {
            return;
        }
        // Throttled pools whose pause is over.
        let resumed: Vec<PoolId> = self
            .pools
            .iter()
            .filter(|(_, p)| p.throttled_until.is_some_and(|t| now.mono >= t))
            .map(|(id, _)| *id)
            .collect();
        for id in resumed {
            if let Some(p) = self.pools.get_mut(&id) {
                p.throttled_until = None;
                p.ready_fails = 0;
                info!("{}: retrying after the pause", self.pool_name(id));
                out.push(Action::Resume { pool: id });
            }
        }
        // Daemons due for a (re)start.
        for index in 0..self.daemons.len() {
            let d = &self.daemons[index];
            if d.pid.is_none() && d.restart_at.is_some_and(|t| now.mono >= t) {
                self.spawn_daemon(index, out);
            }
        }
        // Events due.
        for index in 0..self.events.len() {
            self.fire_event_if_due(index, now, out);
        }
        // A coalesced reload whose predecessor has settled; until then, look again shortly
        // (workers that never announce settle by age, which no event reports).
        if self.reload.pending {
            if self.reload_settled(now.mono) {
                self.reload.pending = false;
                self.reload.recheck_at = None;
                out.push(Action::LoadConfig);
            } else {
                let limit = self
                    .reload
                    .applied_at
                    .map_or(now.mono, |t| t + SETTLE_LIMIT);
                self.reload.recheck_at = Some(limit.min(now.mono + SETTLE_RECHECK));
            }
        }
    }

    /// Keeps every pool at its prefork and the listener watches in step with the pools.
    fn maintain(&mut self, now: Now, out: &mut Vec<Action>) {
        let ids: Vec<PoolId> = self.pools.keys().copied().collect();
        for id in ids {
            if self.phase == Phase::Running {
                self.make_room_for_replacement(id, now);
                while self.wants_fork(id) && self.fork_allowed_at(id).is_none_or(|t| t <= now.mono)
                {
                    self.spawn_worker(id, now, out);
                }
            }
            let watch = self.wants_watch(id, now.mono);
            if let Some(pool) = self.pools.get_mut(&id) {
                if pool.watching != watch {
                    pool.watching = watch;
                    out.push(Action::Watch {
                        pool: id,
                        on: watch,
                    });
                }
            }
        }
        // Pools of gone services with no worker left are forgotten.
        let empty: Vec<PoolId> = self
            .pools
            .keys()
            .filter(|id| self.services.get(&id.service).is_none_or(|s| s.retiring))
            .filter(|id| !self.workers.values().any(|w| w.pool == **id))
            .copied()
            .collect();
        for id in empty {
            self.pools.remove(&id);
        }
        let gone: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(k, s)| s.retiring && !self.pools.keys().any(|p| p.service == **k))
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            self.services.remove(&key);
        }
    }

    /// Old workers kept serving after a reload fill the pool up to maxchild, so no
    /// replacement can start: retire them one at a time (a rolling restart), each as soon as
    /// the one before has left.
    fn make_room_for_replacement(&mut self, id: PoolId, now: Now) {
        let (Some(pool), Some(service)) = (self.pools.get(&id), self.services.get(&id.service))
        else {
            return;
        };
        if service.retiring || pool.throttled_until.is_some() {
            return;
        }
        let (active, ready) = self.pool_counts(id);
        let limits = service.limits;
        let in_flight = pool.in_flight;
        if active + in_flight < limits.maxchild || ready + in_flight >= limits.prefork {
            return;
        }
        let leaving = self.workers.values().any(|w| {
            w.pool == id
                && w.state != WorkerState::Exiting
                && (w.hup_at.is_some() || w.held_until.is_some_and(|t| t <= now.mono))
        });
        if !leaving {
            self.retire_one_held(id, now);
        }
    }

    /// The pool is below its prefork (or babysit minimum) and may fork.
    fn wants_fork(&self, id: PoolId) -> bool {
        let (Some(pool), Some(service)) = (self.pools.get(&id), self.services.get(&id.service))
        else {
            return false;
        };
        if service.retiring || pool.throttled_until.is_some() {
            return false;
        }
        let (active, ready) = self.pool_counts(id);
        let active = active + pool.in_flight;
        let ready = ready + pool.in_flight;
        active < service.limits.maxchild && ready < service.limits.prefork
    }

    /// Watch the listener only while a connection would need a new worker and one may be
    /// forked now; level-triggered epoll would spin otherwise.
    fn wants_watch(&self, id: PoolId, now: Instant) -> bool {
        let starting = self.pools.get(&id).map_or(0, |p| p.in_flight);
        self.may_fork_for_waiting(id, now) && self.pool_counts(id).1 + starting == 0
    }

    /// Only maxforkrate keeps the listener unwatched: connections may wait for a worker that
    /// the rate forbids now, so the moment it allows one must wake us to watch again (nothing
    /// else would: the listener is not watched meanwhile).
    fn rate_holds_watch(&self, id: PoolId) -> bool {
        let Some(pool) = self.pools.get(&id) else {
            return false;
        };
        let Some(rate) = self.services.get(&id.service).map(|s| s.limits.maxforkrate) else {
            return false;
        };
        if pool.watching || rate == 0 || (pool.recent_forks.len() as u32) < rate {
            return false;
        }
        let Some(later) = self.fork_allowed_at(id) else {
            return false;
        };
        self.wants_watch(id, later)
    }

    /// None when the fork rate allows a fork; else the moment it will.
    fn fork_allowed_at(&self, id: PoolId) -> Option<Instant> {
        let pool = self.pools.get(&id)?;
        let rate = self.services.get(&id.service)?.limits.maxforkrate;
        if rate == 0 || (pool.recent_forks.len() as u32) < rate {
            return None;
        }
        pool.recent_forks.front().map(|t| *t + ONE_SECOND)
    }

    fn spawn_worker(&mut self, id: PoolId, now: Now, out: &mut Vec<Action>) {
        let Some(service) = self.services.get(&id.service) else {
            return;
        };
        let spec = &service.spec;
        let mut env = vec![
            (ringmaster_proto::ENV_SERVICE.to_string(), spec.name.clone()),
            (ringmaster_proto::ENV_ID.to_string(), id.family.to_string()),
        ];
        env.extend(self.settings.worker_env.iter().cloned());
        let request = SpawnRequest {
            role: Role::Worker { pool: id },
            name: spec.name.clone(),
            argv: spec.cmd.argv.clone(),
            env,
            run_as: spec.run_as.clone(),
            maxfds: spec.maxfds,
            fds: ChildFds::Worker(id),
        };
        let rate = service.limits.maxforkrate;
        let Some(pool) = self.pools.get_mut(&id) else {
            return;
        };
        pool.in_flight += 1;
        if rate > 0 {
            while pool
                .recent_forks
                .front()
                .is_some_and(|t| now.mono >= *t + ONE_SECOND)
            {
                pool.recent_forks.pop_front();
            }
            pool.recent_forks.push_back(now.mono);
        }
        out.push(Action::Spawn(request));
    }

    fn spawn_daemon(&mut self, index: usize, out: &mut Vec<Action>) {
        let Some(d) = self.daemons.get_mut(index) else {
            return;
        };
        d.restart_at = None;
        let mut env = vec![
            (
                ringmaster_proto::ENV_SERVICE.to_string(),
                d.spec.name.clone(),
            ),
            (ringmaster_proto::ENV_ID.to_string(), "0".to_string()),
            (ringmaster_proto::ENV_ISDAEMON.to_string(), "1".to_string()),
        ];
        env.extend(self.settings.worker_env.iter().cloned());
        // Only the first start of a wait=y daemon is waited for, as Cyrus does.
        let fds = if d.spec.wait && !d.ready {
            ChildFds::DaemonReadyPipe
        } else {
            ChildFds::None
        };
        out.push(Action::Spawn(SpawnRequest {
            role: Role::Daemon {
                name: d.spec.name.clone(),
            },
            name: d.spec.name.clone(),
            argv: d.spec.cmd.argv.clone(),
            env,
            run_as: d.spec.run_as.clone(),
            maxfds: 0,
            fds,
        }));
    }

    fn new_event(&self, spec: EventEntry, now: Now) -> Event {
        let mut event = Event {
            spec,
            next_mono: None,
            next_unix: None,
            running: Vec::new(),
        };
        match &event.spec.schedule {
            // Periodic events run at once, then every period (period=0: once).
            Schedule::Period { .. } => event.next_mono = Some(now.mono),
            _ => self.schedule_wall(&mut event, now),
        }
        event
    }

    fn schedule_wall(&self, event: &mut Event, now: Now) {
        let next = match &event.spec.schedule {
            Schedule::Daily(at) => schedule::next_daily(*at, now.unix, self.local),
            Schedule::Cron(spec) => schedule::next_cron(spec, now.unix, self.local),
            Schedule::Period { .. } => None,
        };
        event.next_unix = next;
        event.next_mono =
            next.map(|t| now.mono + Duration::from_secs(t.saturating_sub(now.unix).max(0) as u64));
    }

    fn fire_event_if_due(&mut self, index: usize, now: Now, out: &mut Vec<Action>) {
        let due = {
            let e = &self.events[index];
            match (e.next_unix, e.next_mono) {
                (Some(unix), _) => now.unix >= unix,
                (None, Some(mono)) => now.mono >= mono,
                (None, None) => false,
            }
        };
        let mut event = self.events[index].clone();
        if !due {
            if event.next_unix.is_some() {
                // Keep the timer in step with the wall clock, which may have moved.
                let unix = event.next_unix;
                self.schedule_wall(&mut event, now);
                event.next_unix = unix.or(event.next_unix);
                self.events[index].next_mono = event.next_mono;
            }
            return;
        }
        info!("running event {}: {}", event.spec.name, event.spec.cmd);
        out.push(Action::Spawn(SpawnRequest {
            role: Role::Event {
                name: event.spec.name.clone(),
            },
            name: event.spec.name.clone(),
            argv: event.spec.cmd.argv.clone(),
            env: self.settings.worker_env.clone(),
            run_as: event.spec.run_as.clone(),
            maxfds: 0,
            fds: ChildFds::None,
        }));
        match event.spec.schedule {
            Schedule::Period { minutes: 0 } => event.next_mono = None,
            Schedule::Period { minutes } => {
                event.next_mono = Some(now.mono + Duration::from_secs(u64::from(minutes) * 60))
            }
            _ => self.schedule_wall(&mut event, now),
        }
        self.events[index].next_mono = event.next_mono;
        self.events[index].next_unix = event.next_unix;
    }

    fn count_ready_fail(&mut self, id: PoolId, now: Now, out: &mut Vec<Action>) {
        let name = self.pool_name(id);
        let Some(babysit) = self.services.get(&id.service).map(|s| s.limits.babysit) else {
            return;
        };
        let Some(pool) = self.pools.get_mut(&id) else {
            return;
        };
        let recent = pool
            .last_ready_fail
            .is_some_and(|t| now.mono.saturating_duration_since(t) <= READY_FAIL_INTERVAL);
        pool.ready_fails = if recent { pool.ready_fails + 1 } else { 1 };
        pool.last_ready_fail = Some(now.mono);
        if pool.ready_fails < MAX_READY_FAILS || pool.throttled_until.is_some() {
            return;
        }
        let pause = if babysit {
            BABYSIT_PAUSE
        } else {
            FIRST_THROTTLE
                .saturating_mul(1 << pool.times_throttled.min(8))
                .min(MAX_THROTTLE)
        };
        pool.times_throttled += 1;
        pool.ready_fails = 0;
        pool.throttled_until = Some(now.mono + pause);
        error!(
            "too many failures for service {name} (workers ending before they serve): \
             refusing connections for {}s, then retrying",
            pause.as_secs()
        );
        out.push(Action::Pause { pool: id });
    }

    fn send_hup(&mut self, pid: Pid, now: Now, out: &mut Vec<Action>) {
        if let Some(w) = self.workers.get_mut(&pid) {
            if w.hup_at.is_none() && w.term_at.is_none() {
                w.hup_at = Some(now.mono);
                w.held_until = None;
                out.push(Action::Signal {
                    pid,
                    signal: Sig::Hup,
                });
            }
        }
    }

    /// Whether to log a complaint about a note on `pool`'s pipe; first says how many earlier
    /// ones were left out, if any.
    fn note_allowed(&mut self, pool: PoolId, problem: NoteProblem, now: Now) -> bool {
        match self.note_log.check(&(pool, problem), now.mono) {
            Verdict::Log { suppressed } => {
                if suppressed > 0 {
                    self.report_suppressed_note(pool, problem, suppressed);
                }
                true
            }
            Verdict::Suppress => false,
        }
    }

    fn report_suppressed_notes(&mut self, now: Now) {
        for ((pool, problem), count) in self.note_log.expired(now.mono) {
            self.report_suppressed_note(pool, problem, count);
        }
    }

    fn report_suppressed_note(&self, pool: PoolId, problem: NoteProblem, count: u64) {
        let what = match problem {
            NoteProblem::Unrecognized => "unrecognized status notes",
            NoteProblem::UnknownPid => "status notes from unknown pids",
            NoteProblem::WrongPipe => "status notes on the pipe of another service",
        };
        if problem == NoteProblem::UnknownPid {
            // As the lines it stands for.
            debug!(
                "{}: suppressed {count} similar messages ({what})",
                self.pool_name(pool)
            );
        } else {
            warn!(
                "{}: suppressed {count} similar messages ({what})",
                self.pool_name(pool)
            );
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

const SIGHUP: i32 = 1;

fn daemon_backoff(quick_deaths: u32) -> Duration {
    Duration::from_secs(1u64 << quick_deaths.min(6)).min(DAEMON_MAX_BACKOFF)
}
