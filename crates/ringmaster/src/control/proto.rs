//! The control protocol, version 1 (docs/control.md): one JSON request line per connection,
//! one or more JSON answer lines. Parsing requests and building answers are pure functions
//! here; the server and the client share these types, so `status --json` is exactly what
//! the master sent.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use ringmaster_core::{
    DownService, EntryPlan, ExitReason, Now, PoolStatus, ReloadPlan, ReloadReport, ReloadResult,
    ServicePlan, Status,
};

pub const VERSION: u32 = 1;

/// A request, as the client sends it: `{"version":1,"request":"status"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Reload {
        #[serde(default)]
        dry_run: bool,
        #[serde(default = "yes")]
        wait: bool,
    },
    Stop {
        #[serde(default)]
        graceful: bool,
    },
    Metrics,
    /// Re-execute the master from `binary` (default: the path of its own binary).
    Upgrade {
        #[serde(default)]
        binary: Option<std::path::PathBuf>,
    },
}

fn yes() -> bool {
    true
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Encodes a request line (newline included).
pub fn request_line(request: &Request) -> String {
    line(request)
}

/// One answer or request line: `{"version":1,...}\n`.
fn line<T: Serialize>(body: &T) -> String {
    let mut text = serde_json::to_string(&Envelope {
        version: VERSION,
        body,
    })
    .unwrap_or_else(|e| format!("{{\"version\":1,\"ok\":false,\"error\":\"encoding: {e}\"}}"));
    text.push('\n');
    text
}

/// Parses a request line (without its newline).
pub fn parse_request(text: &[u8]) -> Result<Request, String> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not a JSON request: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("a request is a JSON object".into());
    };
    match object.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => return Err(format!("protocol version {v} is not supported (only 1)")),
        None => return Err("the request has no \"version\"".into()),
    }
    let mut rest = object.clone();
    rest.remove("version");
    serde_json::from_value(serde_json::Value::Object(rest)).map_err(|e| format!("bad request: {e}"))
}

/// Every answer line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every problem, for a rejected configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusDoc>,
    /// A reload was asked for; the one with this number answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_requested: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReportDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanDoc>,
    /// The master is stopping; the connection closes when it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The master's pid (with `stopping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer {
            ok: true,
            error: None,
            errors: Vec::new(),
            status: None,
            reload_requested: None,
            reload: None,
            plan: None,
            stopping: None,
            metrics: None,
            pid: None,
        }
    }

    pub fn error(text: impl Into<String>) -> Answer {
        Answer {
            ok: false,
            error: Some(text.into()),
            ..Answer::ok()
        }
    }

    pub fn line(&self) -> String {
        line(self)
    }
}

/// Parses an answer line, checking its version.
pub fn parse_answer(text: &str) -> Result<Answer, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("unreadable answer: {e}"))?;
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        other => return Err(format!("answer of protocol version {other:?}; expected 1")),
    }
    serde_json::from_value(value).map_err(|e| format!("unreadable answer: {e}"))
}

/// `ringmaster status --json`: documented field by field in docs/control.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub pid: u32,
    /// starting, running, draining, stopping, exited.
    pub phase: String,
    pub all_listening: bool,
    /// The master's clock when it answered (seconds since the epoch).
    pub now_unix: i64,
    pub services: Vec<ServiceDoc>,
    pub daemons: Vec<DaemonDoc>,
    pub events: Vec<EventDoc>,
    pub reloads: ReloadsDoc,
    /// The binary: version, path and upgrades of this pid (docs/upgrade.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<crate::upgrade::MasterInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkersDoc {
    pub ready: u32,
    pub busy: u32,
    pub starting: u32,
    pub draining: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDoc {
    pub name: String,
    /// 4, 6, or 0 for a unix socket.
    pub family: u8,
    pub listen: String,
    pub proto: String,
    /// False: its socket could not be bound (see `bind_error`).
    pub listening: bool,
    pub generation: u64,
    pub retiring: bool,
    pub workers: WorkersDoc,
    pub prefork: u32,
    pub maxchild: Option<u32>,
    pub forks: u64,
    /// Exits by reason: normal, crash, signal, recycled.
    pub exits: std::collections::BTreeMap<String, u64>,
    /// crash + signal exits.
    pub crashes: u64,
    pub ready_fails: u64,
    pub waiting: u32,
    pub paused_until_unix: Option<i64>,
    pub bind_error: Option<String>,
    pub bind_retry_unix: Option<i64>,
    pub exec_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonDoc {
    pub name: String,
    pub pid: Option<i32>,
    pub up_since_unix: Option<i64>,
    pub restarts: u64,
    pub restart_unix: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDoc {
    pub name: String,
    pub next_unix: Option<i64>,
    pub running: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadsDoc {
    pub applied: u64,
    pub partial: u64,
    pub rejected: u64,
    pub in_progress_since_unix: Option<i64>,
    pub last: Option<ReportDoc>,
}

/// One finished reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportDoc {
    pub id: u64,
    /// applied, partial (a new socket could not be bound) or rejected.
    pub result: String,
    /// Applied: every service had its new prefork ready before the settle cap.
    pub settled: bool,
    /// Rejected: every problem with its file:line:col.
    pub errors: Vec<String>,
    pub bind_errors: Vec<String>,
    /// Old workers still draining when it finished.
    pub draining: u32,
    pub started_unix: i64,
    pub finished_unix: i64,
    pub duration_ms: u64,
}

/// An instant as seconds since the epoch, by the master's two clocks read together.
fn unix_of(t: Instant, now: Now) -> i64 {
    if t >= now.mono {
        now.unix + i64::try_from((t - now.mono).as_secs()).unwrap_or(i64::MAX / 2)
    } else {
        now.unix - i64::try_from((now.mono - t).as_secs()).unwrap_or(i64::MAX / 2)
    }
}

pub fn report_doc(report: &ReloadReport, now: Now) -> ReportDoc {
    let (settled, errors, bind_errors) = match &report.result {
        ReloadResult::Applied {
            bind_errors,
            settled,
        } => (*settled, Vec::new(), bind_errors.clone()),
        ReloadResult::Rejected { errors } => (false, errors.clone(), Vec::new()),
    };
    ReportDoc {
        id: report.id,
        result: report.result.kind().to_string(),
        settled,
        errors,
        bind_errors,
        draining: report.draining,
        started_unix: unix_of(report.started, now),
        finished_unix: unix_of(report.finished, now),
        duration_ms: u64::try_from(
            report
                .finished
                .saturating_duration_since(report.started)
                .as_millis(),
        )
        .unwrap_or(u64::MAX),
    }
}

fn pool_doc(p: &PoolStatus, now: Now) -> ServiceDoc {
    let exits = ExitReason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), p.counters.exits(*r)))
        .collect();
    ServiceDoc {
        name: p.service.clone(),
        family: p.family,
        listen: p.listen.clone(),
        proto: p.proto.clone(),
        listening: true,
        generation: p.generation,
        retiring: p.retiring,
        workers: WorkersDoc {
            ready: p.workers.ready,
            busy: p.workers.busy,
            starting: p.workers.starting,
            draining: p.workers.draining,
        },
        prefork: p.prefork,
        maxchild: p.maxchild,
        forks: p.counters.forks,
        exits,
        crashes: p.counters.exits(ExitReason::Crash) + p.counters.exits(ExitReason::Signal),
        ready_fails: p.counters.ready_fails,
        waiting: p.waiting,
        paused_until_unix: p.paused_until.map(|t| unix_of(t, now)),
        bind_error: None,
        bind_retry_unix: None,
        exec_error: p.counters.last_exec_error.clone(),
    }
}

fn down_doc(d: &DownService, now: Now) -> ServiceDoc {
    ServiceDoc {
        name: d.service.clone(),
        family: 0,
        listen: d.listen.clone(),
        proto: String::new(),
        listening: false,
        generation: 0,
        retiring: false,
        workers: WorkersDoc::default(),
        prefork: 0,
        maxchild: None,
        forks: 0,
        exits: Default::default(),
        crashes: 0,
        ready_fails: 0,
        waiting: 0,
        paused_until_unix: None,
        bind_error: Some(d.error.clone()),
        bind_retry_unix: d.retry_at.map(|t| unix_of(t, now)),
        exec_error: None,
    }
}

/// The status document of a snapshot taken at `now`.
pub fn status_doc(status: &Status, pid: u32, now: Now) -> StatusDoc {
    let services = status
        .pools
        .iter()
        .map(|p| pool_doc(p, now))
        .chain(status.down.iter().map(|d| down_doc(d, now)))
        .collect();
    StatusDoc {
        pid,
        phase: status.phase.as_str().to_string(),
        all_listening: status.all_listening,
        now_unix: now.unix,
        services,
        daemons: status
            .daemons
            .iter()
            .map(|d| DaemonDoc {
                name: d.name.clone(),
                pid: d.pid,
                up_since_unix: d.up_since.map(|t| unix_of(t, now)),
                restarts: d.restarts,
                restart_unix: d.restart_at.map(|t| unix_of(t, now)),
            })
            .collect(),
        events: status
            .events
            .iter()
            .map(|e| EventDoc {
                name: e.name.clone(),
                next_unix: e.next_unix.or(e.next_mono.map(|t| unix_of(t, now))),
                running: e.running,
            })
            .collect(),
        reloads: ReloadsDoc {
            applied: status.reloads.applied,
            partial: status.reloads.partial,
            rejected: status.reloads.rejected,
            in_progress_since_unix: status.reload_in_progress.map(|t| unix_of(t, now)),
            last: status.reloads.last.as_ref().map(|r| report_doc(r, now)),
        },
        master: None,
    }
}

/// `reload --dry-run`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDoc {
    pub services: Vec<ServicePlanDoc>,
    pub events: Vec<EntryPlanDoc>,
    pub daemons: Vec<EntryPlanDoc>,
    /// Workers recycled in all.
    pub recycle: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlanDoc {
    pub name: String,
    pub listen: String,
    pub old_listen: Option<String>,
    /// kept, rebound, added, removed or untouched.
    pub change: String,
    pub recycle: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPlanDoc {
    pub name: String,
    /// same, changed, added, removed or untouched.
    pub change: String,
}

pub fn plan_doc(plan: &ReloadPlan) -> PlanDoc {
    let service = |s: &ServicePlan| ServicePlanDoc {
        name: s.name.clone(),
        listen: s.listen.clone(),
        old_listen: s.old_listen.clone(),
        change: s.change.as_str().to_string(),
        recycle: s.recycle,
    };
    let entry = |e: &EntryPlan| EntryPlanDoc {
        name: e.name.clone(),
        change: e.change.as_str().to_string(),
    };
    PlanDoc {
        services: plan.services.iter().map(service).collect(),
        events: plan.events.iter().map(entry).collect(),
        daemons: plan.daemons.iter().map(entry).collect(),
        recycle: plan.recycle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_default_to_waiting() {
        for r in [
            Request::Status,
            Request::Metrics,
            Request::Reload {
                dry_run: true,
                wait: false,
            },
            Request::Stop { graceful: true },
        ] {
            let text = request_line(&r);
            assert!(text.starts_with("{\"version\":1,"), "{text}");
            assert!(text.ends_with('\n'));
            assert_eq!(parse_request(text.trim_end().as_bytes()), Ok(r));
        }
        assert_eq!(
            parse_request(br#"{"version":1,"request":"reload"}"#),
            Ok(Request::Reload {
                dry_run: false,
                wait: true
            })
        );
    }

    #[test]
    fn bad_requests_are_explained() {
        let err = |t: &str| parse_request(t.as_bytes()).unwrap_err();
        assert!(err("status").contains("not a JSON request"));
        assert!(err("[1]").contains("JSON object"));
        assert!(err(r#"{"request":"status"}"#).contains("no \"version\""));
        assert!(err(r#"{"version":2,"request":"status"}"#).contains("version 2"));
        assert!(err(r#"{"version":1,"request":"explode"}"#).contains("bad request"));
        assert!(err(r#"{"version":1,"request":"stop","force":1}"#).contains("bad request"));
    }

    #[test]
    fn answers_carry_the_version_and_round_trip() {
        let mut a = Answer::error("busy");
        a.errors = vec!["a.conf:1:2: error: x".into()];
        let text = a.line();
        assert!(text.starts_with("{\"version\":1,\"ok\":false"), "{text}");
        assert_eq!(parse_answer(text.trim_end()), Ok(a));
        assert!(parse_answer(r#"{"version":9,"ok":true}"#).is_err());
    }
}
