//! The typed model of a cyrus.conf: what the parser yields and what the master runs and diffs.

use std::fmt;
use std::path::PathBuf;

/// Where something was written: file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A whole cyrus.conf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub start: Vec<StartEntry>,
    pub services: Vec<ServiceEntry>,
    pub events: Vec<EventEntry>,
    pub daemons: Vec<DaemonEntry>,
    /// Entries left out because their program or user cannot be resolved (filled in by the
    /// launcher, never by the parser): a reload keeps what runs under these names as it is.
    pub unresolved: Unresolved,
}

/// Names of the entries, per section, that the launcher left out of a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unresolved {
    pub services: Vec<String>,
    pub events: Vec<String>,
    pub daemons: Vec<String>,
}

/// `cmd=` split on whitespace, as Cyrus does. Never empty once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv.join(" "))
    }
}

/// Who a process runs as, when the entry says (ringmaster extension keys `user=` and `group=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RunAs {
    pub user: Option<String>,
    pub group: Option<String>,
}

/// An entry of the START section: run once, in order, waited for, before services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartEntry {
    pub name: String,
    pub cmd: Command,
    pub run_as: RunAs,
    pub location: Location,
}

/// Transport and address family of a service (`proto=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Tcp4,
    Tcp6,
    Udp,
    Udp4,
    Udp6,
}

impl Proto {
    pub fn is_udp(self) -> bool {
        matches!(self, Proto::Udp | Proto::Udp4 | Proto::Udp6)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Tcp4 => "tcp4",
            Proto::Tcp6 => "tcp6",
            Proto::Udp => "udp",
            Proto::Udp4 => "udp4",
            Proto::Udp6 => "udp6",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a service listens (`listen=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    /// A unix socket path.
    Unix(PathBuf),
    /// An internet address: `host` is None for "all addresses"; a name or a literal otherwise
    /// (IPv6 literals without brackets). `port` is already resolved from /etc/services.
    Inet { host: Option<String>, port: u16 },
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "{}", path.display()),
            Listen::Inet { host: None, port } => write!(f, "{port}"),
            Listen::Inet {
                host: Some(host),
                port,
            } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Listen::Inet {
                host: Some(host),
                port,
            } => write!(f, "{host}:{port}"),
        }
    }
}

/// An entry of the SERVICES section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub name: String,
    pub cmd: Command,
    pub listen: Listen,
    /// `proto=`, default tcp. For a unix socket it picks the socket type only: tcp* stream,
    /// udp* datagram (Debian's `notify` is a datagram unix socket).
    pub proto: Proto,
    /// Workers kept ready (`prefork=`, default 0). Effective value: at least 1 when babysit,
    /// at most 1 for UDP.
    pub prefork: u32,
    /// Most workers at once (`maxchild=`); None is unlimited (Cyrus's -1). Always Some(1)
    /// for UDP.
    pub maxchild: Option<u32>,
    /// Most forks per second (`maxforkrate=`); 0 is unlimited. Effective value: 10 when
    /// babysit and not given.
    pub maxforkrate: u32,
    /// Keep at least one worker alive at all times (`babysit=`).
    pub babysit: bool,
    /// RLIMIT_NOFILE for workers (`maxfds=`); 0, the default, leaves the inherited limit
    /// (as Cyrus does).
    pub maxfds: u64,
    pub run_as: RunAs,
    pub location: Location,
}

/// Hour and minute of the day, 00:00 to 23:59.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
}

/// A five-field cron spec (`cron="m h dom mon dow"`), each field a set of allowed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    /// Bit i set: minute i allowed (0..=59).
    pub minutes: u64,
    /// Bit i set: hour i allowed (0..=23).
    pub hours: u32,
    /// Bit i set: day of month i allowed (1..=31).
    pub days_of_month: u32,
    /// Bit i set: month i allowed (1..=12).
    pub months: u16,
    /// Bit i set: day of week i allowed (0..=6, Sunday is 0; 7 is folded into 0).
    pub days_of_week: u8,
    /// True when the day-of-month field was `*`.
    pub any_day_of_month: bool,
    /// True when the day-of-week field was `*`.
    pub any_day_of_week: bool,
    /// The spec as written.
    pub text: String,
}

/// When an event fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `minutes` minutes, first at start-up. `minutes == 0`: once, at start-up.
    Period { minutes: u32 },
    /// Daily at this local time (`at=HHMM`).
    Daily(TimeOfDay),
    /// Cron-style (`cron=`).
    Cron(CronSpec),
}

/// An entry of the EVENTS section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    pub name: String,
    pub cmd: Command,
    pub schedule: Schedule,
    pub run_as: RunAs,
    pub location: Location,
}

/// An entry of the DAEMON section: long-running, restarted when it dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonEntry {
    pub name: String,
    pub cmd: Command,
    /// `wait=y`: the master waits for "ok\r\n" on fd 3 before starting services.
    pub wait: bool,
    pub run_as: RunAs,
    pub location: Location,
}
