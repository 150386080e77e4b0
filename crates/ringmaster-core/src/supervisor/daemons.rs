//! DAEMON entries: started once start-up's commands are done, restarted with back-off when
//! they die, recycled (SIGTERM, then started anew) by a reload.

use std::time::Duration;

use tracing::{error, info, warn};

use super::*;
use crate::config::{Config, DaemonEntry};

/// A daemon that lived this long was healthy: restart it at once.
const DAEMON_HEALTHY: Duration = Duration::from_secs(10);
const DAEMON_MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(super) struct Daemon {
    pub(super) spec: DaemonEntry,
    pub(super) pid: Option<Pid>,
    pub(super) started_at: Option<Instant>,
    pub(super) restart_at: Option<Instant>,
    pub(super) quick_deaths: u32,
    pub(super) ready: bool,
    /// The config this daemon comes back with after a reload recycles it; None with
    /// `removed` set means it does not come back.
    pub(super) replacement: Option<DaemonEntry>,
    pub(super) removed: bool,
    pub(super) term_at: Option<Instant>,
}

impl Supervisor {
    pub(super) fn spawn_daemon(&mut self, index: usize, out: &mut Vec<Action>) {
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

    pub(super) fn on_daemon_exit(
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

    pub(super) fn on_daemon_ready(&mut self, name: &str, now: Now, out: &mut Vec<Action>) {
        if let Some(d) = self.daemons.iter_mut().find(|d| d.spec.name == name) {
            d.ready = true;
            info!("daemon {name} is ready");
        }
        self.finish_start_if_daemons_ready(now, out);
    }

    /// DAEMONs on reload: every one is recycled (SIGTERM, then started from the new config),
    /// save those the new config could not resolve.
    pub(super) fn reload_daemons(
        &mut self,
        new: &Config,
        untouched: &faults::Untouched,
        now: Now,
        out: &mut Vec<Action>,
    ) {
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
    }

    /// Daemons due for a (re)start.
    pub(super) fn tick_daemons(&mut self, now: Now, out: &mut Vec<Action>) {
        for index in 0..self.daemons.len() {
            let d = &self.daemons[index];
            if d.pid.is_none() && d.restart_at.is_some_and(|t| now.mono >= t) {
                self.spawn_daemon(index, out);
            }
        }
    }

    /// The next daemon restart (only while running, as `tick_daemons`), or SIGTERMed
    /// daemon's stop timeout; none once the master stops.
    pub(super) fn daemons_deadline(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Exited) {
            return None;
        }
        let mut next = None;
        for d in &self.daemons {
            if self.phase == Phase::Running {
                next = earliest(next, d.restart_at);
            }
            if let Some(term) = d.term_at {
                next = earliest(next, Some(term + self.settings.stop_timeout));
            }
        }
        next
    }
}

pub(super) fn daemon_backoff(quick_deaths: u32) -> Duration {
    Duration::from_secs(1u64 << quick_deaths.min(6)).min(DAEMON_MAX_BACKOFF)
}
