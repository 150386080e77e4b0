//! Worker pools: how many workers each service keeps, when to fork (prefork, maxchild,
//! maxforkrate), when to watch its listener, what workers' status notes and exits mean, and
//! the throttle that pauses a pool whose workers keep failing before they serve. (Recycled
//! workers' timers: recycle.rs.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringmaster_proto::Message;

use super::*;
use crate::config::ServiceEntry;
use crate::ratelimit::Verdict;

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
/// Generations older than this many reloads are terminated without waiting for the drain.
pub(super) const MAX_LIVE_GENERATIONS: u64 = 8;
/// Workers of one pool forked and not yet ready, at most: while an announcing pool fills up
/// to its prefork, and while clients wait (as the floor master of the benchmark, which
/// starts up to 8 at once).
const MAX_STARTING_PER_POOL: u32 = 8;
const ONE_SECOND: Duration = Duration::from_secs(1);
const SIGHUP: i32 = 1;

/// What is wrong with a status note, for [`Supervisor::note_log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum NoteProblem {
    Unrecognized,
    UnknownPid,
    WrongPipe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerState {
    /// Forked, said nothing yet. Counted ready, as Cyrus does.
    Starting,
    Ready,
    Busy,
    /// Sent the exit note: accepts nothing more, no longer counted.
    Exiting,
}

#[derive(Debug, Clone)]
pub(super) struct Worker {
    pub(super) pool: PoolId,
    pub(super) generation: u64,
    pub(super) state: WorkerState,
    pub(super) forked_at: Instant,
    /// Where it is in being recycled or stopped; changed only by the `Recycle` methods.
    pub(super) recycle: Recycle,
    /// It counted a connection (CONNECTION or CONNECTION_MULTI) at least once.
    pub(super) served: bool,
}

impl Worker {
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.state, WorkerState::Starting | WorkerState::Ready)
    }
}

/// What a pool needs from its entry, with Cyrus's adjustments applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PoolLimits {
    pub(super) prefork: u32,
    pub(super) maxchild: u32,
    pub(super) maxforkrate: u32,
    pub(super) babysit: bool,
}

impl PoolLimits {
    pub(super) fn of(spec: &ServiceEntry) -> PoolLimits {
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
pub(super) struct Pool {
    pub(super) generation: u64,
    /// Forks started whose pid we do not know yet.
    pub(super) in_flight: u32,
    /// Forks of the last second, for maxforkrate.
    pub(super) recent_forks: VecDeque<Instant>,
    /// Consecutive failures before serving, and when the last one was.
    pub(super) ready_fails: u32,
    pub(super) last_ready_fail: Option<Instant>,
    /// Throttled: the listener is paused until then.
    pub(super) throttled_until: Option<Instant>,
    pub(super) times_throttled: u32,
    /// Some worker of this pool said AVAILABLE before its first client: its workers tell us
    /// when they are really ready.
    pub(super) announces: bool,
    /// What we last told the runtime about watching the listener.
    pub(super) watching: bool,
    /// Counts for status and metrics.
    pub(super) counters: PoolCounters,
    /// Connections waiting when the listener was last seen readable.
    pub(super) waiting: u32,
    /// Its workers, counted (index.rs).
    pub(super) tally: index::Tally,
}

impl Pool {
    pub(super) fn new() -> Pool {
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
            counters: PoolCounters::default(),
            waiting: 0,
            tally: index::Tally::default(),
        }
    }
}

impl Supervisor {
    /// Workers of a pool: (all live, current-generation ready-or-starting).
    pub fn pool_counts(&self, pool: PoolId) -> (u32, u32) {
        self.pools
            .get(&pool)
            .map_or((0, 0), |p| (p.tally.active, p.tally.ready))
    }

    /// Connections wait and no worker is idle: fork one per waiting connection that no
    /// starting worker will take, and at least one, while fewer than twice the waiting
    /// clients start, at most [`MAX_STARTING_PER_POOL`] (the floor master's policy, which
    /// always allows 8, tempered; one for a lone client): connections that arrive
    /// while a batch starts get workers at once, and a worker or two are already in
    /// accept() when the next clients come. Every readable event seen while watched thus
    /// forks, or the watch goes off in `maintain`: the loop cannot spin.
    pub(super) fn on_readable(
        &mut self,
        pool: PoolId,
        waiting: u32,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.pools.get_mut(&pool) else {
            return;
        };
        p.waiting = waiting;
        let forks = waiting.saturating_sub(p.in_flight + p.tally.starting);
        // Its watch is looked at again even when nothing may be forked now.
        self.touched.insert(pool);
        for _ in 0..forks.max(1) {
            if !self.wants_watch(pool, now.mono) {
                break;
            }
            self.spawn_worker(pool, now, out);
        }
    }

    /// No worker said it is idle (AVAILABLE) and fewer have said nothing yet than twice the
    /// clients last seen waiting (at most [`MAX_STARTING_PER_POOL`]), or than one for a lone
    /// client: a connection waiting now may need a new worker, and a worker started ahead
    /// of a lone client would only compete with its own for the CPU. (A worker that never
    /// speaks before its first client, as Cyrus's, counts as starting until then: a pool
    /// holds at most 8 of them, or its prefork, because of waiting clients.)
    fn room_to_start(&self, id: PoolId) -> bool {
        let Some(pool) = self.pools.get(&id) else {
            return false;
        };
        let starting = pool.in_flight + pool.tally.starting;
        let idle = pool.tally.ready.saturating_sub(pool.tally.starting);
        let ahead = match pool.waiting {
            0 | 1 => 1,
            n => n.saturating_mul(2).min(MAX_STARTING_PER_POOL),
        };
        idle == 0 && starting < ahead
    }

    /// Room for one more worker for connections already waiting.
    pub(super) fn may_fork_for_waiting(&self, id: PoolId, now: Instant) -> bool {
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

    pub(super) fn on_note(&mut self, pool: PoolId, note: ringmaster_proto::RawNote, now: Now) {
        let Some(message) = note.message() else {
            if self.note_allowed(pool, NoteProblem::Unrecognized, now) {
                let message = format!(
                    "{}: unrecognized status note {} from pid {}",
                    self.pool_name(pool),
                    note.code,
                    note.pid
                );
                self.pool_log(Level::Warn, LogEvent::BadNote, pool, message)
                    .with(Field::Pid, note.pid);
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
                    let text = format!(
                        "{}: status note {message:?} from unknown pid {}",
                        self.pool_name(pool),
                        note.pid
                    );
                    self.pool_log(Level::Debug, LogEvent::NoteFromUnknownPid, pool, text)
                        .with(Field::Pid, note.pid);
                } else {
                    let text = format!(
                        "status note from pid {} on the pipe of another service; ignored",
                        note.pid
                    );
                    self.pool_log(Level::Warn, LogEvent::NoteOnWrongPipe, pool, text)
                        .with(Field::Pid, note.pid);
                }
            }
            return;
        }
        let Some((before, worker)) = self.update_worker(note.pid, |worker| {
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
            (before, worker.clone())
        }) else {
            return;
        };
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

    pub(super) fn on_worker_exit(
        &mut self,
        pid: Pid,
        w: Worker,
        status: ExitStatus,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let name = self.pool_name(w.pool);
        let recycled = w.recycle.hupped()
            && (status.is_clean()
                || status
                    == ExitStatus::Signal {
                        signal: SIGHUP,
                        core: false,
                    });
        // A removed service's listener is shut down under its idle workers, which may then
        // fail their accept() before they see our SIGHUP: that too is a recycle.
        let retired = w.recycle.hupped()
            && self
                .services
                .get(&w.pool.service)
                .is_none_or(|s| s.retiring);
        let recycled = recycled || retired;
        let stopped = w.recycle.termed() || matches!(self.phase, Phase::Stopping { .. });
        let reason = match status {
            _ if recycled => ExitReason::Recycled,
            _ if status.is_clean() => ExitReason::Normal,
            ExitStatus::Code(_) => ExitReason::Crash,
            ExitStatus::Signal { .. } => ExitReason::Signal,
        };
        if let Some(pool) = self.pools.get_mut(&w.pool) {
            pool.counters.count_exit(reason);
        }
        // Failures count only for workers we let be: not recycled, retired nor stopped.
        let ours = !stopped && !recycled && !w.recycle.hupped();
        if !status.is_clean() && !recycled {
            if !stopped {
                out.push(Action::CleanupAfterCrash { pid });
                let message = format!("{name}: worker {pid} ended with {status}");
                self.pool_log(Level::Warn, LogEvent::WorkerCrashed, w.pool, message)
                    .with(Field::Pid, pid)
                    .with(Field::Status, status);
            }
            if ours && (w.is_idle() || !w.served) {
                self.count_ready_fail(w.pool, now, out);
            }
        } else {
            if self.logs.debug_on() {
                let message = format!("{name}: worker {pid} exited ({status})");
                self.pool_log(Level::Debug, LogEvent::WorkerExited, w.pool, message)
                    .with(Field::Pid, pid)
                    .with(Field::Status, status);
            }
            // Exiting at once without serving, whatever the status, is a failure too: a
            // worker that exits 0 at start would otherwise be forked as fast as it exits.
            if ours && !w.served && now.mono.saturating_duration_since(w.forked_at) < QUICK_EXIT {
                if self.logs.debug_on() {
                    let message = format!("{name}: worker {pid} exited before serving a client");
                    self.pool_log(Level::Debug, LogEvent::WorkerQuickExit, w.pool, message)
                        .with(Field::Pid, pid);
                }
                self.count_ready_fail(w.pool, now, out);
            }
        }
    }

    /// Keeps every pool at its prefork and the listener watches in step with the pools.
    pub(super) fn maintain(&mut self, now: Now, out: &mut Vec<Action>) {
        let ids = std::mem::take(&mut self.touched);
        for &id in &ids {
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
            let due = self.pool_due(id);
            self.pool_timers.set(id, due);
        }
        // Maintaining changes no worker: nothing it did needs another look in this input.
        self.touched.clear();
        self.forget_retired(&ids);
    }

    /// Pools of gone services with no worker left are forgotten, and then gone services
    /// with no pool left: among `ids`, or everywhere after a reload or a stop.
    fn forget_retired(&mut self, ids: &BTreeSet<PoolId>) {
        let retired = |sup: &Supervisor, id: &PoolId| {
            sup.services.get(&id.service).is_none_or(|s| s.retiring)
                && sup.pools.get(id).is_some_and(|p| p.tally.pids.is_empty())
        };
        let sweep = std::mem::take(&mut self.sweep_services);
        let empty: Vec<PoolId> = if sweep {
            self.pools
                .keys()
                .filter(|id| retired(self, id))
                .copied()
                .collect()
        } else {
            ids.iter().filter(|id| retired(self, id)).copied().collect()
        };
        let mut services: BTreeSet<ServiceKey> = empty.iter().map(|id| id.service).collect();
        for id in empty {
            self.pools.remove(&id);
            self.pool_timers.set(id, None);
        }
        if sweep {
            services.extend(
                self.services
                    .iter()
                    .filter(|(_, s)| s.retiring)
                    .map(|(k, _)| *k),
            );
        }
        for key in services {
            if self.services.get(&key).is_some_and(|s| s.retiring) && self.pools_of(key).is_empty()
            {
                self.services.remove(&key);
            }
        }
    }

    /// Old workers kept serving after a reload fill the pool up to maxchild, so no
    /// replacement can start: retire them one at a time (a rolling restart), each as soon as
    /// the one before has left.
    pub(super) fn make_room_for_replacement(&mut self, id: PoolId, now: Now) {
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
        // Sent SIGHUP, or on a hold that has ended: on its way out already.
        let leaving = pool.tally.leaving > 0
            || pool.tally.held.iter().any(|(_, pid)| {
                self.workers.get(pid).is_some_and(|w| {
                    w.state != WorkerState::Exiting
                        && w.recycle.held_until().is_some_and(|t| t <= now.mono)
                })
            });
        if !leaving {
            self.retire_one_held(id, now);
        }
    }

    /// The pool is below its prefork (or babysit minimum) and may fork.
    pub(super) fn wants_fork(&self, id: PoolId) -> bool {
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
        // A pool whose workers announce is refilled a few at a time, the next as each says it
        // is ready: the loop then reads those notes (and retires the old workers they
        // replace) between forks rather than after thousands of them. The first fill, before
        // any worker has announced, is not held back.
        let room_to_start =
            !pool.announces || pool.in_flight + pool.tally.starting < MAX_STARTING_PER_POOL;
        active < service.limits.maxchild && ready < service.limits.prefork && room_to_start
    }

    /// Watch the listener only while a connection would need a new worker and one may be
    /// forked now; level-triggered epoll would spin otherwise. Every input that changes
    /// either (a fork, a note, an exit, the rate, the throttle) touches the pool, so the
    /// watch comes back as soon as a waiting connection could get a worker.
    pub(super) fn wants_watch(&self, id: PoolId, now: Instant) -> bool {
        self.may_fork_for_waiting(id, now) && self.room_to_start(id)
    }

    /// Only maxforkrate keeps the listener unwatched: connections may wait for a worker that
    /// the rate forbids now, so the moment it allows one must wake us to watch again (nothing
    /// else would: the listener is not watched meanwhile).
    pub(super) fn rate_holds_watch(&self, id: PoolId) -> bool {
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
    pub(super) fn fork_allowed_at(&self, id: PoolId) -> Option<Instant> {
        let pool = self.pools.get(&id)?;
        let rate = self.services.get(&id.service)?.limits.maxforkrate;
        if rate == 0 || (pool.recent_forks.len() as u32) < rate {
            return None;
        }
        pool.recent_forks.front().map(|t| *t + ONE_SECOND)
    }

    pub(super) fn spawn_worker(&mut self, id: PoolId, now: Now, out: &mut Vec<Action>) {
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
        pool.counters.forks += 1;
        self.touched.insert(id);
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

    pub(super) fn count_ready_fail(&mut self, id: PoolId, now: Now, out: &mut Vec<Action>) {
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
        pool.counters.ready_fails += 1;
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
        self.touched.insert(id);
        let message = format!(
            "too many failures for service {name} (workers ending before they serve): \
             refusing connections for {}s, then retrying",
            pause.as_secs()
        );
        self.pool_log(Level::Error, LogEvent::PoolThrottled, id, message)
            .with(Field::Seconds, pause.as_secs());
        out.push(Action::Pause { pool: id });
    }

    pub(super) fn send_hup(&mut self, pid: Pid, now: Now, out: &mut Vec<Action>) {
        if self.update_worker(pid, |w| w.recycle.hup(now.mono)) == Some(true) {
            out.push(Action::Signal {
                pid,
                signal: Sig::Hup,
            });
        }
    }

    /// Whether to log a complaint about a note on `pool`'s pipe; first says how many earlier
    /// ones were left out, if any.
    pub(super) fn note_allowed(&mut self, pool: PoolId, problem: NoteProblem, now: Now) -> bool {
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

    pub(super) fn report_suppressed_notes(&mut self, now: Now) {
        for ((pool, problem), count) in self.note_log.expired(now.mono) {
            self.report_suppressed_note(pool, problem, count);
        }
    }

    pub(super) fn report_suppressed_note(
        &mut self,
        pool: PoolId,
        problem: NoteProblem,
        count: u64,
    ) {
        let what = match problem {
            NoteProblem::Unrecognized => "unrecognized status notes",
            NoteProblem::UnknownPid => "status notes from unknown pids",
            NoteProblem::WrongPipe => "status notes on the pipe of another service",
        };
        // At the level of the lines it stands for.
        let level = if problem == NoteProblem::UnknownPid {
            Level::Debug
        } else {
            Level::Warn
        };
        let message = format!(
            "{}: suppressed {count} similar messages ({what})",
            self.pool_name(pool)
        );
        self.pool_log(level, LogEvent::NotesSuppressed, pool, message)
            .with(Field::Count, count);
    }

    /// Throttled pools whose pause is over.
    pub(super) fn tick_throttled_pools(&mut self, now: Now, out: &mut Vec<Action>) {
        // Every pool due is maintained (its timer is set again there); those whose throttle
        // is over resume.
        let due = self.pool_timers.take_due(now.mono);
        self.touched.extend(due.iter().copied());
        let resumed = due.into_iter().filter(|id| {
            self.pools
                .get(id)
                .is_some_and(|p| p.throttled_until.is_some_and(|t| now.mono >= t))
        });
        for id in resumed.collect::<Vec<_>>() {
            if let Some(p) = self.pools.get_mut(&id) {
                p.throttled_until = None;
                p.ready_fails = 0;
                let message = format!("{}: retrying after the pause", self.pool_name(id));
                self.pool_log(Level::Info, LogEvent::PoolResumed, id, message);
                out.push(Action::Resume { pool: id });
            }
        }
    }

    /// A pool's next moment: its throttle ends, or the rate allows a fork it wants.
    pub(super) fn pool_due(&self, id: PoolId) -> Option<Instant> {
        let pool = self.pools.get(&id)?;
        let mut next = pool.throttled_until;
        if self.wants_fork(id) || self.rate_holds_watch(id) {
            next = earliest(next, self.fork_allowed_at(id));
        }
        next
    }
}
