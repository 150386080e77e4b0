//! What the control socket's requests do in the loop: status and metrics are snapshots,
//! reload and stop feed the supervisor the same inputs as SIGHUP and SIGTERM/SIGQUIT, a
//! dry run plans a reload without applying it. Bytes and time limits are control/server.rs's.

use std::io;
use std::time::Instant;

use ringmaster_core::{Input, MasterPhase, ReloadReport, ReloadResult};
use tracing::info;

use super::{Runtime, KIND_SHIFT};
use crate::control::proto::{plan_doc, report_doc, status_doc, Answer, Request};
use crate::control::server::{Incoming, Server};
use crate::sys::control::ControlListener;

// After runtime.rs's kinds and observe.rs's (5 and 6).
pub(super) const KIND_CONTROL: u64 = 7;

impl Runtime {
    /// Serves the control socket from this loop.
    pub fn with_control(mut self, listener: ControlListener) -> io::Result<Runtime> {
        let server = Server::new(listener, KIND_CONTROL << KIND_SHIFT, &self.poller)?;
        info!("control socket at {}", server.path().display());
        self.control = Some(server);
        Ok(self)
    }

    pub(super) fn control_ready(&mut self, token: u64) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        for incoming in server.ready(token, &self.poller, Instant::now()) {
            self.control_request(incoming);
        }
    }

    pub(super) fn control_tick(&mut self) {
        if let Some(server) = self.control.as_mut() {
            server.tick(&self.poller, Instant::now());
        }
    }

    pub(super) fn control_deadline(&self) -> Option<Instant> {
        self.control.as_ref().and_then(Server::next_deadline)
    }

    fn control_answer(&mut self, conn: u64, answer: &Answer) {
        if let Some(server) = self.control.as_mut() {
            server.answer(conn, answer, &self.poller, Instant::now());
        }
    }

    fn control_request(
        &mut self,
        Incoming {
            conn,
            peer,
            request,
        }: Incoming,
    ) {
        let now = Self::now();
        match request {
            Request::Status => {
                let mut answer = Answer::ok();
                let mut doc = status_doc(&self.sup.status(), std::process::id(), now);
                doc.master = Some(self.master_info().clone());
                answer.status = Some(doc);
                self.control_answer(conn, &answer);
            }
            Request::Metrics => {
                let mut answer = Answer::ok();
                // The same text as `--metrics-listen` serves.
                answer.metrics = Some(self.metrics_text());
                self.control_answer(conn, &answer);
            }
            Request::Reload { dry_run: true, .. } => {
                let answer = match self.launcher.dry_run() {
                    Ok(config) => {
                        let mut a = Answer::ok();
                        a.plan = Some(plan_doc(&self.sup.plan(&config)));
                        a
                    }
                    Err(errors) => {
                        let mut a = Answer::error("the new configuration is invalid");
                        a.errors = errors;
                        a
                    }
                };
                self.control_answer(conn, &answer);
            }
            Request::Reload { wait, .. } => self.control_reload(conn, peer, wait),
            Request::Upgrade { binary } => {
                info!(
                    "control: upgrade requested by uid {} pid {}",
                    peer.uid, peer.pid
                );
                match self.prepare_upgrade(binary) {
                    Ok(prepared) => {
                        let mut answer = Answer::ok();
                        answer.pid = Some(std::process::id());
                        self.control_answer(conn, &answer);
                        self.exec_upgrade(prepared);
                    }
                    Err(why) => self.control_answer(conn, &Answer::error(&why)),
                }
            }
            Request::Stop { graceful } => {
                info!(
                    "control: {} requested by uid {} pid {}",
                    if graceful { "graceful stop" } else { "stop" },
                    peer.uid,
                    peer.pid
                );
                let mut answer = Answer::ok();
                answer.stopping = Some(true);
                answer.pid = Some(std::process::id());
                // Answered first: with no children left, the feed ends the loop at once.
                if let Some(server) = self.control.as_mut() {
                    server.await_exit(conn, &answer, &self.poller, Instant::now());
                }
                self.feed(Input::Stop { graceful });
            }
        }
    }

    /// `reload`: fed as SIGHUP; answered at once with the number of the reload that will
    /// answer it, then (unless `wait` is off) with that reload's report.
    fn control_reload(&mut self, conn: u64, peer: crate::sys::control::Peer, wait: bool) {
        if !matches!(
            self.sup.status().phase,
            MasterPhase::Starting | MasterPhase::Running
        ) {
            self.control_answer(conn, &Answer::error("the master is stopping"));
            return;
        }
        info!(
            "control: reload requested by uid {} pid {}",
            peer.uid, peer.pid
        );
        self.feed(Input::ReloadRequested);
        let id = self.sup.reload_answering_request();
        let mut answer = Answer::ok();
        answer.reload_requested = Some(id);
        if !wait {
            self.control_answer(conn, &answer);
            return;
        }
        if let Some(server) = self.control.as_mut() {
            server.await_reload(conn, &answer, id, &self.poller, Instant::now());
        }
        // A rejected configuration is reported within the feed, before anyone waited.
        if let Some(report) = self.last_report.clone().filter(|r| r.id == id) {
            self.control_reload_finished(report);
        }
    }

    /// A reload ended: every connection waiting for it gets its report.
    pub(super) fn control_reload_finished(&mut self, report: ReloadReport) {
        self.last_report = Some(report.clone());
        let Some(server) = self.control.as_mut() else {
            return;
        };
        let waiting = server.awaiting_reload(report.id);
        if waiting.is_empty() {
            return;
        }
        let mut answer = match &report.result {
            ReloadResult::Applied { bind_errors, .. } if bind_errors.is_empty() => Answer::ok(),
            ReloadResult::Applied { bind_errors, .. } => {
                let mut a =
                    Answer::error("the reload was applied, but some sockets could not be bound");
                a.errors = bind_errors.clone();
                a
            }
            ReloadResult::Rejected { errors } => {
                let mut a =
                    Answer::error("the new configuration was rejected; the old one runs on");
                a.errors = errors.clone();
                a
            }
        };
        answer.reload = Some(report_doc(&report, Self::now()));
        for conn in waiting {
            server.answer(conn, &answer, &self.poller, Instant::now());
        }
    }
}
