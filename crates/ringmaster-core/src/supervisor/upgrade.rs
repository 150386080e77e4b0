//! The supervisor across a binary upgrade: what it exports before the master re-executes
//! itself (`export_state`), what the new image rebuilds from it (`adopt`), and when an
//! upgrade must wait (`upgrade_blocker`).
//!
//! The state is plain data. Moments are milliseconds relative to the export (negative: in
//! the past), since `Instant`s mean nothing to another process image; the shell serializes
//! it. Services are matched by name against the configuration the new image loaded, which
//! the old image checked to be the one running.

use serde::{Deserialize, Serialize};

use super::daemons::DaemonNext;
use super::*;

/// Everything the supervisor knows that the new image needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    pub services: Vec<ServiceState>,
    pub workers: Vec<WorkerSnapshot>,
    pub daemons: Vec<DaemonSnapshot>,
    pub events: Vec<EventSnapshot>,
    pub reload: ReloadSnapshot,
}

/// A bound service: its key (the shell's pools are keyed by it) and its pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub key: u32,
    pub name: String,
    pub pools: Vec<PoolSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    pub family: u8,
    pub generation: u64,
    pub announces: bool,
    pub forks: u64,
    pub exits: [u64; 4],
    pub ready_fails: u64,
    /// Throttled (its listener paused) until then.
    pub throttled_ms: Option<i64>,
    pub times_throttled: u32,
    /// Failures in a row before serving, and when the last one was.
    pub fail_streak: u32,
    pub last_fail_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerPhase {
    Starting,
    Ready,
    Busy,
    Exiting,
}

/// A worker's recycling, moments relative to the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecycleSnapshot {
    Serving,
    Held { until_ms: i64 },
    Hupped { at_ms: i64 },
    Termed { at_ms: i64, hupped: bool },
    Killed { hupped: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    pub pid: Pid,
    pub service: u32,
    pub family: u8,
    pub generation: u64,
    pub phase: WorkerPhase,
    pub forked_ms: i64,
    pub recycle: RecycleSnapshot,
    pub served: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonSnapshot {
    pub name: String,
    /// Running: its pid, since when, and when it was sent SIGTERM (if it was).
    pub pid: Option<Pid>,
    pub started_ms: i64,
    pub term_ms: Option<i64>,
    pub killed: bool,
    /// Down: when it is started again.
    pub restart_ms: Option<i64>,
    pub quick_deaths: u32,
    pub ready: bool,
    pub starts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSnapshot {
    pub name: String,
    pub next_ms: Option<i64>,
    pub next_unix: Option<i64>,
    pub running: Vec<Pid>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSnapshot {
    pub last_id: u64,
    pub applied: u64,
    pub partial: u64,
    pub rejected: u64,
}

/// Why a state cannot be adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptError(pub String);

impl std::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn rel(t: Instant, now: Instant) -> i64 {
    match t.checked_duration_since(now) {
        Some(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
        None => -i64::try_from(now.duration_since(t).as_millis()).unwrap_or(i64::MAX),
    }
}

fn at(ms: i64, now: Instant) -> Instant {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        now.checked_add(d).unwrap_or(now)
    } else {
        now.checked_sub(d).unwrap_or(now)
    }
}

impl RecycleSnapshot {
    fn of(r: Recycle, now: Instant) -> Self {
        match r {
            Recycle::Serving => Self::Serving,
            Recycle::Held { until } => Self::Held {
                until_ms: rel(until, now),
            },
            Recycle::Hupped { at } => Self::Hupped {
                at_ms: rel(at, now),
            },
            Recycle::Termed { at, hupped } => Self::Termed {
                at_ms: rel(at, now),
                hupped,
            },
            Recycle::Killed { hupped } => Self::Killed { hupped },
        }
    }

    fn back(self, now: Instant) -> Recycle {
        match self {
            Self::Serving => Recycle::Serving,
            Self::Held { until_ms } => Recycle::Held {
                until: at(until_ms, now),
            },
            Self::Hupped { at_ms } => Recycle::Hupped { at: at(at_ms, now) },
            Self::Termed { at_ms, hupped } => Recycle::Termed {
                at: at(at_ms, now),
                hupped,
            },
            Self::Killed { hupped } => Recycle::Killed { hupped },
        }
    }
}

fn phase_of(s: WorkerState) -> WorkerPhase {
    match s {
        WorkerState::Starting => WorkerPhase::Starting,
        WorkerState::Ready => WorkerPhase::Ready,
        WorkerState::Busy => WorkerPhase::Busy,
        WorkerState::Exiting => WorkerPhase::Exiting,
    }
}

fn state_of(p: WorkerPhase) -> WorkerState {
    match p {
        WorkerPhase::Starting => WorkerState::Starting,
        WorkerPhase::Ready => WorkerState::Ready,
        WorkerPhase::Busy => WorkerState::Busy,
        WorkerPhase::Exiting => WorkerState::Exiting,
    }
}

impl Supervisor {
    /// Why an upgrade cannot start now, or None: only a running master with no reload,
    /// START command or fork in progress and no retired service left is exported, so that
    /// the new image finds every service in its configuration.
    pub fn upgrade_blocker(&self) -> Option<String> {
        let why = match &self.phase {
            Phase::StartCommands { .. } | Phase::WaitDaemons => "the master is starting",
            Phase::Draining { .. } | Phase::Stopping { .. } | Phase::Exited => {
                "the master is stopping"
            }
            Phase::Running
                if self.reload.applying.is_some()
                    || self.reload.pending
                    || self.reload.settling =>
            {
                "a reload is in progress"
            }
            Phase::Running if self.services.values().any(|s| s.retiring) => {
                "the services a reload removed are still draining"
            }
            Phase::Running if self.pools.values().any(|p| p.in_flight > 0) => {
                "workers are being forked"
            }
            Phase::Running if !self.others.is_empty() => "a START command is running",
            Phase::Running
                if self.daemons.iter().any(|d| {
                    d.next != DaemonNext::Same
                        || matches!(
                            d.run,
                            DaemonRun::Up {
                                term_at: Some(_),
                                ..
                            }
                        )
                }) =>
            {
                "a daemon is being stopped or replaced"
            }
            Phase::Running => return None,
        };
        Some(why.to_string())
    }

    /// The state to hand to the next image.
    pub fn export_state(&self, now: Instant) -> SupervisorState {
        let services = self
            .services
            .iter()
            .filter(|(_, s)| s.bound && !s.retiring)
            .map(|(key, s)| ServiceState {
                key: key.0,
                name: s.spec.name.clone(),
                pools: self
                    .pools_of(*key)
                    .into_iter()
                    .filter_map(|id| self.pools.get(&id).map(|p| (id, p)))
                    .map(|(id, p)| PoolSnapshot {
                        family: id.family,
                        generation: p.generation,
                        announces: p.announces,
                        forks: p.counters.forks,
                        exits: p.counters.exits,
                        ready_fails: p.counters.ready_fails,
                        throttled_ms: p.throttled_until.map(|t| rel(t, now)),
                        times_throttled: p.times_throttled,
                        fail_streak: p.ready_fails,
                        last_fail_ms: p.last_ready_fail.map(|t| rel(t, now)),
                    })
                    .collect(),
            })
            .collect();
        let mut workers: Vec<WorkerSnapshot> = self
            .workers
            .iter()
            .map(|(&pid, w)| WorkerSnapshot {
                pid,
                service: w.pool.service.0,
                family: w.pool.family,
                generation: w.generation,
                phase: phase_of(w.state),
                forked_ms: rel(w.forked_at, now),
                recycle: RecycleSnapshot::of(w.recycle, now),
                served: w.served,
            })
            .collect();
        workers.sort_by_key(|w| w.pid);
        SupervisorState {
            services,
            workers,
            daemons: self
                .daemons
                .iter()
                .map(|d| daemon_snapshot(d, now))
                .collect(),
            events: self
                .events
                .iter()
                .map(|e| EventSnapshot {
                    name: e.spec.name.clone(),
                    next_ms: e.next_mono.map(|t| rel(t, now)),
                    next_unix: e.next_unix,
                    running: e.running.clone(),
                })
                .collect(),
            reload: ReloadSnapshot {
                last_id: self.reload.last_id,
                applied: self.reload.counters.applied,
                partial: self.reload.counters.partial,
                rejected: self.reload.counters.rejected,
            },
        }
    }

    /// A running supervisor rebuilt from `state` on `config` (the one the old image ran):
    /// its services already bound, its children known. Services of the configuration that
    /// the state lacks (down ones) are bound again. The actions are the first ones to carry
    /// out (watching the listeners, forking what pools lack).
    pub fn adopt(
        config: Config,
        settings: Settings,
        local: LocalClock,
        state: SupervisorState,
        now: Now,
    ) -> Result<(Supervisor, Vec<Action>), AdoptError> {
        let mut sup = Supervisor::new(config, settings, local);
        let mut out = Vec::new();
        sup.phase = Phase::Running;
        sup.faults.adopted();
        sup.adopt_services(&state, now, &mut out)?;
        for w in &state.workers {
            let pool = PoolId {
                service: ServiceKey(w.service),
                family: w.family,
            };
            if !sup.pools.contains_key(&pool) {
                return Err(AdoptError(format!(
                    "worker {} belongs to an unknown pool",
                    w.pid
                )));
            }
            let worker = Worker {
                pool,
                generation: w.generation,
                state: state_of(w.phase),
                forked_at: at(w.forked_ms, now.mono),
                recycle: w.recycle.back(now.mono),
                served: w.served,
            };
            sup.insert_worker(w.pid, worker);
        }
        sup.adopt_daemons(&state.daemons, now);
        sup.adopt_events(&state.events, now);
        sup.reload.last_id = state.reload.last_id;
        sup.reload.counters.applied = state.reload.applied;
        sup.reload.counters.partial = state.reload.partial;
        sup.reload.counters.rejected = state.reload.rejected;
        sup.touch_all_pools();
        sup.maintain(now, &mut out);
        sup.logs.drain_into(&mut out);
        Ok((sup, out))
    }

    fn adopt_services(
        &mut self,
        state: &SupervisorState,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Result<(), AdoptError> {
        self.next_service_key = state.services.iter().map(|s| s.key + 1).max().unwrap_or(0);
        for s in &state.services {
            let Some(spec) = self.config.services.iter().find(|e| e.name == s.name) else {
                return Err(AdoptError(format!(
                    "service {} is not in the configuration",
                    s.name
                )));
            };
            let key = ServiceKey(s.key);
            self.services.insert(
                key,
                Service {
                    limits: PoolLimits::of(spec),
                    spec: spec.clone(),
                    families: s.pools.iter().map(|p| p.family).collect(),
                    retiring: false,
                    bound: true,
                    down: None,
                },
            );
            for p in &s.pools {
                let mut pool = Pool::new();
                pool.generation = p.generation;
                pool.announces = p.announces;
                pool.counters.forks = p.forks;
                pool.counters.exits = p.exits;
                pool.counters.ready_fails = p.ready_fails;
                pool.throttled_until = p.throttled_ms.map(|t| at(t, now.mono));
                pool.times_throttled = p.times_throttled;
                pool.ready_fails = p.fail_streak;
                pool.last_ready_fail = p.last_fail_ms.map(|t| at(t, now.mono));
                self.pools.insert(
                    PoolId {
                        service: key,
                        family: p.family,
                    },
                    pool,
                );
            }
        }
        let missing: Vec<ServiceEntry> = self
            .config
            .services
            .iter()
            .filter(|e| !state.services.iter().any(|s| s.name == e.name))
            .cloned()
            .collect();
        for spec in missing {
            self.add_service(spec, Vec::new(), out);
        }
        Ok(())
    }

    fn adopt_daemons(&mut self, daemons: &[DaemonSnapshot], now: Now) {
        for spec in self.config.daemons.clone() {
            let mut d = Daemon::new(spec, Some(now.mono));
            if let Some(s) = daemons.iter().find(|s| s.name == d.spec.name) {
                d.run = match s.pid {
                    Some(pid) => DaemonRun::Up {
                        pid,
                        started_at: at(s.started_ms, now.mono),
                        term_at: s.term_ms.map(|t| at(t, now.mono)),
                        killed: s.killed,
                    },
                    None => DaemonRun::Down {
                        restart_at: s.restart_ms.map(|t| at(t, now.mono)),
                    },
                };
                d.quick_deaths = s.quick_deaths;
                d.ready = s.ready;
                d.starts = s.starts;
            }
            self.daemons.push(d);
        }
    }

    fn adopt_events(&mut self, events: &[EventSnapshot], now: Now) {
        for spec in self.config.events.clone() {
            let mut e = self.new_event(spec, now);
            if let Some(s) = events.iter().find(|s| s.name == e.spec.name) {
                e.next_mono = s.next_ms.map(|t| at(t, now.mono));
                e.next_unix = s.next_unix;
                e.running = s.running.clone();
            }
            self.events.push(e);
        }
    }
}

fn daemon_snapshot(d: &Daemon, now: Instant) -> DaemonSnapshot {
    let mut s = DaemonSnapshot {
        name: d.spec.name.clone(),
        pid: None,
        started_ms: 0,
        term_ms: None,
        killed: false,
        restart_ms: None,
        quick_deaths: d.quick_deaths,
        ready: d.ready,
        starts: d.starts,
    };
    match d.run {
        DaemonRun::Up {
            pid,
            started_at,
            term_at,
            killed,
        } => {
            s.pid = Some(pid);
            s.started_ms = rel(started_at, now);
            s.term_ms = term_at.map(|t| rel(t, now));
            s.killed = killed;
        }
        DaemonRun::Down { restart_at } => s.restart_ms = restart_at.map(|t| rel(t, now)),
    }
    s
}
