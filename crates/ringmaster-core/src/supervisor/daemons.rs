//! DAEMON entries: started once start-up's commands are done, restarted with back-off when
//! they die, recycled (SIGTERM, then started anew) by a reload.

use std::time::Duration;

use super::*;
use crate::config::{Config, DaemonEntry};

/// A daemon that lived this long was healthy: restart it at once.
const DAEMON_HEALTHY: Duration = Duration::from_secs(10);
const DAEMON_MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(super) struct Daemon {
    pub(super) spec: DaemonEntry,
    pub(super) run: DaemonRun,
    pub(super) quick_deaths: u32,
    pub(super) ready: bool,
    /// What a reload decided it comes back as once it ends.
    pub(super) next: DaemonNext,
    /// How many times it was started (for status).
    pub(super) starts: u64,
}

/// A daemon's lifecycle: down (perhaps due for a start), or running (perhaps sent SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DaemonRun {
    /// Not running; (re)started at `restart_at` while the master runs. A start asked of the
    /// runtime and not answered yet is `Down { restart_at: None }`.
    Down { restart_at: Option<Instant> },
    /// `term_at`: sent SIGTERM then (by a reload or the stop); `killed`: sent SIGKILL for
    /// outstaying it by the stop timeout.
    Up {
        pid: Pid,
        started_at: Instant,
        term_at: Option<Instant>,
        killed: bool,
    },
}

/// What a reload decided for a daemon, carried out when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DaemonNext {
    /// Restarted as it is, with back-off.
    Same,
    /// Started at once from the new config.
    Replace(DaemonEntry),
    /// Gone from the config: forgotten. A later reload that brings the name back before it
    /// ends makes it `Replace` again.
    Remove,
}

/// What a `wait=y` daemon has said on its ready pipe so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Not enough bytes yet to tell.
    Waiting,
    /// It said "ok\r\n".
    Ready,
    /// It said something else, or closed the pipe first; the reason is for the log.
    NotReady(String),
}

/// Judges the bytes a `wait=y` daemon wrote on fd 3 (`eof`: it closed the pipe). The runtime
/// reads, this decides; anything but a verdict of [`Readiness::Waiting`] ends the watch.
pub fn readiness(got: &[u8], eof: bool) -> Readiness {
    let ready = ringmaster_proto::DAEMON_READY;
    if got.starts_with(ready) {
        return Readiness::Ready;
    }
    if !eof && got.len() < ready.len() {
        return Readiness::Waiting;
    }
    // Quote only the start: a daemon may write any amount of anything.
    let shown = got.get(..32).unwrap_or(got);
    Readiness::NotReady(format!(
        "expected \"ok\\r\\n\" on fd 3, got {:?}{}{}",
        String::from_utf8_lossy(shown),
        if shown.len() < got.len() { "..." } else { "" },
        if eof { " and end of file" } else { "" }
    ))
}

impl Daemon {
    pub(super) fn new(spec: DaemonEntry, restart_at: Option<Instant>) -> Self {
        Self {
            spec,
            run: DaemonRun::Down { restart_at },
            quick_deaths: 0,
            ready: false,
            next: DaemonNext::Same,
            starts: 0,
        }
    }

    pub(super) fn status(&self) -> DaemonStatus {
        let (pid, up_since, restart_at) = match self.run {
            DaemonRun::Up {
                pid, started_at, ..
            } => (Some(pid), Some(started_at), None),
            DaemonRun::Down { restart_at } => (None, None, restart_at),
        };
        DaemonStatus {
            name: self.spec.name.clone(),
            pid,
            up_since,
            restarts: self.starts.saturating_sub(1),
            restart_at,
        }
    }

    pub(super) fn pid(&self) -> Option<Pid> {
        match self.run {
            DaemonRun::Up { pid, .. } => Some(pid),
            DaemonRun::Down { .. } => None,
        }
    }

    /// Set (or with None, cancel) the next start of a daemon that is down.
    pub(super) fn restart_at(&mut self, at: Option<Instant>) {
        if let DaemonRun::Down { restart_at } = &mut self.run {
            *restart_at = at;
        }
    }
}

impl Supervisor {
    pub(super) fn spawn_daemon(&mut self, index: usize, out: &mut Vec<Action>) {
        let Some(d) = self.daemons.get_mut(index) else {
            return;
        };
        d.restart_at(None);
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
        let lived = match d.run {
            DaemonRun::Up { started_at, .. } => now.mono - started_at,
            DaemonRun::Down { .. } => Duration::ZERO,
        };
        d.run = DaemonRun::Down { restart_at: None };
        if stopping {
            return;
        }
        match std::mem::replace(&mut d.next, DaemonNext::Same) {
            DaemonNext::Remove => {
                self.logs
                    .info(
                        LogEvent::DaemonRemoved,
                        format!("daemon {name} stopped (removed from the configuration)"),
                    )
                    .with(Field::Entry, &name)
                    .with(Field::Status, status);
                self.daemons.remove(index);
                return;
            }
            DaemonNext::Replace(spec) => {
                d.spec = spec;
                d.quick_deaths = 0;
                self.spawn_daemon(index, out);
                return;
            }
            DaemonNext::Same => {}
        }
        if waiting && d.spec.wait && !d.ready {
            self.logs
                .error(
                    LogEvent::DaemonNotReady,
                    format!("daemon {name} exited ({status}) before saying it was ready"),
                )
                .with(Field::Entry, &name)
                .with(Field::Status, status);
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
        self.logs
            .warn(
                LogEvent::DaemonEnded,
                format!(
                    "daemon {name} ended with {status}; restarting in {:.1}s",
                    delay.as_secs_f64()
                ),
            )
            .with(Field::Entry, &name)
            .with(Field::Status, status)
            .with(Field::Seconds, format!("{:.1}", delay.as_secs_f64()));
        d.restart_at(Some(now.mono + delay));
    }

    pub(super) fn on_daemon_ready(&mut self, name: &str, now: Now, out: &mut Vec<Action>) {
        if let Some(d) = self.daemons.iter_mut().find(|d| d.spec.name == name) {
            d.ready = true;
            self.logs
                .info(LogEvent::DaemonReady, format!("daemon {name} is ready"))
                .with(Field::Entry, name);
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
                Some(spec) => d.next = DaemonNext::Replace(spec.clone()),
                None => d.next = DaemonNext::Remove,
            }
        }
        for index in 0..self.daemons.len() {
            let d = &mut self.daemons[index];
            if untouched.daemons.contains(&d.spec.name) {
                continue;
            }
            match &mut d.run {
                // Told once: a storm of reloads must not push its SIGKILL back.
                DaemonRun::Up { pid, term_at, .. } => {
                    if term_at.is_none() {
                        *term_at = Some(now.mono);
                        out.push(Action::Signal {
                            pid: *pid,
                            signal: Sig::Term,
                        });
                    }
                }
                DaemonRun::Down { restart_at } => {
                    if let DaemonNext::Replace(spec) =
                        std::mem::replace(&mut d.next, DaemonNext::Same)
                    {
                        d.spec = spec;
                        *restart_at = Some(now.mono);
                    }
                }
            }
        }
        self.daemons
            .retain(|d| !(d.next == DaemonNext::Remove && d.pid().is_none()));
        for spec in &new.daemons {
            if !self.daemons.iter().any(|d| d.spec.name == spec.name) {
                self.daemons.push(Daemon::new(spec.clone(), Some(now.mono)));
            }
        }
    }

    /// Daemons due for a (re)start.
    pub(super) fn tick_daemons(&mut self, now: Now, out: &mut Vec<Action>) {
        for index in 0..self.daemons.len() {
            let d = &self.daemons[index];
            if matches!(d.run, DaemonRun::Down { restart_at: Some(t) } if now.mono >= t) {
                self.spawn_daemon(index, out);
            }
        }
    }

    /// Daemons that outstayed a SIGTERM (a reload's or a drain's) by the stop timeout get
    /// SIGKILL, once; the stop's own SIGKILL is `kill_everything`'s.
    pub(super) fn tick_stuck_daemons(&mut self, now: Now, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Exited) {
            return;
        }
        for d in &mut self.daemons {
            if let DaemonRun::Up {
                pid,
                term_at: Some(term),
                killed: killed @ false,
                ..
            } = &mut d.run
            {
                if now.mono >= *term + self.settings.stop_timeout {
                    self.logs
                        .warn(
                            LogEvent::DaemonKilled,
                            format!(
                                "daemon {} (pid {pid}) ignored SIGTERM: SIGKILL",
                                d.spec.name
                            ),
                        )
                        .with(Field::Entry, &d.spec.name)
                        .with(Field::Pid, *pid);
                    *killed = true;
                    out.push(Action::Signal {
                        pid: *pid,
                        signal: Sig::Kill,
                    });
                }
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
            match d.run {
                DaemonRun::Down { restart_at } if self.phase == Phase::Running => {
                    next = earliest(next, restart_at);
                }
                DaemonRun::Up {
                    term_at: Some(term),
                    killed: false,
                    ..
                } => next = earliest(next, Some(term + self.settings.stop_timeout)),
                _ => {}
            }
        }
        next
    }
}

pub(super) fn daemon_backoff(quick_deaths: u32) -> Duration {
    Duration::from_secs(1u64 << quick_deaths.min(6)).min(DAEMON_MAX_BACKOFF)
}
