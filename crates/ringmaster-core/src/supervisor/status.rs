//! What the master is doing, as plain data: a snapshot of every service, daemon, event and
//! the last reload, for `ringmaster status`, metrics and systemd's STATUS= line; and the
//! counters behind it, kept as things happen.

use std::time::Instant;

use super::*;

/// Why a worker ended, as counted in `exits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitReason {
    /// Exited cleanly (0 or EX_TEMPFAIL) on its own, or when told to stop.
    Normal,
    /// Exited with another status.
    Crash,
    /// Killed by a signal that was not a recycle.
    Signal,
    /// Left after a reload told it to (SIGHUP, or its service was removed).
    Recycled,
}

impl ExitReason {
    pub const ALL: [ExitReason; 4] = [
        ExitReason::Normal,
        ExitReason::Crash,
        ExitReason::Signal,
        ExitReason::Recycled,
    ];

    /// The label value in metrics and the key in `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Normal => "normal",
            ExitReason::Crash => "crash",
            ExitReason::Signal => "signal",
            ExitReason::Recycled => "recycled",
        }
    }
}

/// Counts kept per pool since the master started (a reload keeps them: they follow the
/// service's name and address family, as Cyrus's do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolCounters {
    pub forks: u64,
    pub exits: [u64; 4],
    /// Workers that failed before serving (Cyrus's `nreadyfails`).
    pub ready_fails: u64,
    /// The last fork or exec failure of this pool's workers, as logged.
    pub last_exec_error: Option<String>,
}

impl PoolCounters {
    pub fn exits(&self, reason: ExitReason) -> u64 {
        self.exits[reason as usize]
    }

    pub(super) fn count_exit(&mut self, reason: ExitReason) {
        self.exits[reason as usize] += 1;
    }
}

/// The master's phase, as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterPhase {
    Starting,
    Running,
    Draining,
    Stopping,
    Exited,
}

impl MasterPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MasterPhase::Starting => "starting",
            MasterPhase::Running => "running",
            MasterPhase::Draining => "draining",
            MasterPhase::Stopping => "stopping",
            MasterPhase::Exited => "exited",
        }
    }
}

/// Workers of one pool by what they are doing. `draining`: of an older generation (recycled
/// by a reload, or of a service being removed), whatever their state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    pub starting: u32,
    pub ready: u32,
    pub busy: u32,
    pub draining: u32,
}

impl WorkerCounts {
    pub fn total(&self) -> u32 {
        self.starting + self.ready + self.busy + self.draining
    }
}

/// One listening socket of a service and its workers (Cyrus's `service/family`).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    pub service: String,
    /// The socket's number among the entry's, as `CYRUS_ID` (0, then 1 for a second address
    /// family; see `PoolId`). Which address family it is, only the shell knows (the metrics
    /// ask the bound socket).
    pub family: u8,
    pub listen: String,
    pub proto: String,
    /// The pool's generation: how many reloads have recycled it.
    pub generation: u64,
    /// Removed or replaced by a reload: its workers drain, it forks no more.
    pub retiring: bool,
    pub workers: WorkerCounts,
    pub prefork: u32,
    pub maxchild: Option<u32>,
    pub maxforkrate: u32,
    /// Forks within the last second.
    pub forks_last_second: u32,
    pub counters: PoolCounters,
    /// Connections waiting in the accept queue when the listener was last seen readable.
    pub waiting: u32,
    /// Throttled after workers kept failing: the listener is paused until then.
    pub paused_until: Option<Instant>,
}

/// A service whose socket could not be bound (it has no pool while down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownService {
    pub service: String,
    pub listen: String,
    pub error: String,
    pub attempts: u32,
    pub retry_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    pub name: String,
    pub pid: Option<Pid>,
    pub up_since: Option<Instant>,
    /// Starts after the first one.
    pub restarts: u64,
    pub restart_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStatus {
    pub name: String,
    /// The next run, on the wall clock (seconds since the epoch), when it is scheduled so.
    pub next_unix: Option<i64>,
    /// The next run, on the monotonic clock, for `period=` events.
    pub next_mono: Option<Instant>,
    pub running: usize,
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration is in force. `bind_errors`: new sockets that could not be
    /// bound (their services keep their old configuration, or wait for a retry).
    /// `settled`: every service had its new prefork ready; otherwise the settle cap ran out.
    Applied {
        bind_errors: Vec<String>,
        settled: bool,
    },
    /// The new configuration was unreadable or invalid; the old one runs on.
    Rejected { errors: Vec<String> },
}

impl ReloadResult {
    /// The label value in metrics: `applied`, `partial` (a bind failed) or `rejected`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReloadResult::Applied { bind_errors, .. } if bind_errors.is_empty() => "applied",
            ReloadResult::Applied { .. } => "partial",
            ReloadResult::Rejected { .. } => "rejected",
        }
    }
}

/// One finished reload: what `ringmaster reload` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Reloads are numbered from 1 in the order they were started.
    pub id: u64,
    pub started: Instant,
    pub finished: Instant,
    pub result: ReloadResult,
    /// Old workers still draining when it finished.
    pub draining: u32,
}

/// Reloads since start, by result, and the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadCounters {
    pub applied: u64,
    pub partial: u64,
    pub rejected: u64,
    pub last: Option<ReloadReport>,
}

impl ReloadCounters {
    pub(super) fn record(&mut self, report: ReloadReport) {
        match report.result.kind() {
            "applied" => self.applied += 1,
            "partial" => self.partial += 1,
            _ => self.rejected += 1,
        }
        self.last = Some(report);
    }
}

/// Everything `ringmaster status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub phase: MasterPhase,
    pub pools: Vec<PoolStatus>,
    pub down: Vec<DownService>,
    pub daemons: Vec<DaemonStatus>,
    pub events: Vec<EventStatus>,
    pub reloads: ReloadCounters,
    /// A reload being applied or settling, and when it started.
    pub reload_in_progress: Option<Instant>,
    /// Every service that should listen does (the readiness probe).
    pub all_listening: bool,
}

impl Supervisor {
    /// A snapshot of everything. It walks every worker once: meant for an operator's request
    /// or a metrics scrape, not for every event.
    pub fn status(&self) -> Status {
        let mut counts: HashMap<PoolId, WorkerCounts> = HashMap::new();
        for w in self.workers.values() {
            let Some(pool) = self.pools.get(&w.pool) else {
                continue;
            };
            let c = counts.entry(w.pool).or_default();
            if w.generation != pool.generation || w.recycle.hupped() {
                c.draining += 1;
                continue;
            }
            match w.state {
                WorkerState::Starting => c.starting += 1,
                WorkerState::Ready => c.ready += 1,
                WorkerState::Busy => c.busy += 1,
                WorkerState::Exiting => c.draining += 1,
            }
        }
        let pools = self
            .pools
            .iter()
            .filter_map(|(id, pool)| {
                let service = self.services.get(&id.service)?;
                Some(PoolStatus {
                    service: service.spec.name.clone(),
                    family: id.family,
                    listen: service.spec.listen.to_string(),
                    proto: service.spec.proto.to_string(),
                    generation: pool.generation,
                    retiring: service.retiring,
                    workers: counts.get(id).copied().unwrap_or_default(),
                    prefork: service.limits.prefork,
                    maxchild: (service.limits.maxchild != u32::MAX)
                        .then_some(service.limits.maxchild),
                    maxforkrate: service.limits.maxforkrate,
                    forks_last_second: u32::try_from(pool.recent_forks.len()).unwrap_or(u32::MAX),
                    counters: pool.counters.clone(),
                    waiting: pool.waiting,
                    paused_until: pool.throttled_until,
                })
            })
            .collect();
        let down = self
            .services
            .values()
            .filter(|s| !s.retiring)
            .filter_map(|s| {
                let d = s.down.as_ref()?;
                Some(DownService {
                    service: s.spec.name.clone(),
                    listen: s.spec.listen.to_string(),
                    error: d.error.clone(),
                    attempts: d.attempts,
                    retry_at: d.retry_at,
                })
            })
            .collect::<Vec<_>>();
        let daemons = self.daemons.iter().map(Daemon::status).collect();
        let events = self
            .events
            .iter()
            .map(|e| EventStatus {
                name: e.spec.name.clone(),
                next_unix: e.next_unix,
                next_mono: e.next_mono,
                running: e.running.len(),
            })
            .collect();
        Status {
            phase: self.master_phase(),
            pools,
            all_listening: self.phase == Phase::Running && down.is_empty(),
            down,
            daemons,
            events,
            reloads: self.reload.counters.clone(),
            reload_in_progress: self.reload.started_at,
        }
    }

    fn master_phase(&self) -> MasterPhase {
        match self.phase {
            Phase::StartCommands { .. } | Phase::WaitDaemons => MasterPhase::Starting,
            Phase::Running => MasterPhase::Running,
            Phase::Draining { .. } => MasterPhase::Draining,
            Phase::Stopping { .. } => MasterPhase::Stopping,
            Phase::Exited => MasterPhase::Exited,
        }
    }

    /// Old workers still running after reloads (of older generations, or recycled).
    pub(super) fn draining_workers(&self) -> u32 {
        let count = self
            .workers
            .values()
            .filter(|w| {
                w.recycle.hupped()
                    || self
                        .pools
                        .get(&w.pool)
                        .is_none_or(|p| p.generation != w.generation)
            })
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}
