//! What the loop tells the outside about itself: systemd notifications, the `--metrics-listen`
//! endpoint, Cyrus's own report file, and SIGUSR1's log reopening. Each is called at a few
//! moments from `runtime.rs` (an action carried out, a token, a deadline).

use std::net::SocketAddr;
use std::time::SystemTime;

use super::*;
use crate::cyrus_prom::CyrusReport;
use crate::metrics::{self, Families, MasterInfo};
use crate::metrics_http::MetricsServer;
use crate::notify::Notifier;

pub(super) const KIND_METRICS: u64 = 5;
pub(super) const KIND_HTTP: u64 = 6;

/// The loop's observers: systemd, the metrics endpoint, Cyrus's report file.
pub(super) struct Observers {
    pub(super) notifier: Notifier,
    pub(super) http: Option<MetricsServer>,
    pub(super) cyrus: Option<CyrusReport>,
}

impl Observers {
    pub(super) fn new() -> Observers {
        Observers {
            notifier: Notifier::from_env(),
            http: None,
            cyrus: None,
        }
    }

    /// The earlier of `other` and the moment an observer needs the loop (a connection's
    /// timeout, a report).
    pub(super) fn earliest(&self, other: Option<Instant>) -> Option<Instant> {
        let http = self.http.as_ref().and_then(|h| h.next_deadline());
        let cyrus = self.cyrus.as_ref().map(|c| c.next_at());
        [other, http, cyrus].into_iter().flatten().min()
    }
}

/// What each pool's socket is bound to, by service name and socket number.
fn families(sup: &Supervisor, pools: &HashMap<PoolId, PoolIo>) -> Families {
    let mut families = Families::default();
    for (&id, io) in pools {
        let family = match io.listener.identity.as_ref().map(|i| &i.address) {
            Some(sys::net::SocketAddress::Inet(addr)) if addr.is_ipv4() => "ipv4",
            Some(sys::net::SocketAddress::Inet(_)) => "ipv6",
            Some(sys::net::SocketAddress::Unix(_)) => "unix",
            None => continue,
        };
        let name = sup.pool_name(id);
        let service = name.rsplit_once('/').map_or(name.as_str(), |(s, _)| s);
        families.insert(service, id.family, family);
    }
    families
}

/// The master's own numbers, now.
fn master_info(families: Families) -> MasterInfo {
    let unix_now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    MasterInfo {
        families,
        resident_bytes: sys::procself::resident_bytes(),
        open_fds: sys::procself::open_fds(),
        now: Instant::now(),
        unix_now,
    }
}

impl Runtime {
    /// Serves GET /metrics on `addr` from this loop.
    pub fn serve_metrics(&mut self, addr: SocketAddr) -> io::Result<()> {
        let server = MetricsServer::bind(
            addr,
            &self.poller,
            KIND_METRICS << KIND_SHIFT,
            KIND_HTTP << KIND_SHIFT,
        )?;
        self.observe.http = Some(server);
        Ok(())
    }

    /// Writes Cyrus's `cyrus_master_*` report file as Cyrus's master does.
    pub fn write_cyrus_report(&mut self, report: CyrusReport) {
        self.observe.cyrus = Some(report);
    }

    /// The metrics text, as `--metrics-listen` serves it.
    pub fn metrics_text(&self) -> String {
        metrics::render(
            &self.sup.status(),
            &master_info(families(&self.sup, &self.pools)),
        )
    }

    pub(super) fn observe_token(&mut self, token: u64) {
        let Some(http) = self.observe.http.as_mut() else {
            return;
        };
        match token >> KIND_SHIFT {
            KIND_METRICS => http.accept(&self.poller, Instant::now()),
            KIND_HTTP => {
                let (sup, pools) = (&self.sup, &self.pools);
                http.ready(token, &self.poller, &mut || {
                    metrics::render(&sup.status(), &master_info(families(sup, pools)))
                });
            }
            _ => {}
        }
    }

    /// After each wake-up: connections past their time are closed; a report falls due.
    pub(super) fn observe_timers(&mut self) {
        let now = Instant::now();
        if let Some(http) = self.observe.http.as_mut() {
            http.expire(now, &self.poller);
        }
        if self
            .observe
            .cyrus
            .as_ref()
            .is_some_and(|r| r.next_at() <= now)
        {
            let families = families(&self.sup, &self.pools);
            if let Some(report) = self.observe.cyrus.as_mut() {
                report.write(&self.sup.status(), &families, now);
            }
        }
    }

    /// Before the supervisor sees an input: a stop is told to systemd at once.
    pub(super) fn observe_input(&mut self, input: &Input) {
        if matches!(input, Input::Stop { .. }) {
            self.observe.notifier.stopping();
        }
    }

    /// Around the actions that mark the master's phases.
    pub(super) fn observe_action(&mut self, action: &Action) {
        match action {
            Action::LoadConfig => self.observe.notifier.reloading(),
            Action::ReloadFinished(_) => {
                let status = self.sup.status();
                self.observe.notifier.reload_finished(&status);
            }
            Action::Ready {
                all_listening: true,
            } => {
                let status = self.sup.status();
                self.observe.notifier.all_listening(&status);
            }
            Action::Ready {
                all_listening: false,
            } => {
                let status = self.sup.status();
                self.observe.notifier.some_down(&status);
            }
            Action::Exit(_) => self.observe.notifier.stopping(),
            _ => {}
        }
    }
}
