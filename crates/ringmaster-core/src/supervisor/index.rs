//! Indexes that keep the cost of one input independent of how many workers and pools there
//! are: each pool's tally (its workers' pids and counters, kept up to date on every change of
//! a worker), the timers of workers and pools (ordered, each with at most one entry), and the
//! pools touched by the current input, which are the only ones `maintain` looks at.
//!
//! Every change to a worker goes through `insert_worker`, `remove_worker` or `update_worker`,
//! which take the worker's share out of its pool's tally, apply the change and put it back.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::*;

/// A pool's workers and what `pool_counts`, `make_room_for_replacement`, `retire_one_held`
/// and `reload_settled` need of them, counted as they change rather than when asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) pids: BTreeSet<Pid>,
    /// Not `Exiting`.
    pub(super) active: u32,
    /// Current generation, idle, not sent SIGHUP.
    pub(super) ready: u32,
    /// Current generation, `Ready` or `Busy`.
    pub(super) settled: u32,
    /// Current generation, `Starting`.
    pub(super) starting: u32,
    /// Not `Exiting`, sent SIGHUP.
    pub(super) leaving: u32,
    /// Workers on hold, the idle ones (`Ready`) first, then by pid: `retire_one_held`'s order.
    pub(super) held: BTreeSet<(bool, Pid)>,
}

/// What one worker adds to its pool's tally.
struct Share {
    active: bool,
    ready: bool,
    settled: bool,
    starting: bool,
    leaving: bool,
    held: bool,
}

impl Share {
    fn of(w: &Worker, generation: u64) -> Share {
        let current = w.generation == generation;
        let exiting = w.state == WorkerState::Exiting;
        Share {
            active: !exiting,
            ready: current && w.is_idle() && !w.recycle.hupped(),
            settled: current && matches!(w.state, WorkerState::Ready | WorkerState::Busy),
            starting: current && w.state == WorkerState::Starting,
            leaving: !exiting && w.recycle.hupped(),
            held: w.recycle.held_until().is_some(),
        }
    }
}

fn held_key(pid: Pid, w: &Worker) -> (bool, Pid) {
    (w.state != WorkerState::Ready, pid)
}

impl Tally {
    fn add(&mut self, pid: Pid, w: &Worker, generation: u64) {
        let s = Share::of(w, generation);
        self.pids.insert(pid);
        self.active += u32::from(s.active);
        self.ready += u32::from(s.ready);
        self.settled += u32::from(s.settled);
        self.starting += u32::from(s.starting);
        self.leaving += u32::from(s.leaving);
        if s.held {
            self.held.insert(held_key(pid, w));
        }
    }

    fn sub(&mut self, pid: Pid, w: &Worker, generation: u64) {
        let s = Share::of(w, generation);
        self.pids.remove(&pid);
        self.active -= u32::from(s.active);
        self.ready -= u32::from(s.ready);
        self.settled -= u32::from(s.settled);
        self.starting -= u32::from(s.starting);
        self.leaving -= u32::from(s.leaving);
        if s.held {
            self.held.remove(&held_key(pid, w));
        }
    }
}

/// Moments at which something is due, each key at most once: set, moved or cleared exactly
/// (no stale entries), the earliest found at once.
#[derive(Debug, Clone)]
pub(super) struct Timers<K: Ord + Copy + std::hash::Hash> {
    order: BTreeSet<(Instant, K)>,
    at: HashMap<K, Instant>,
}

impl<K: Ord + Copy + std::hash::Hash> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            order: BTreeSet::new(),
            at: HashMap::new(),
        }
    }
}

impl<K: Ord + Copy + std::hash::Hash> Timers<K> {
    pub(super) fn set(&mut self, key: K, due: Option<Instant>) {
        if let Some(old) = self.at.remove(&key) {
            self.order.remove(&(old, key));
        }
        if let Some(due) = due {
            self.at.insert(key, due);
            self.order.insert((due, key));
        }
    }

    pub(super) fn first(&self) -> Option<Instant> {
        self.order.first().map(|(t, _)| *t)
    }

    /// The keys due by `now`, in key order (taken off: whoever handles them sets them again).
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(&(t, key)) = self.order.first() {
            if t > now {
                break;
            }
            self.order.remove(&(t, key));
            self.at.remove(&key);
            due.push(key);
        }
        due.sort_unstable();
        due
    }

    #[cfg(test)]
    pub(super) fn get(&self, key: K) -> Option<Instant> {
        self.at.get(&key).copied()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }
}

impl Supervisor {
    /// A new worker, counted in its pool.
    pub(super) fn insert_worker(&mut self, pid: Pid, w: Worker) {
        if let Some(p) = self.pools.get_mut(&w.pool) {
            p.tally.add(pid, &w, p.generation);
        }
        self.touched.insert(w.pool);
        self.worker_timers.set(pid, self.worker_due(&w));
        self.workers.insert(pid, w);
    }

    /// A worker forgotten (reaped), no longer counted.
    pub(super) fn remove_worker(&mut self, pid: Pid) -> Option<Worker> {
        let w = self.workers.remove(&pid)?;
        if let Some(p) = self.pools.get_mut(&w.pool) {
            p.tally.sub(pid, &w, p.generation);
        }
        self.touched.insert(w.pool);
        self.worker_timers.set(pid, None);
        Some(w)
    }

    /// Changes a worker, keeping its pool's tally and its timer in step.
    pub(super) fn update_worker<R>(
        &mut self,
        pid: Pid,
        change: impl FnOnce(&mut Worker) -> R,
    ) -> Option<R> {
        let w = self.workers.get_mut(&pid)?;
        if let Some(p) = self.pools.get_mut(&w.pool) {
            p.tally.sub(pid, w, p.generation);
        }
        let before = w.recycle;
        let result = change(w);
        if let Some(p) = self.pools.get_mut(&w.pool) {
            p.tally.add(pid, w, p.generation);
        }
        let (pool, after) = (w.pool, w.recycle);
        self.touched.insert(pool);
        if before != after {
            let due = self.workers.get(&pid).and_then(|w| self.worker_due(w));
            self.worker_timers.set(pid, due);
        }
        Some(result)
    }

    /// A pool's new generation: its tally counted again, every worker being older now.
    pub(super) fn set_generation(&mut self, id: PoolId, generation: u64) {
        let Some(pool) = self.pools.get_mut(&id) else {
            return;
        };
        pool.generation = generation;
        let pids = std::mem::take(&mut pool.tally.pids);
        let mut tally = Tally::default();
        for pid in pids {
            if let Some(w) = self.workers.get(&pid) {
                tally.add(pid, w, generation);
            }
        }
        pool.tally = tally;
        self.touched.insert(id);
    }

    /// When a worker's recycling next needs a look: its hold ends, its drain is over, or
    /// SIGKILL is due.
    pub(super) fn worker_due(&self, w: &Worker) -> Option<Instant> {
        match w.recycle {
            Recycle::Held { until } => Some(until),
            Recycle::Hupped { at } => Some(at + self.settings.drain_timeout),
            Recycle::Termed { at, .. } => Some(at + self.settings.stop_timeout),
            Recycle::Serving | Recycle::Killed { .. } => None,
        }
    }

    /// Every pool is to be maintained (the phase or the configuration changed), and gone
    /// services swept.
    pub(super) fn touch_all_pools(&mut self) {
        self.touched.extend(self.pools.keys().copied());
        self.sweep_services = true;
    }

    /// The pools of one service.
    pub(super) fn pools_of(&self, key: ServiceKey) -> Vec<PoolId> {
        let from = PoolId {
            service: key,
            family: 0,
        };
        let to = PoolId {
            service: key,
            family: u8::MAX,
        };
        self.pools.range(from..=to).map(|(id, _)| *id).collect()
    }

    /// Whether no child at all is left, without listing them.
    pub(super) fn no_children(&self) -> bool {
        self.workers.is_empty()
            && self.others.is_empty()
            && self.daemons.iter().all(|d| d.pid().is_none())
            && self.events.iter().all(|e| e.running.is_empty())
    }

    /// Test aid: every tally and timer equals a recount from scratch.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        let mut expected: BTreeMap<PoolId, Tally> = BTreeMap::new();
        for (pid, w) in &self.workers {
            let pool = self.pools.get(&w.pool);
            assert!(
                pool.is_some(),
                "worker {pid} of a forgotten pool {:?}",
                w.pool
            );
            let generation = pool.map_or(0, |p| p.generation);
            expected.entry(w.pool).or_default().add(*pid, w, generation);
            assert_eq!(
                self.worker_timers.get(*pid),
                self.worker_due(w),
                "timer of {pid}"
            );
        }
        for (id, pool) in &self.pools {
            let want = expected.remove(id).unwrap_or_default();
            assert_eq!(pool.tally, want, "tally of {id:?}");
        }
        assert!(
            expected.is_empty(),
            "workers of unknown pools: {expected:?}"
        );
        let timed = self
            .workers
            .values()
            .filter(|w| self.worker_due(w).is_some());
        assert_eq!(
            self.worker_timers.len(),
            timed.count(),
            "stray worker timers"
        );
    }
}
