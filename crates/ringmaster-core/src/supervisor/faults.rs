//! Faults that take one service down without stopping the master: failed binds (retried with
//! back-off; fatal at start-up under `master_bind_errors_fatal`, as in Cyrus), start-up
//! readiness with services down, and entries a reload could not resolve, which go on running
//! as they were.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use super::log::Logs;
use super::{Action, Field, LogEvent, Now, Phase, ServiceKey, Supervisor};
use crate::config::Config;

/// First retry of a failed bind; the pause doubles with each failure, up to
/// [`BIND_RETRY_MAX`]: a port freed later comes up within a minute.
pub(super) const BIND_RETRY_FIRST: Duration = Duration::from_secs(1);
pub(super) const BIND_RETRY_MAX: Duration = Duration::from_secs(60);
/// Exit status when a bind fails at start-up and `master_bind_errors_fatal` is set: Cyrus's
/// master calls `fatal(..., EX_UNAVAILABLE)` there.
pub const EXIT_BIND_FAILED: i32 = 69;

/// A service whose sockets could not be bound.
#[derive(Debug, Clone)]
pub(super) struct BindDown {
    pub(super) error: String,
    pub(super) attempts: u32,
    /// The retry that counts: an entry of [`Faults::retries`] at another time is stale (the
    /// service was bound again in between).
    pub(super) retry_at: Option<Instant>,
}

/// Start-up readiness and the bind retry schedule.
#[derive(Debug, Clone, Default)]
pub(super) struct Faults {
    /// Start-up binds whose outcome has not come back yet.
    awaiting: usize,
    /// Start-up is complete: "ready for work" was logged and [`Action::Ready`] sent once.
    announced: bool,
    /// [`Action::Ready`] with every service listening was sent.
    all_listening_sent: bool,
    /// Down services by when to bind them again: a heap, so one retry costs one entry.
    retries: BTreeSet<(Instant, ServiceKey)>,
}

/// The pause before the next bind attempt after `attempts` failures.
pub(super) fn bind_backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    BIND_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(BIND_RETRY_MAX)
}

/// What a reload must leave alone: running entries the new config could not resolve.
#[derive(Debug, Clone, Default)]
pub(super) struct Untouched {
    pub(super) services: HashSet<ServiceKey>,
    pub(super) daemons: HashSet<String>,
}

impl Faults {
    /// An adopted supervisor (upgrade.rs) was started and announced by the image before.
    pub(super) fn adopted(&mut self) {
        self.announced = true;
        self.all_listening_sent = true;
    }
}

impl Supervisor {
    /// Start-up binds `count` services; readiness waits for all their outcomes.
    pub(super) fn expect_startup_binds(&mut self, count: usize, out: &mut Vec<Action>) {
        self.faults.awaiting = count;
        self.check_started(out);
    }

    /// A service's sockets are bound (`first`: its first bind outcome).
    pub(super) fn bind_succeeded(&mut self, key: ServiceKey, first: bool, out: &mut Vec<Action>) {
        let announced = self.faults.announced;
        let Some(service) = self.services.get_mut(&key) else {
            return;
        };
        let (name, listen) = (service.spec.name.clone(), service.spec.listen.clone());
        let was_down = service.down.take();
        if let Some(down) = &was_down {
            self.logs
                .info(
                    LogEvent::ServiceUp,
                    format!(
                        "{name}: listening on {listen} after {} failed attempts; the service is up",
                        down.attempts
                    ),
                )
                .with(Field::Service, &name)
                .with(Field::Listen, &listen)
                .with(Field::Count, down.attempts);
        } else if first && announced && !service.retiring {
            self.logs
                .info(
                    LogEvent::ReloadNewService,
                    format!("reload: new service {name} on {listen}"),
                )
                .with(Field::Service, &name)
                .with(Field::Listen, &listen);
        }
        if first && !announced {
            self.faults.awaiting = self.faults.awaiting.saturating_sub(1);
        }
        if first || was_down.is_some() {
            self.check_started(out);
        }
    }

    /// Nothing could be bound for a service: it is down, and bound again after a pause.
    pub(super) fn on_bind_failed(
        &mut self,
        key: ServiceKey,
        err: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let announced = self.faults.announced;
        let fatal = !announced && self.settings.bind_errors_fatal;
        let Some(service) = self.services.get_mut(&key) else {
            return;
        };
        let first = !service.bound;
        service.bound = true;
        let attempts = service.down.as_ref().map_or(0, |d| d.attempts) + 1;
        let delay = bind_backoff(attempts);
        let retry_at = (!fatal && !service.retiring).then_some(now.mono + delay);
        service.down = Some(BindDown {
            error: err.to_string(),
            attempts,
            retry_at,
        });
        let (name, listen) = (&service.spec.name, &service.spec.listen);
        if fatal {
            self.logs
                .error(
                    LogEvent::BindFailedFatal,
                    format!(
                        "unable to create {name} listener socket on {listen}: {err}; \
                         master_bind_errors_fatal is set: exiting"
                    ),
                )
                .with(Field::Service, name)
                .with(Field::Listen, listen)
                .with(Field::Error, err);
            self.begin_stop(now, EXIT_BIND_FAILED, out);
            return;
        }
        let Some(retry_at) = retry_at else {
            return;
        };
        if attempts == 1 {
            let what = if first && announced {
                format!("reload: new service {name} on {listen} cannot listen")
            } else {
                format!("unable to create {name} listener socket on {listen}")
            };
            self.logs
                .error(
                    LogEvent::BindFailed,
                    format!(
                        "{what}: {err}; the service is down, trying again in {}s",
                        delay.as_secs()
                    ),
                )
                .with(Field::Service, name)
                .with(Field::Listen, listen)
                .with(Field::Error, err)
                .with(Field::Seconds, delay.as_secs());
        } else {
            self.logs
                .warn(
                    LogEvent::BindStillFailing,
                    format!(
                        "{name}: still cannot listen on {listen} ({attempts} attempts): {err}; \
                         trying again in {}s",
                        delay.as_secs()
                    ),
                )
                .with(Field::Service, name)
                .with(Field::Listen, listen)
                .with(Field::Error, err)
                .with(Field::Count, attempts)
                .with(Field::Seconds, delay.as_secs());
        }
        self.faults.retries.insert((retry_at, key));
        if first && !announced {
            self.faults.awaiting = self.faults.awaiting.saturating_sub(1);
            self.check_started(out);
        }
    }

    /// When the next bind retry is due.
    pub(super) fn next_bind_retry(&self) -> Option<Instant> {
        self.faults.retries.first().map(|(at, _)| *at)
    }

    /// Binds again every down service whose pause is over.
    pub(super) fn retry_binds(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        while let Some(&(at, key)) = self.faults.retries.first() {
            if at > now {
                break;
            }
            self.faults.retries.pop_first();
            let Some(service) = self.services.get(&key) else {
                continue;
            };
            let current = service.down.as_ref().and_then(|d| d.retry_at) == Some(at);
            if service.retiring || !current {
                continue;
            }
            out.push(Action::Bind {
                service: key,
                name: service.spec.name.clone(),
                listen: service.spec.listen.clone(),
                proto: service.spec.proto,
                take_over: Vec::new(),
            });
        }
    }

    /// Start-up is complete once every service's first bind has an outcome: say so, naming
    /// what is down. The ready file waits until every service that should listen does.
    pub(super) fn check_started(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Running || self.faults.all_listening_sent {
            return;
        }
        if !self.faults.announced {
            if self.faults.awaiting > 0 {
                return;
            }
            self.faults.announced = true;
            let down = self.down_report();
            let all_listening = !self.any_service_down();
            if down.is_empty() {
                self.logs.info(LogEvent::Ready, "ready for work");
            } else {
                let message = format!(
                    "ready for work, with these down: {}{}",
                    down.join("; "),
                    if all_listening {
                        ""
                    } else {
                        " (the ready file waits for every service to listen)"
                    }
                );
                self.logs
                    .warn(LogEvent::Ready, message)
                    .with(Field::Count, down.len());
            }
            self.faults.all_listening_sent = all_listening;
            out.push(Action::Ready { all_listening });
            return;
        }
        if !self.any_service_down() {
            self.logs
                .info(LogEvent::AllListening, "every service listens now");
            self.faults.all_listening_sent = true;
            out.push(Action::Ready {
                all_listening: true,
            });
        }
    }

    /// A scan, but only on the fault path (a service is or was down).
    fn any_service_down(&self) -> bool {
        self.services
            .values()
            .any(|s| !s.retiring && s.down.is_some())
    }

    /// Every entry that is down and why, for the log.
    fn down_report(&self) -> Vec<String> {
        let mut down: Vec<String> = self
            .services
            .values()
            .filter(|s| !s.retiring)
            .filter_map(|s| {
                let d = s.down.as_ref()?;
                Some(format!(
                    "service {} (cannot listen on {}: {})",
                    s.spec.name, s.spec.listen, d.error
                ))
            })
            .collect();
        let unresolved = &self.config.unresolved;
        for (kind, names) in [
            ("service", &unresolved.services),
            ("event", &unresolved.events),
            ("daemon", &unresolved.daemons),
        ] {
            for name in names {
                down.push(format!("{kind} {name} (program or user not found)"));
            }
        }
        down
    }

    /// Entries that run now but that `new` could not resolve go on as they are: their
    /// current spec is put back into `new`, and the caller leaves them alone (no new
    /// generation, no SIGHUP, no restart), so one broken edit never takes a service down.
    pub(super) fn keep_unresolved(&mut self, new: &mut Config) -> Untouched {
        let mut untouched = Untouched::default();
        if new.unresolved == Default::default() {
            return untouched;
        }
        let wanted = |names: &[String], name: &str| names.iter().any(|n| n == name);
        for (key, s) in &self.services {
            if s.retiring
                || !wanted(&new.unresolved.services, &s.spec.name)
                || new.services.iter().any(|n| n.name == s.spec.name)
            {
                continue;
            }
            kept_unresolved(&mut self.logs, "service", &s.spec.name, Field::Service);
            new.services.push(s.spec.clone());
            untouched.services.insert(*key);
        }
        for e in &self.events {
            if wanted(&new.unresolved.events, &e.spec.name)
                && !new.events.iter().any(|n| n.name == e.spec.name)
            {
                kept_unresolved(&mut self.logs, "event", &e.spec.name, Field::Entry);
                new.events.push(e.spec.clone());
            }
        }
        for d in &self.daemons {
            if d.next != super::daemons::DaemonNext::Remove
                && wanted(&new.unresolved.daemons, &d.spec.name)
                && !new.daemons.iter().any(|n| n.name == d.spec.name)
            {
                kept_unresolved(&mut self.logs, "daemon", &d.spec.name, Field::Entry);
                new.daemons.push(d.spec.clone());
                untouched.daemons.insert(d.spec.name.clone());
            }
        }
        untouched
    }
}

/// The record of an entry `keep_unresolved` leaves running as it was.
fn kept_unresolved(logs: &mut Logs, kind: &str, name: &str, field: Field) {
    logs.error(
        LogEvent::ReloadUnresolved,
        format!(
            "reload: {kind} {name} cannot be resolved; it goes on with its previous configuration"
        ),
    )
    .with(field, name);
}
