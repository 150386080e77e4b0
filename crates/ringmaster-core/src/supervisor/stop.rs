//! Stopping: SIGQUIT drains (listeners closed, workers finish their clients), SIGTERM stops
//! everything, SIGKILL follows whatever outstays the stop timeout; the master exits once no
//! child is left.

use super::*;

impl Supervisor {
    pub(super) fn on_stop(&mut self, graceful: bool, now: Now, out: &mut Vec<Action>) {
        match (&self.phase, graceful) {
            (Phase::Stopping { killed: false, .. }, false) => {
                self.logs.warn(
                    LogEvent::KillStragglers,
                    "second stop signal: killing every child now",
                );
                self.kill_everything(out);
            }
            (Phase::Stopping { .. }, _) | (Phase::Draining { .. }, true) => {}
            (Phase::Running, true) => {
                self.logs.info(
                    LogEvent::DrainRequested,
                    "SIGQUIT: closing listeners, letting workers finish their clients",
                );
                self.phase = Phase::Draining {
                    until: now.mono + self.settings.drain_timeout,
                };
                self.release_all(true, out);
                let pids: Vec<Pid> = self.workers.keys().copied().collect();
                for pid in pids {
                    self.send_hup(pid, now, out);
                }
                self.term_non_workers(now, out);
                self.exit_if_empty(out);
            }
            _ => {
                self.logs
                    .info(LogEvent::StopRequested, "stopping: SIGTERM to every child");
                self.begin_stop(now, 0, out);
            }
        }
    }

    pub(super) fn begin_stop(&mut self, now: Now, code: i32, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Exited) {
            return;
        }
        self.exit_code = code;
        self.phase = Phase::Stopping {
            since: now.mono,
            killed: false,
        };
        let pids: Vec<Pid> = self.workers.keys().copied().collect();
        for pid in pids {
            if self.update_worker(pid, |w| w.recycle.term(now.mono)) == Some(true) {
                out.push(Action::Signal {
                    pid,
                    signal: Sig::Term,
                });
            }
        }
        // Told to exit, the workers close the sockets themselves: shutting them down under
        // their feet would only make idle Cyrus workers log a failed accept().
        self.release_all(false, out);
        self.term_non_workers(now, out);
        self.leftovers.signal_all(Sig::Term, out);
        out.push(Action::SignalEscaped {
            signal: Sig::Term,
            known: self.children(),
        });
        self.exit_if_empty(out);
    }

    pub(super) fn term_non_workers(&mut self, now: Now, out: &mut Vec<Action>) {
        for d in &mut self.daemons {
            match &mut d.run {
                DaemonRun::Down { restart_at } => *restart_at = None,
                DaemonRun::Up { pid, term_at, .. } => {
                    if term_at.is_none() {
                        *term_at = Some(now.mono);
                        out.push(Action::Signal {
                            pid: *pid,
                            signal: Sig::Term,
                        });
                    }
                }
            }
        }
        let mut pids: Vec<Pid> = self.events.iter().flat_map(|e| e.running.clone()).collect();
        pids.extend(self.others.keys().copied());
        for pid in pids {
            out.push(Action::Signal {
                pid,
                signal: Sig::Term,
            });
        }
    }

    pub(super) fn kill_everything(&mut self, out: &mut Vec<Action>) {
        if let Phase::Stopping { killed, .. } = &mut self.phase {
            *killed = true;
        }
        let mut pids = self.children();
        pids.sort_unstable();
        for pid in pids {
            self.logs
                .warn(
                    LogEvent::KillStragglers,
                    format!("pid {pid} did not stop in time: SIGKILL"),
                )
                .with(Field::Pid, pid);
            out.push(Action::Signal {
                pid,
                signal: Sig::Kill,
            });
        }
        let pids: Vec<Pid> = self.workers.keys().copied().collect();
        for pid in pids {
            self.update_worker(pid, |w| w.recycle.kill());
        }
        self.leftovers.signal_all(Sig::Kill, out);
    }

    pub(super) fn release_all(&mut self, refuse: bool, out: &mut Vec<Action>) {
        let keys: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(_, s)| !s.retiring)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(s) = self.services.get_mut(&key) {
                s.retiring = true;
            }
            self.release_service(key, refuse, out);
        }
    }

    pub(super) fn exit_if_empty(&mut self, out: &mut Vec<Action>) {
        if self.no_children() && self.phase != Phase::Exited {
            self.logs.info(
                LogEvent::AllExited,
                "all children have exited, closing down",
            );
            self.phase = Phase::Exited;
            self.leftovers.signal_all(Sig::Kill, out);
            out.push(Action::Exit(self.exit_code));
        }
    }

    /// The drain or the stop timeout ran out.
    pub(super) fn tick_stop(&mut self, now: Now, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Draining { until } if now.mono >= until => {
                self.logs.warn(
                    LogEvent::DrainOver,
                    "drain time is over: stopping the workers still serving",
                );
                self.phase = Phase::Running; // let begin_stop take over
                self.begin_stop(now, 0, out);
            }
            Phase::Stopping {
                since,
                killed: false,
            } if now.mono >= since + self.settings.stop_timeout => {
                self.kill_everything(out);
            }
            _ => {}
        }
    }

    /// When the drain runs out, or the stop's SIGKILL is due.
    pub(super) fn stop_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Draining { until } => Some(until),
            Phase::Stopping {
                since,
                killed: false,
            } => Some(since + self.settings.stop_timeout),
            _ => None,
        }
    }
}
