//! systemd's notify protocol (sd_notify): READY=1 once every service listens, RELOADING=1 and
//! READY=1 around a reload, STOPPING=1 on a stop, and a STATUS= line at those moments.
//!
//! Only when NOTIFY_SOCKET is set (systemd's `Type=notify` / `Type=notify-reload`); children
//! never see the variable (`launch.rs` leaves it out of their environment), so no worker can
//! speak for the master. Messages go out at a handful of moments, never per event.
//!
//! A rejected reload: released systemd has no message that fails a reload (`ERRNO=` marks the
//! whole service failed, and a reload-failure field is still only proposed upstream), so the
//! reload is ended with READY=1, as it must be (else systemd waits for ever), and STATUS= says
//! it was rejected with its first error. `ringmaster reload` (the control socket, as
//! `ExecReload=`) is the way to make `systemctl reload` itself fail: see docs/systemd.md.

use std::time::Instant;

use ringmaster_core::{ReloadReport, ReloadResult, Status};
use sd_notify::NotifyState;
use tracing::{debug, warn};

/// The longest STATUS= text sent: systemd shows one line; an error quoted from a config could
/// be long.
const STATUS_MAX: usize = 400;

/// Where the master stands with systemd.
#[derive(Debug, Default)]
pub struct Notifier {
    enabled: bool,
    /// READY=1 was sent once (start-up is over for systemd).
    ready: bool,
    stopping: bool,
}

impl Notifier {
    /// Talks to systemd when NOTIFY_SOCKET is set, else does nothing.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty()),
            ..Notifier::default()
        }
    }

    /// Every service listens ([`ringmaster_core::Action::Ready`] with `all_listening`).
    pub fn all_listening(&mut self, status: &Status) {
        if self.stopping {
            return;
        }
        let text = status_line(status);
        // Once ready, READY=1 only ends reloads: a service that comes up during one must not
        // end systemd's reload early.
        if self.ready {
            self.send(&[NotifyState::Status(&text)]);
            return;
        }
        self.ready = true;
        self.send(&[NotifyState::Ready, NotifyState::Status(&text)]);
    }

    /// Start-up is complete but some services are down (a bind being retried): READY=1
    /// waits for them, STATUS= says why.
    pub fn some_down(&mut self, status: &Status) {
        if !self.ready {
            self.send(&[NotifyState::Status(&status_line(status))]);
        }
    }

    /// A reload starts ([`ringmaster_core::Action::LoadConfig`]).
    pub fn reloading(&mut self) {
        if !self.enabled || self.stopping {
            return;
        }
        let usec = match NotifyState::monotonic_usec_now() {
            Ok(u) => u,
            Err(err) => {
                warn!("systemd notify: cannot read CLOCK_MONOTONIC: {err}");
                return;
            }
        };
        self.send(&[
            NotifyState::Reloading,
            usec,
            NotifyState::Status("reloading the configuration"),
        ]);
    }

    /// A reload ended, applied or rejected: either way systemd's reload is over.
    pub fn reload_finished(&mut self, status: &Status) {
        if self.stopping {
            return;
        }
        let text = status_line(status);
        // Before the first READY=1 (a reload during start-up) there is no reload to end:
        // READY=1 would claim that every service listens.
        if self.ready {
            self.send(&[NotifyState::Ready, NotifyState::Status(&text)]);
        } else {
            self.send(&[NotifyState::Status(&text)]);
        }
    }

    /// The master stops (SIGTERM, SIGQUIT, or the control socket); sent once.
    pub fn stopping(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        debug!(
            "systemd notify: {}",
            states
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        // The master goes on without systemd: a lost message is logged, never fatal.
        if let Err(err) = sd_notify::notify(states) {
            warn!("systemd notify: cannot send to NOTIFY_SOCKET: {err}");
        }
    }
}

/// The STATUS= text: services listening and down, workers, and the last reload, on one line.
pub fn status_line(status: &Status) -> String {
    let mut services: Vec<&str> = status
        .pools
        .iter()
        .filter(|p| !p.retiring)
        .map(|p| p.service.as_str())
        .collect();
    services.sort_unstable();
    services.dedup();
    let workers: u32 = status.pools.iter().map(|p| p.workers.total()).sum();
    let draining: u32 = status.pools.iter().map(|p| p.workers.draining).sum();
    let mut line = format!(
        "{} listening, {} down; {}",
        ringmaster_core::counted(services.len() as u64, "service"),
        status.down.len(),
        ringmaster_core::counted(workers.into(), "worker")
    );
    if draining > 0 {
        line.push_str(&format!(" ({draining} draining)"));
    }
    if let Some(report) = &status.reloads.last {
        line.push_str("; ");
        line.push_str(&reload_text(report, Instant::now()));
    }
    truncate(line)
}

fn reload_text(report: &ReloadReport, now: Instant) -> String {
    let ago = now.saturating_duration_since(report.finished).as_secs();
    let when = format!("reload {} {ago} s ago", report.id);
    match &report.result {
        ReloadResult::Applied {
            bind_errors,
            settled,
        } => {
            let mut text = format!("{when}: {}", report.result.kind());
            if let Some(first) = bind_errors.first() {
                text.push_str(&format!(", {} bind errors: {first}", bind_errors.len()));
            } else if !settled {
                text.push_str(", not settled in time");
            }
            text
        }
        ReloadResult::Rejected { errors } => format!(
            "{when}: rejected, {} errors: {}",
            errors.len(),
            errors.first().map(|e| first_line(e)).unwrap_or("")
        ),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim_end()
}

/// At most [`STATUS_MAX`] bytes, cut at a character boundary, on one line.
fn truncate(line: String) -> String {
    let line = line.replace(['\n', '\r'], " ");
    if line.len() <= STATUS_MAX {
        return line;
    }
    let mut end = STATUS_MAX - 3;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmaster_core::{MasterPhase, ReloadCounters};
    use std::time::Duration;

    fn empty() -> Status {
        Status {
            phase: MasterPhase::Running,
            pools: vec![],
            down: vec![],
            daemons: vec![],
            events: vec![],
            reloads: ReloadCounters::default(),
            reload_in_progress: None,
            all_listening: true,
        }
    }

    #[test]
    fn a_rejected_reload_shows_its_first_error_on_one_line() {
        let now = Instant::now();
        let mut status = empty();
        status.reloads.last = Some(ReloadReport {
            id: 3,
            started: now,
            finished: now,
            result: ReloadResult::Rejected {
                errors: vec!["cyrus.conf:2:5: unknown key `cmdd`\n  | hint".into()],
            },
            draining: 0,
        });
        let line = status_line(&status);
        assert!(
            line.starts_with("0 services listening, 0 down; 0 workers; reload 3 "),
            "{line}"
        );
        assert!(
            line.ends_with("rejected, 1 errors: cyrus.conf:2:5: unknown key `cmdd`"),
            "{line}"
        );
    }

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        let long = "é".repeat(STATUS_MAX);
        let cut = truncate(long);
        assert!(cut.len() <= STATUS_MAX && cut.ends_with("..."));
        let now = Instant::now();
        let applied = ReloadReport {
            id: 1,
            started: now,
            finished: now,
            result: ReloadResult::Applied {
                bind_errors: vec![],
                settled: false,
            },
            draining: 2,
        };
        let text = reload_text(&applied, now + Duration::from_secs(5));
        assert_eq!(text, "reload 1 5 s ago: applied, not settled in time");
    }
}
