//! EVENTS: entries run on a period, at a time of day or on a cron schedule; a reload keeps
//! the schedule of unchanged entries.

use std::time::Duration;

use super::*;
use crate::config::{Config, EventEntry, Schedule};

#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) spec: EventEntry,
    /// Next firing, monotonic (periods) ...
    pub(super) next_mono: Option<Instant>,
    /// ... or wall clock (at=, cron=).
    pub(super) next_unix: Option<i64>,
    pub(super) running: Vec<Pid>,
}

impl Supervisor {
    pub(super) fn new_event(&self, spec: EventEntry, now: Now) -> Event {
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

    pub(super) fn schedule_wall(&self, event: &mut Event, now: Now) {
        let next = match &event.spec.schedule {
            Schedule::Daily(at) => schedule::next_daily(*at, now.unix, self.local),
            Schedule::Cron(spec) => schedule::next_cron(spec, now.unix, self.local),
            Schedule::Period { .. } => None,
        };
        event.next_unix = next;
        event.next_mono =
            next.map(|t| now.mono + Duration::from_secs(t.saturating_sub(now.unix).max(0) as u64));
    }

    pub(super) fn fire_event_if_due(&mut self, index: usize, now: Now, out: &mut Vec<Action>) {
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
        self.logs
            .info(
                LogEvent::EventRun,
                format!("running event {}: {}", event.spec.name, event.spec.cmd),
            )
            .with(Field::Entry, &event.spec.name);
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

    /// Events due.
    pub(super) fn tick_events(&mut self, now: Now, out: &mut Vec<Action>) {
        for index in 0..self.events.len() {
            self.fire_event_if_due(index, now, out);
        }
    }

    /// EVENTS on reload: unchanged entries keep their schedule; new or changed ones start
    /// afresh; runs of removed ones are still reaped, as others.
    pub(super) fn reload_events(&mut self, new: &Config, now: Now) {
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
    }

    /// The next event due, by the monotonic clock (wall-clock ones are kept in step).
    pub(super) fn events_deadline(&self) -> Option<Instant> {
        self.events.iter().filter_map(|e| e.next_mono).min()
    }
}
