//! Log records: what the supervisor has to say, returned as [`Action::Log`] for the shell to
//! print, never printed here. Each record has a level, a stable kind ([`LogEvent`], printed
//! as `event=<snake_case>`), the human line, and structured fields ([`Field`]).
//!
//! Functions that have no action list at hand push onto the supervisor's [`Logs`]; `handle`
//! drains them to the front of its answer, so they print before what they explain is done.

use std::fmt::Display;

use super::Action;

/// How serious a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// Declares [`LogEvent`] and its stable names in one table.
macro_rules! log_events {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What a record is about: a stable name that tests and log readers match on,
        /// whatever the wording of the line.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum LogEvent {
            $($(#[$doc])* $variant,)*
        }

        impl LogEvent {
            /// Every kind, in table order.
            pub const ALL: &'static [LogEvent] = &[$(LogEvent::$variant,)*];

            /// The stable snake_case name, printed as `event=<name>`.
            pub fn name(self) -> &'static str {
                match self {
                    $(LogEvent::$variant => $name,)*
                }
            }
        }
    };
}

log_events! {
    // start-up and stop
    StartCommand => "start_command",
    StartFailed => "start_failed",
    Ready => "ready",
    AllListening => "all_listening",
    StopRequested => "stop_requested",
    DrainRequested => "drain_requested",
    DrainOver => "drain_over",
    KillStragglers => "kill_stragglers",
    AllExited => "all_exited",
    // services and binds
    BindFailed => "bind_failed",
    BindFailedFatal => "bind_failed_fatal",
    BindStillFailing => "bind_still_failing",
    ServiceUp => "service_up",
    // workers and pools
    WorkerForked => "worker_forked",
    WorkerSpawnFailed => "worker_spawn_failed",
    WorkerCrashed => "worker_crashed",
    WorkerExited => "worker_exited",
    WorkerQuickExit => "worker_quick_exit",
    WorkerKilled => "worker_killed",
    WorkerOverstayed => "worker_overstayed",
    PoolThrottled => "pool_throttled",
    PoolResumed => "pool_resumed",
    BadNote => "bad_note",
    NoteFromUnknownPid => "note_from_unknown_pid",
    NoteOnWrongPipe => "note_on_wrong_pipe",
    NotesSuppressed => "notes_suppressed",
    // processes left behind
    LeftBehind => "left_behind",
    LeftoverReaped => "leftover_reaped",
    StrayDescendantReaped => "stray_descendant_reaped",
    EscapedReaped => "escaped_reaped",
    // events and daemons
    EventRun => "event_run",
    EventSpawnFailed => "event_spawn_failed",
    EventFailed => "event_failed",
    DaemonStarted => "daemon_started",
    DaemonSpawnFailed => "daemon_spawn_failed",
    DaemonReady => "daemon_ready",
    DaemonNotReady => "daemon_not_ready",
    DaemonEnded => "daemon_ended",
    DaemonRemoved => "daemon_removed",
    DaemonKilled => "daemon_killed",
    // reload
    ReloadDeferred => "reload_deferred",
    ReloadIgnored => "reload_ignored",
    ReloadCoalesced => "reload_coalesced",
    ReloadRejected => "reload_rejected",
    ReloadApplying => "reload_applying",
    ReloadSettled => "reload_settled",
    ReloadNewService => "reload_new_service",
    ReloadServiceStops => "reload_service_stops",
    ReloadKeptPrevious => "reload_kept_previous",
    ReloadUnresolved => "reload_unresolved",
}

/// A structured field of a record. The set is closed so that the shell can print each under
/// a name of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// A SERVICES entry's name.
    Service,
    /// A pool's address family index (its workers' `CYRUS_ID`).
    Family,
    /// A START, EVENTS or DAEMON entry's name.
    Entry,
    Pid,
    /// A process group.
    Pgid,
    /// How a child ended (`exit status 1`, `signal 9`).
    Status,
    /// A `listen=` address.
    Listen,
    Error,
    /// How many (attempts, suppressed lines, groups ...).
    Count,
    /// A delay or pause, in seconds.
    Seconds,
    /// A reload's number.
    Reload,
    /// How many services (a settled reload's).
    Services,
    /// How many workers (a settled reload's, on the new configuration).
    Workers,
    /// How many old workers are still draining.
    Draining,
    /// How many sockets could not be bound.
    BindErrors,
}

impl Field {
    /// Every field, in the order the shell prints them.
    pub const ALL: &'static [Field] = &[
        Field::Service,
        Field::Family,
        Field::Entry,
        Field::Pid,
        Field::Pgid,
        Field::Status,
        Field::Listen,
        Field::Error,
        Field::Count,
        Field::Seconds,
        Field::Reload,
        Field::Services,
        Field::Workers,
        Field::Draining,
        Field::BindErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Service => "service",
            Field::Family => "family",
            Field::Entry => "entry",
            Field::Pid => "pid",
            Field::Pgid => "pgid",
            Field::Status => "status",
            Field::Listen => "listen",
            Field::Error => "error",
            Field::Count => "count",
            Field::Seconds => "seconds",
            Field::Reload => "reload",
            Field::Services => "services",
            Field::Workers => "workers",
            Field::Draining => "draining",
            Field::BindErrors => "bind_errors",
        }
    }
}

/// One thing the supervisor has to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: Level,
    pub event: LogEvent,
    /// The line for people.
    pub message: String,
    pub fields: Vec<(Field, String)>,
}

impl LogRecord {
    pub fn new(level: Level, event: LogEvent, message: impl Into<String>) -> LogRecord {
        LogRecord {
            level,
            event,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn with(&mut self, field: Field, value: impl Display) -> &mut LogRecord {
        self.fields.push((field, value.to_string()));
        self
    }

    /// The value of a field, if it has one.
    pub fn field(&self, field: Field) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }
}

/// Records waiting to be returned by `handle`.
#[derive(Debug, Default)]
pub(super) struct Logs {
    records: Vec<LogRecord>,
    /// Debug-level records are wanted. When not, the frequent ones (a fork, an exit) are not
    /// even built (their callers ask [`Logs::debug_on`] first), and the rare ones are dropped
    /// at the drain.
    debug: bool,
}

impl Logs {
    pub(super) fn new(debug: bool) -> Logs {
        Logs {
            records: Vec::new(),
            debug,
        }
    }

    pub(super) fn debug_on(&self) -> bool {
        self.debug
    }

    pub(super) fn push(
        &mut self,
        level: Level,
        event: LogEvent,
        message: impl Into<String>,
    ) -> &mut LogRecord {
        self.records.push(LogRecord::new(level, event, message));
        let last = self.records.len() - 1;
        &mut self.records[last]
    }

    pub(super) fn error(&mut self, event: LogEvent, message: impl Into<String>) -> &mut LogRecord {
        self.push(Level::Error, event, message)
    }

    pub(super) fn warn(&mut self, event: LogEvent, message: impl Into<String>) -> &mut LogRecord {
        self.push(Level::Warn, event, message)
    }

    pub(super) fn info(&mut self, event: LogEvent, message: impl Into<String>) -> &mut LogRecord {
        self.push(Level::Info, event, message)
    }

    pub(super) fn debug(&mut self, event: LogEvent, message: impl Into<String>) -> &mut LogRecord {
        self.push(Level::Debug, event, message)
    }

    /// Puts every waiting record, in order, before `out`'s actions.
    pub(super) fn drain_into(&mut self, out: &mut Vec<Action>) {
        if self.records.is_empty() {
            return;
        }
        let debug = self.debug;
        let actions: Vec<Action> = self
            .records
            .drain(..)
            .filter(|r| debug || r.level != Level::Debug)
            .map(Action::Log)
            .collect();
        out.splice(0..0, actions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for event in LogEvent::ALL {
            let name = event.name();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        let mut fields = std::collections::HashSet::new();
        for field in Field::ALL {
            assert!(fields.insert(field.name()), "{} twice", field.name());
        }
        assert!(!fields.contains("event"), "event= is the kind");
    }

    #[test]
    fn records_go_before_the_actions_in_order() {
        let mut logs = Logs::new(true);
        logs.warn(LogEvent::BindFailed, "first")
            .with(Field::Service, "imap");
        logs.info(LogEvent::Ready, "second");
        let mut out = vec![Action::Exit(0)];
        logs.drain_into(&mut out);
        assert_eq!(out.len(), 3);
        let Action::Log(first) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(first.event, LogEvent::BindFailed);
        assert_eq!(first.field(Field::Service), Some("imap"));
        assert!(matches!(&out[1], Action::Log(r) if r.event == LogEvent::Ready));
        assert_eq!(out[2], Action::Exit(0));
    }

    #[test]
    fn debug_records_are_dropped_unless_wanted() {
        let mut logs = Logs::new(false);
        assert!(!logs.debug_on());
        logs.debug(LogEvent::WorkerExited, "quiet");
        logs.info(LogEvent::Ready, "said");
        let mut out = Vec::new();
        logs.drain_into(&mut out);
        assert!(matches!(&out[..], [Action::Log(r)] if r.event == LogEvent::Ready));
    }
}
