//! Reload (SIGHUP): one at a time, later ones coalesced until the last has settled; new
//! services are bound before anything old is retired; kept pools move to a new generation and
//! their old workers are recycled (held serving until a replacement is ready, if they announce).

use std::time::{Duration, Instant};

use super::pools::MAX_LIVE_GENERATIONS;
use super::*;
use crate::config::{Config, Listen};

/// Workers that never announce readiness count as settled after living this long; a
/// coalesced reload waits at most [`SETTLE_LIMIT`] for a reload to settle.
const SETTLE_AGE: Duration = Duration::from_millis(250);
const SETTLE_LIMIT: Duration = Duration::from_secs(2);
const SETTLE_RECHECK: Duration = Duration::from_millis(50);
/// An old idle worker kept for a ready-announcing pool is retired by then at the latest.
const HOLD_LIMIT: Duration = Duration::from_secs(2);

/// A reload whose new services' sockets are being bound: nothing old is retired before
/// every new bind has answered, so a bind that fails leaves the old service serving.
/// What a reload left once it settled: services, workers on the new configuration, old
/// workers draining, sockets that could not be bound.
struct ReloadCounts {
    services: usize,
    current: u32,
    draining: u32,
    bind_errors: usize,
}

impl ReloadCounts {
    fn add_fields(&self, record: &mut LogRecord) {
        record
            .with(Field::Services, self.services)
            .with(Field::Workers, self.current)
            .with(Field::Draining, self.draining)
            .with(Field::BindErrors, self.bind_errors);
    }
}

/// "3 services, 6 workers on the new configuration, 2 old workers draining, 1 bind errors".
impl std::fmt::Display for ReloadCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} on the new configuration, {} draining",
            crate::counted(self.services as u64, "service"),
            crate::counted(self.current.into(), "worker"),
            crate::counted(self.draining.into(), "old worker")
        )?;
        match self.bind_errors {
            0 => Ok(()),
            n => write!(f, ", {}", crate::counted(n as u64, "bind error")),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct PendingReload {
    pub(super) config: Config,
    /// Running entries the new config could not resolve: they go on as they are.
    pub(super) untouched: faults::Untouched,
    pub(super) releases: Vec<ServiceKey>,
    /// New services (already on the new configuration: not recycled).
    pub(super) added: Vec<ServiceKey>,
    /// New services whose bind has not answered yet.
    pub(super) binding: BTreeSet<ServiceKey>,
    /// New services whose bind failed.
    pub(super) failed: Vec<ServiceKey>,
}

/// Reload bookkeeping: one at a time, later SIGHUPs coalesced.
#[derive(Debug, Clone, Default)]
pub(super) struct ReloadState {
    /// The reload being applied, waiting for its binds.
    pub(super) applying: Option<Box<PendingReload>>,
    /// A reload was asked for and waits for the last one to settle.
    pub(super) pending: bool,
    /// When the last reload was applied.
    pub(super) applied_at: Option<Instant>,
    /// While one is pending or settling: when to look again whether the last one settled.
    pub(super) recheck_at: Option<Instant>,
    /// The last reload was applied and has not settled yet.
    pub(super) settling: bool,
    /// The number of the last reload started (its [`Action::LoadConfig`]).
    pub(super) last_id: u64,
    /// When the reload in progress started.
    pub(super) started_at: Option<Instant>,
    /// Binds of the reload in progress that failed.
    pub(super) bind_errors: Vec<String>,
    pub(super) counters: ReloadCounters,
}

impl Supervisor {
    pub(super) fn on_reload_requested(&mut self, now: Now, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Running => {}
            Phase::StartCommands { .. } | Phase::WaitDaemons => {
                self.logs.info(
                    LogEvent::ReloadDeferred,
                    "SIGHUP during start-up: reloading once start-up completes",
                );
                self.reload.pending = true;
                return;
            }
            _ => {
                self.logs
                    .debug(LogEvent::ReloadIgnored, "SIGHUP while stopping: ignored");
                return;
            }
        }
        if self.reload.settling && self.reload_settled(now.mono) {
            self.finish_settling(now, out);
        }
        if !self.reload.settling && self.reload_settled(now.mono) {
            self.begin_load(now, out);
        } else {
            self.logs.debug(
                LogEvent::ReloadCoalesced,
                "SIGHUP while the last reload settles: coalesced",
            );
            self.reload.pending = true;
        }
    }

    /// The one place a reload starts: the config is read again.
    fn begin_load(&mut self, now: Now, out: &mut Vec<Action>) {
        self.reload.pending = false;
        self.reload.last_id += 1;
        self.reload.started_at = Some(now.mono);
        self.reload.bind_errors.clear();
        out.push(Action::LoadConfig);
    }

    /// The number of the reload that answers a request made just now: the one it started,
    /// or, when it was coalesced (or came during start-up), the next one.
    pub fn reload_answering_request(&self) -> u64 {
        if self.reload.pending {
            self.reload.last_id + 1
        } else {
            self.reload.last_id
        }
    }

    /// The new configuration was refused: the reload ends here.
    pub(super) fn on_config_rejected(
        &mut self,
        errors: Vec<String>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        self.finish_report(ReloadResult::Rejected { errors }, now, out);
    }

    fn finish_settling(&mut self, now: Now, out: &mut Vec<Action>) {
        self.reload.settling = false;
        let settled = self
            .reload
            .applied_at
            .is_none_or(|t| now.mono < t + SETTLE_LIMIT);
        let counts = self.reload_counts();
        let bind_errors = std::mem::take(&mut self.reload.bind_errors);
        let record = if settled {
            self.logs
                .info(
                    LogEvent::ReloadSettled,
                    format!(
                        "reload {} complete: every service has its workers ready ({counts})",
                        self.reload.last_id
                    ),
                )
                .with(Field::Reload, self.reload.last_id)
        } else {
            self.logs
                .info(
                    LogEvent::ReloadSettled,
                    format!(
                        "reload {} complete: not every service had its workers ready within {} s ({counts})",
                        self.reload.last_id,
                        SETTLE_LIMIT.as_secs()
                    ),
                )
                .with(Field::Reload, self.reload.last_id)
                .with(Field::Seconds, SETTLE_LIMIT.as_secs())
        };
        counts.add_fields(record);
        self.finish_report(
            ReloadResult::Applied {
                bind_errors,
                settled,
            },
            now,
            out,
        );
    }

    /// What the reload left, for its "complete" line. Walks the workers once.
    fn reload_counts(&self) -> ReloadCounts {
        let draining = self.draining_workers();
        ReloadCounts {
            services: self.services.values().filter(|s| !s.retiring).count(),
            current: u32::try_from(self.workers.len())
                .unwrap_or(u32::MAX)
                .saturating_sub(draining),
            draining,
            bind_errors: self.reload.bind_errors.len(),
        }
    }

    fn finish_report(&mut self, result: ReloadResult, now: Now, out: &mut Vec<Action>) {
        let report = ReloadReport {
            id: self.reload.last_id,
            started: self.reload.started_at.take().unwrap_or(now.mono),
            finished: now.mono,
            result,
            draining: self.draining_workers(),
        };
        self.reload.counters.record(report.clone());
        out.push(Action::ReloadFinished(report));
    }

    /// A reload has settled when every current pool has its prefork of ready workers (those
    /// that announce: announced; the others: alive a moment), or it has had long enough.
    pub(super) fn reload_settled(&self, now: Instant) -> bool {
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
            let want = u64::from(service.limits.prefork.min(service.limits.maxchild));
            let settled = u64::from(pool.tally.settled);
            if settled >= want || pool.announces || pool.tally.starting == 0 {
                return settled >= want;
            }
            // Only here do workers have to be looked at: those that never announce settle
            // by age.
            let aged = pool
                .tally
                .pids
                .iter()
                .filter_map(|pid| self.workers.get(pid))
                .filter(|w| w.generation == pool.generation && w.state == WorkerState::Starting)
                .filter(|w| now >= w.forked_at + SETTLE_AGE)
                .count();
            settled + aged as u64 >= want
        })
    }

    pub(super) fn apply_reload(&mut self, mut new: Config, now: Now, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            self.reload.started_at = None;
            return;
        }
        let untouched = self.keep_unresolved(&mut new);
        self.logs.info(
            LogEvent::ReloadApplying,
            "reloading: recycling every service onto the new configuration",
        );
        self.reload.applied_at = Some(now.mono);

        // Services: same (name, listen, proto) keeps its sockets; everything else binds anew.
        let mut kept = BTreeSet::new();
        let mut added = Vec::new();
        // The first running service of each (name, listen, proto), found without a scan
        // per entry (thousands of services).
        let mut running: HashMap<(&str, &Listen, _), ServiceKey> = HashMap::new();
        for (k, s) in self.services.iter().filter(|(_, s)| !s.retiring) {
            let identity = (s.spec.name.as_str(), &s.spec.listen, s.spec.proto);
            running.entry(identity).or_insert(*k);
        }
        let matches: Vec<Option<ServiceKey>> = new
            .services
            .iter()
            .map(|spec| {
                let identity = (spec.name.as_str(), &spec.listen, spec.proto);
                running.get(&identity).copied()
            })
            .collect();
        drop(running);
        for (spec, same) in new.services.iter().zip(matches) {
            match same {
                Some(key) => {
                    if let Some(s) = self.services.get_mut(&key) {
                        s.spec = spec.clone();
                        s.limits = PoolLimits::of(spec);
                    }
                    kept.insert(key);
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
        // Old services are retired only once every new bind has answered: their sockets stay
        // open for the binds to take over (the runtime carries out every Bind of this input
        // before it hands back the first answer).
        self.reload.applying = Some(Box::new(PendingReload {
            config: new,
            untouched,
            releases,
            binding: binding.iter().copied().collect(),
            added: binding,
            failed: Vec::new(),
        }));
        self.finish_reload_if_bound(now, out);
    }

    /// A new service's bind answered: the reload goes on once all have.
    pub(super) fn on_reload_bind_answer(
        &mut self,
        key: ServiceKey,
        failed: Option<&str>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let what = self
            .services
            .get(&key)
            .map(|s| format!("{} on {}", s.spec.name, s.spec.listen));
        let Some(pending) = self.reload.applying.as_mut() else {
            return;
        };
        if !pending.binding.remove(&key) {
            return;
        }
        if let Some(error) = failed {
            pending.failed.push(key);
            let what = what.unwrap_or_else(|| format!("service#{}", key.0));
            self.reload.bind_errors.push(format!("{what}: {error}"));
        }
        self.finish_reload_if_bound(now, out);
    }

    pub(super) fn finish_reload_if_bound(&mut self, now: Now, out: &mut Vec<Action>) {
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
        let mut not_recycled: BTreeSet<ServiceKey> = added.into_iter().collect();
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
                not_recycled.insert(old);
                self.services.remove(&key);
                if let Some(s) = self.services.get(&old) {
                    self.logs
                        .error(
                            LogEvent::ReloadKeptPrevious,
                            format!(
                                "reload: {name} keeps serving on {} with its previous \
                                 configuration",
                                s.spec.listen
                            ),
                        )
                        .with(Field::Service, &name)
                        .with(Field::Listen, &s.spec.listen);
                }
            }
        }
        for key in &releases {
            if let Some(s) = self.services.get_mut(key) {
                self.logs
                    .info(
                        LogEvent::ReloadServiceStops,
                        format!("reload: service {} on {} stops", s.spec.name, s.spec.listen),
                    )
                    .with(Field::Service, &s.spec.name)
                    .with(Field::Listen, &s.spec.listen);
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
            self.recycle_pool(id, &untouched, now, out);
        }
        for key in releases {
            self.release_service(key, true, out);
        }

        self.reload_events(&new, now);
        self.reload_daemons(&new, &untouched, now, out);
        self.config = new;
        self.reload.settling = true;
        self.reload.recheck_at = None;
        self.touch_all_pools();
        // The reload may have retired or replaced the services that held the ready file back.
        self.check_started(out);
    }

    /// Retires one old worker kept for `pool`, now that a new one is ready: an idle one if
    /// there is one (it leaves at once), else a busy one (it finishes its client first).
    pub(super) fn retire_one_held(&mut self, pool: PoolId, now: Now) {
        let Some(tally) = self.pools.get(&pool).map(|p| &p.tally) else {
            return;
        };
        // In retiring order; not one whose hold already ends now: several replacements in
        // one batch of notes each retire their own.
        let held = tally.held.iter().map(|(_, pid)| *pid).find(|pid| {
            self.workers
                .get(pid)
                .is_some_and(|w| w.recycle.held_until().is_some_and(|t| t > now.mono))
        });
        if let Some(pid) = held {
            // The caller's `out` is not reachable here without a borrow tangle, so the hold
            // simply ends now; `on_timers` sends the SIGHUP in this same `handle` call.
            self.update_worker(pid, |w| w.recycle.end_hold(now.mono));
        }
    }

    pub(super) fn release_service(&mut self, key: ServiceKey, refuse: bool, out: &mut Vec<Action>) {
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

    /// A reload that has settled is reported; a coalesced one whose predecessor has settled
    /// starts. Until then, look again shortly: workers that never announce settle by age,
    /// which no event reports, and looking on every event would cost a walk of every worker.
    pub(super) fn tick_reload(&mut self, now: Now, out: &mut Vec<Action>) {
        if !self.reload.pending && !self.reload.settling {
            return;
        }
        if self.reload.recheck_at.is_some_and(|t| now.mono < t) {
            return;
        }
        if self.reload_settled(now.mono) {
            self.reload.recheck_at = None;
            if self.reload.settling {
                self.finish_settling(now, out);
            }
            if self.reload.pending {
                self.begin_load(now, out);
            }
        } else {
            let limit = self
                .reload
                .applied_at
                .map_or(now.mono, |t| t + SETTLE_LIMIT);
            self.reload.recheck_at = Some(limit.min(now.mono + SETTLE_RECHECK));
        }
    }

    /// Moves a kept pool to a new generation (a retiring one stays where it is) and recycles
    /// every older worker.
    fn recycle_pool(
        &mut self,
        id: PoolId,
        untouched: &faults::Untouched,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if untouched.services.contains(&id.service) {
            return;
        }
        let retiring = self.services.get(&id.service).is_none_or(|s| s.retiring);
        let Some(pool) = self.pools.get_mut(&id) else {
            return;
        };
        let generation = pool.generation + u64::from(!retiring);
        pool.ready_fails = 0;
        pool.last_ready_fail = None;
        pool.times_throttled = 0;
        if pool.throttled_until.take().is_some() {
            out.push(Action::Resume { pool: id });
        }
        let announces = pool.announces;
        self.set_generation(id, generation);
        let pids: Vec<Pid> = self.pools.get(&id).map_or_else(Vec::new, |p| {
            let old = |pid: &&Pid| {
                self.workers
                    .get(pid)
                    .is_some_and(|w| retiring || w.generation < generation)
            };
            p.tally.pids.iter().filter(old).copied().collect()
        });
        // Busy workers are all kept (told to go now, they would leave after their client
        // with no replacement ready); idle ones only as many as replacements will come.
        let busy = pids
            .iter()
            .filter(|p| {
                self.workers
                    .get(p)
                    .is_some_and(|w| w.state == WorkerState::Busy && !w.recycle.hupped())
            })
            .count() as u32;
        let mut may_hold_idle = self.services.get(&id.service).map_or(0, |s| {
            s.limits.prefork.min(s.limits.maxchild).saturating_sub(busy)
        });
        for pid in pids {
            let Some(w) = self.workers.get(&pid) else {
                continue;
            };
            if w.recycle.hupped() {
                if generation.saturating_sub(w.generation) > MAX_LIVE_GENERATIONS {
                    // Too old to wait for the drain: `tick_recycled_workers` sends SIGTERM.
                    self.worker_timers.set(pid, Some(now.mono));
                }
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
                self.update_worker(pid, |w| w.recycle.hold(now.mono + HOLD_LIMIT));
            } else {
                self.send_hup(pid, now, out);
            }
        }
    }

    /// While a reload settles or is coalesced: when to look again whether it has settled.
    pub(super) fn reload_deadline(&self) -> Option<Instant> {
        self.reload
            .recheck_at
            .filter(|_| self.reload.pending || self.reload.settling)
    }
}
