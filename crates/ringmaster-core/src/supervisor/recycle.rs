//! A worker's recycling lifecycle: which of SIGHUP, SIGTERM and SIGKILL the master sent it,
//! every transition between them, and the timers that send the next one.

use std::time::Instant;

use super::pools::MAX_LIVE_GENERATIONS;
use super::*;

/// A worker's way out, apart from what it says of itself (`WorkerState`): each signal is
/// sent at most once, and only forward (SIGHUP, then SIGTERM, then SIGKILL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recycle {
    /// Left alone.
    Serving,
    /// An old-generation worker kept serving until a ready replacement exists, or `until`.
    Held { until: Instant },
    /// Sent SIGHUP at `at`: leaving, so exiting clean or by SIGHUP is no failure.
    Hupped { at: Instant },
    /// Sent SIGTERM at `at`; `hupped` keeps a recycle's exit a recycle.
    Termed { at: Instant, hupped: bool },
    /// Sent SIGKILL (or the master killed everything): nothing more to send.
    Killed { hupped: bool },
}

impl Recycle {
    /// It was sent SIGHUP, whatever came after.
    pub(super) fn hupped(self) -> bool {
        matches!(
            self,
            Self::Hupped { .. } | Self::Termed { hupped: true, .. } | Self::Killed { hupped: true }
        )
    }

    /// It was sent SIGTERM or SIGKILL.
    pub(super) fn termed(self) -> bool {
        matches!(self, Self::Termed { .. } | Self::Killed { .. })
    }

    pub(super) fn held_until(self) -> Option<Instant> {
        match self {
            Self::Held { until } => Some(until),
            _ => None,
        }
    }

    /// Hold a worker left alone until `until`; a hold already running keeps its end, so a
    /// storm of reloads does not push it back.
    pub(super) fn hold(&mut self, until: Instant) {
        if *self == Self::Serving {
            *self = Self::Held { until };
        }
    }

    /// End a running hold at `now`.
    pub(super) fn end_hold(&mut self, now: Instant) {
        if let Self::Held { until } = self {
            *until = now;
        }
    }

    /// SIGHUP is due unless already sent, or SIGTERM was: true if it is to be sent.
    pub(super) fn hup(&mut self, now: Instant) -> bool {
        match self {
            Self::Serving | Self::Held { .. } => {
                *self = Self::Hupped { at: now };
                true
            }
            _ => false,
        }
    }

    /// SIGTERM is due unless already sent: true if it is to be sent. A hold ends.
    pub(super) fn term(&mut self, now: Instant) -> bool {
        let hupped = match self {
            Self::Serving | Self::Held { .. } => false,
            Self::Hupped { .. } => true,
            Self::Termed { .. } | Self::Killed { .. } => return false,
        };
        *self = Self::Termed { at: now, hupped };
        true
    }

    /// SIGKILL was sent.
    pub(super) fn kill(&mut self) {
        *self = Self::Killed {
            hupped: self.hupped(),
        };
    }
}

impl Supervisor {
    /// Held workers whose hold is over get SIGHUP; recycled workers that outstay the drain
    /// get SIGTERM, then SIGKILL.
    pub(super) fn tick_recycled_workers(&mut self, now: Now, out: &mut Vec<Action>) {
        for pid in self.worker_timers.take_due(now.mono) {
            let Some(w) = self.workers.get(&pid) else {
                continue;
            };
            // Taken off the timers: set again below, whatever happens.
            let due = self.worker_due(w);
            self.worker_timers.set(pid, due);
            let pool_gen = self
                .pools
                .get(&w.pool)
                .map_or(w.generation, |p| p.generation);
            let too_old = pool_gen.saturating_sub(w.generation) > MAX_LIVE_GENERATIONS;
            if w.recycle.held_until().is_some_and(|t| now.mono >= t) {
                self.send_hup(pid, now, out);
                continue;
            }
            let pool = w.pool;
            // Decided first, so that names are looked up only for a worker signalled now.
            let (signal, message) = match w.recycle {
                Recycle::Termed { at, .. } if now.mono >= at + self.settings.stop_timeout => (
                    Sig::Kill,
                    format!(
                        "{}: worker {pid} ignored SIGTERM: SIGKILL",
                        self.pool_name(pool)
                    ),
                ),
                Recycle::Hupped { at }
                    if too_old || now.mono >= at + self.settings.drain_timeout =>
                {
                    (
                        Sig::Term,
                        format!(
                            "{}: worker {pid} still running {:.0}s after it was recycled: SIGTERM",
                            self.pool_name(pool),
                            (now.mono - at).as_secs_f64()
                        ),
                    )
                }
                _ => continue,
            };
            let event = match signal {
                Sig::Kill => LogEvent::WorkerKilled,
                _ => LogEvent::WorkerOverstayed,
            };
            self.pool_log(Level::Warn, event, pool, message)
                .with(Field::Pid, pid);
            self.update_worker(pid, |w| {
                if signal == Sig::Kill {
                    w.recycle.kill();
                } else {
                    w.recycle.term(now.mono);
                }
            });
            out.push(Action::Signal { pid, signal });
        }
    }
}
