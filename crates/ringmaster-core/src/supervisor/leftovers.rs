//! Processes that workers leave behind: their process groups, kept per service, bounded, and
//! signalled at stop.
//!
//! Every worker runs in a process group of its own, numbered by its pid. When a worker is
//! reaped and its group still has members, those are processes it left behind (a double fork,
//! `cmd &`); they come back to the master, its subreaper, when they die. Each such group is
//! remembered under the worker's service. A service that leaves more groups than its bound has
//! its oldest ones SIGKILLed, so one service cannot fill the process table. A group is
//! forgotten when a reap shows it empty, when a new child gets its number (so it was empty),
//! or when the runtime, about to signal it, finds none of the master's children in it (its
//! last members left it or were reaped unseen; the number may be someone else's by then).
//! Processes that left their group (setsid) cannot be traced to a service: they are reaped
//! and logged as unknown.
//!
//! Cost per event is constant (amortized): entries of forgotten groups are skipped when met
//! and compacted away when they pile up; nothing scans every group except the stop.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::log::{Field, LogEvent, Logs};
use super::{Action, ExitStatus, Pid, Sig};

/// Groups a service may leave behind at least (or `maxchild`, when larger)...
const MIN_BOUND: usize = 16;
/// ...and at most, whatever its maxchild.
const MAX_BOUND: usize = 1024;
/// One log line per source this often at most; the rest are counted and said with the next.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How many groups a service with this maxchild may leave behind.
pub(super) fn bound_for(maxchild: u32) -> usize {
    if maxchild == u32::MAX {
        MIN_BOUND
    } else {
        (maxchild as usize).clamp(MIN_BOUND, MAX_BOUND)
    }
}

/// At most one line per [`LOG_EVERY`]; a storm of leftovers must not become a storm of logs.
#[derive(Debug, Default)]
struct LogGate {
    last: Option<Instant>,
    suppressed: u32,
}

impl LogGate {
    /// Some(lines suppressed since the last one) when a line may go out now.
    fn pass(&mut self, now: Instant) -> Option<u32> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn suppressed(n: u32) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar messages suppressed)")
    }
}

#[derive(Debug)]
struct Group {
    service: String,
    /// Tells this group from an older one with the same (reused) number.
    seq: u64,
    /// SIGKILLed for the bound: no longer counted, remembered only to attribute its reaps.
    killed: bool,
}

#[derive(Debug, Default)]
struct PerService {
    /// Groups not killed, oldest first; may hold entries of forgotten groups.
    live: VecDeque<(Pid, u64)>,
    live_count: usize,
    /// Killed groups, oldest first; may hold entries of forgotten groups.
    killed: VecDeque<(Pid, u64)>,
    killed_count: usize,
    /// Processes left behind by this service's workers that we reaped.
    reaped: u64,
    /// Groups killed for the bound, all told.
    killed_total: u64,
    log: LogGate,
}

/// Every group left behind, by number and by service.
#[derive(Debug, Default)]
pub(super) struct Leftovers {
    groups: HashMap<Pid, Group>,
    services: HashMap<String, PerService>,
    next_seq: u64,
    unknown_log: LogGate,
}

impl Leftovers {
    /// Worker `pid` of `service` was reaped and its group (numbered `pid`) lives on.
    pub(super) fn left_behind(
        &mut self,
        service: &str,
        pid: Pid,
        bound: usize,
        now: Instant,
        logs: &mut Logs,
        out: &mut Vec<Action>,
    ) {
        // An older group with this number is over: the number was free to be reused.
        self.forget(pid);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.groups.insert(
            pid,
            Group {
                service: service.to_string(),
                seq,
                killed: false,
            },
        );
        let per = self.services.entry(service.to_string()).or_default();
        per.live.push_back((pid, seq));
        per.live_count += 1;
        let mut killed_now = Vec::new();
        while per.live_count > bound {
            let Some((pgid, seq)) = per.live.pop_front() else {
                break;
            };
            let Some(group) = self.groups.get_mut(&pgid) else {
                continue;
            };
            if group.seq != seq || group.killed {
                continue;
            }
            group.killed = true;
            per.live_count -= 1;
            per.killed.push_back((pgid, seq));
            per.killed_count += 1;
            per.killed_total += 1;
            killed_now.push(pgid);
            out.push(Action::SignalGroup {
                pgid,
                signal: Sig::Kill,
            });
        }
        // Killed groups whose last members never come back to us (they moved away) are
        // forgotten beyond the bound, so memory stays bounded too.
        while per.killed.len() > bound {
            let Some((pgid, seq)) = per.killed.pop_front() else {
                break;
            };
            if self.groups.get(&pgid).is_some_and(|g| g.seq == seq) {
                self.groups.remove(&pgid);
                per.killed_count = per.killed_count.saturating_sub(1);
            }
        }
        if per.live.len() > 2 * bound {
            let groups = &self.groups;
            per.live
                .retain(|(pgid, seq)| groups.get(pgid).is_some_and(|g| g.seq == *seq));
        }
        if let Some(n) = per.log.pass(now) {
            let killed = if killed_now.is_empty() {
                String::new()
            } else {
                format!("; over the bound of {bound}: SIGKILL to groups {killed_now:?}")
            };
            let message = format!(
                "{service}: worker {pid} exited and left processes behind (process group \
                 {pid}); {} such group(s) now, {} killed and {} of their processes reaped so \
                 far{killed}{}",
                per.live_count,
                per.killed_total,
                per.reaped,
                suppressed(n)
            );
            logs.warn(LogEvent::LeftBehind, message)
                .with(Field::Service, service)
                .with(Field::Pid, pid)
                .with(Field::Pgid, pid)
                .with(Field::Count, per.live_count);
        }
    }

    /// A process we did not start was reaped (it came back to us as its subreaper).
    pub(super) fn reaped_unknown(
        &mut self,
        pid: Pid,
        status: ExitStatus,
        pgid: Option<Pid>,
        now: Instant,
        logs: &mut Logs,
    ) {
        let known = pgid.and_then(|g| self.groups.get(&g).map(|group| (g, group)));
        match known {
            Some((pgid, group)) => {
                if let Some(per) = self.services.get_mut(&group.service) {
                    per.reaped += 1;
                }
                if !logs.debug_on() {
                    return;
                }
                logs.debug(
                    LogEvent::LeftoverReaped,
                    format!(
                        "{}: reaped process {pid} ({status}) left behind by worker {pgid}",
                        group.service
                    ),
                )
                .with(Field::Service, &group.service)
                .with(Field::Pid, pid)
                .with(Field::Status, status)
                .with(Field::Pgid, pgid);
            }
            None => {
                if let Some(n) = self.unknown_log.pass(now) {
                    logs.warn(
                        LogEvent::EscapedReaped,
                        format!(
                            "reaped process {pid} ({status}), which escaped from a child; \
                             where it came from is unknown{}",
                            suppressed(n)
                        ),
                    )
                    .with(Field::Pid, pid)
                    .with(Field::Status, status);
                }
            }
        }
    }

    /// Group `pgid` is over (a reap showed it empty, a new child got its number, or none of
    /// our children is in it any more): forget it.
    pub(super) fn group_gone(&mut self, pgid: Pid) {
        self.forget(pgid);
    }

    fn forget(&mut self, pgid: Pid) {
        let Some(group) = self.groups.remove(&pgid) else {
            return;
        };
        let Some(per) = self.services.get_mut(&group.service) else {
            return;
        };
        if group.killed {
            per.killed_count = per.killed_count.saturating_sub(1);
        } else {
            per.live_count = per.live_count.saturating_sub(1);
        }
        if per.live_count == 0 && per.killed_count == 0 {
            self.services.remove(&group.service);
        }
    }

    /// Stopping: `signal` to every group still known.
    pub(super) fn signal_all(&self, signal: Sig, out: &mut Vec<Action>) {
        let mut pgids: Vec<Pid> = self.groups.keys().copied().collect();
        pgids.sort_unstable();
        for pgid in pgids {
            out.push(Action::SignalGroup { pgid, signal });
        }
    }

    /// Groups counted against `service`'s bound.
    #[cfg(test)]
    pub(super) fn live_groups(&self, service: &str) -> usize {
        self.services.get(service).map_or(0, |p| p.live_count)
    }
}
