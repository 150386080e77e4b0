//! A small syslog client for the master: RFC 3164 lines over the /dev/log datagram socket,
//! never blocking (a message that does not fit is dropped and counted, and the count is
//! reported in the log once lines get through again), reconnecting when the log daemon restarts. The logging module adapts it to `tracing`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::clock;

/// The local syslog socket.
pub const DEV_LOG: &str = "/dev/log";
/// Facility LOG_DAEMON, the default.
pub const FACILITY_DAEMON: u8 = 3 << 3;
/// Longest message body sent; longer ones are cut (at a character boundary).
const MAX_MESSAGE: usize = 8000;
/// Least time between two reports of dropped lines: under a sustained flood a report per
/// line that gets through would add to the flood.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(60);

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Syslog severities (RFC 5424 numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// 0: the system is unusable.
    Emergency = 0,
    /// 1: act at once.
    Alert = 1,
    /// 2: critical conditions.
    Critical = 2,
    /// 3: errors.
    Error = 3,
    /// 4: warnings.
    Warning = 4,
    /// 5: normal but significant.
    Notice = 5,
    /// 6: informational.
    Info = 6,
    /// 7: debugging.
    Debug = 7,
}

/// A connection to the local syslog daemon.
#[derive(Debug)]
pub struct Syslog {
    socket: Option<Socket>,
    path: PathBuf,
    ident: String,
    /// The facility code, shifted (`LOG_MAIL` is 2 << 3).
    facility: u8,
    line: Vec<u8>,
    dropped: u64,
    /// `dropped` as last reported, and when.
    reported: u64,
    reported_at: Option<Instant>,
}

impl Syslog {
    /// Connect to /dev/log, logging as `ident` (e.g. "ringmaster" or Cyrus's "master").
    /// None when there is no syslog daemon to talk to.
    pub fn connect(ident: &str) -> Option<Syslog> {
        Syslog::connect_to(Path::new(DEV_LOG), ident)
    }

    /// Connect to the datagram socket at `path`.
    pub fn connect_to(path: &Path, ident: &str) -> Option<Syslog> {
        let socket = open(path).ok()?;
        Some(Syslog {
            socket: Some(socket),
            path: path.to_path_buf(),
            ident: ident.to_owned(),
            facility: FACILITY_DAEMON,
            line: Vec::with_capacity(512),
            dropped: 0,
            reported: 0,
            reported_at: None,
        })
    }

    /// Send one message, facility daemon, formatted
    /// `<PRI>Mmm dd hh:mm:ss ident[pid]: message` (as glibc's syslog writes to /dev/log).
    /// Never blocks: when the socket buffer is full the message is dropped (see
    /// [`Syslog::dropped`]); when the daemon went away, reconnect once and retry. After a line
    /// gets through, lines dropped since the last report are reported (at most once a minute).
    pub fn send(&mut self, severity: Severity, message: &str) {
        if self.send_one(severity, message) {
            self.report_dropped();
        }
    }

    fn report_dropped(&mut self) {
        let lost = self.dropped - self.reported;
        let due = self
            .reported_at
            .is_none_or(|at| at.elapsed() >= DROP_REPORT_INTERVAL);
        if lost == 0 || !due {
            return;
        }
        self.reported = self.dropped;
        self.reported_at = Some(Instant::now());
        let message = format!("{lost} log lines could not be sent to syslog");
        // A report that is itself dropped is counted, and reported next time.
        self.send_one(Severity::Warning, &message);
    }

    /// Whether the line was sent.
    fn send_one(&mut self, severity: Severity, message: &str) -> bool {
        self.format(severity, message);
        for attempt in 0..2 {
            if self.socket.is_none() {
                self.socket = open(&self.path).ok();
            }
            let Some(socket) = &self.socket else { break };
            match socket.send(&self.line) {
                Ok(_) => return true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR)) && attempt == 0 => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EMSGSIZE)
                    ) =>
                {
                    break
                }
                Err(_) => self.socket = None, // the daemon restarted or vanished: reconnect
            }
        }
        self.dropped += 1;
        false
    }

    /// Log as `ident` with `facility` (from [`facility_code`]) from now on.
    pub fn set_identity(&mut self, ident: &str, facility: u8) {
        self.ident = ident.to_owned();
        self.facility = facility;
    }

    /// How many messages were dropped so far (full buffer, no daemon).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn format(&mut self, severity: Severity, message: &str) {
        use std::io::Write;
        self.line.clear();
        let pri = self.facility | severity as u8;
        let _ = write!(self.line, "<{pri}>");
        if let Ok(t) = clock::local_time(clock::unix_now()) {
            let month = MONTHS
                .get(usize::from(t.month.saturating_sub(1)))
                .unwrap_or(&"Jan");
            let _ = write!(
                self.line,
                "{month} {:>2} {:02}:{:02}:{:02} ",
                t.day, t.hour, t.minute, t.second
            );
        }
        let _ = write!(self.line, "{}[{}]: ", self.ident, std::process::id());
        let mut end = message.len().min(MAX_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        self.line
            .extend_from_slice(message.get(..end).unwrap_or_default().as_bytes());
    }
}

/// The facility code (shifted) of a name imapd.conf's `syslog_facility` may give, as Cyrus
/// reads it (case-insensitive): DAEMON, MAIL, NEWS, USER, LOCAL0..LOCAL7.
pub fn facility_code(name: &str) -> Option<u8> {
    let code = match name.trim().to_ascii_uppercase().as_str() {
        "USER" => 1,
        "MAIL" => 2,
        "DAEMON" => 3,
        "NEWS" => 7,
        local => {
            let n: u8 = local.strip_prefix("LOCAL")?.parse().ok()?;
            if n > 7 {
                return None;
            }
            16 + n
        }
    };
    Some(code << 3)
}

/// A nonblocking, close-on-exec datagram socket connected to `path`.
fn open(path: &Path) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::TempDir;
    use std::os::unix::net::UnixDatagram;

    fn receive(server: &UnixDatagram) -> String {
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 9000];
        let n = server.recv(&mut buf).expect("recv");
        String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned()
    }

    #[test]
    fn lines_are_rfc3164_with_daemon_facility() {
        let dir = TempDir::new("syslog");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let mut log = Syslog::connect_to(&path, "ringmaster").expect("connect");
        log.send(Severity::Error, "service imap: too many failures");
        let line = receive(&server);
        assert!(line.starts_with("<27>"), "{line}");
        assert!(
            line.ends_with(&format!(
                " ringmaster[{}]: service imap: too many failures",
                std::process::id()
            )),
            "{line}"
        );
        // "<27>Mmm dd hh:mm:ss " is 20 bytes.
        assert_eq!(line.as_bytes().get(19), Some(&b' '), "{line}");
        log.send(Severity::Debug, &"é".repeat(5000));
        let long = receive(&server);
        assert!(long.starts_with("<31>") && long.len() < MAX_MESSAGE + 100);
    }

    #[test]
    fn a_full_socket_drops_instead_of_blocking() {
        let dir = TempDir::new("syslog-full");
        let path = dir.path().join("log");
        let _server = UnixDatagram::bind(&path).expect("bind"); // never read
        let mut log = Syslog::connect_to(&path, "ringmaster").expect("connect");
        let start = Instant::now();
        for _ in 0..5000 {
            log.send(Severity::Info, "filler filler filler filler");
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(log.dropped() > 0);
    }

    #[test]
    fn dropped_lines_are_reported_once_lines_get_through() {
        let dir = TempDir::new("syslog-report");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let mut log = Syslog::connect_to(&path, "ringmaster").expect("connect");
        let mut sent = 0u64;
        while log.dropped() == 0 && sent < 100_000 {
            log.send(Severity::Info, "filler");
            sent += 1;
        }
        let lost = log.dropped();
        assert!(lost > 0, "the socket never filled");
        server.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 9000];
        while server.recv(&mut buf).is_ok() {}
        server.set_nonblocking(false).expect("blocking");
        log.send(Severity::Info, "back");
        assert!(receive(&server).ends_with("back"));
        let report = receive(&server);
        assert!(
            report.ends_with(&format!("{lost} log lines could not be sent to syslog")),
            "{report}"
        );
        assert!(report.starts_with("<28>"), "{report}");
    }

    #[test]
    fn it_reconnects_after_the_daemon_restarts() {
        let dir = TempDir::new("syslog-restart");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let mut log = Syslog::connect_to(&path, "ringmaster").expect("connect");
        log.send(Severity::Info, "one");
        assert!(receive(&server).ends_with("one"));
        drop(server);
        std::fs::remove_file(&path).expect("unlink");
        let server = UnixDatagram::bind(&path).expect("rebind");
        log.send(Severity::Info, "two");
        assert!(receive(&server).ends_with("two"));
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn ident_and_facility_can_change() {
        let dir = TempDir::new("syslog-ident");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        let mut log = Syslog::connect_to(&path, "ringmaster").expect("connect");
        let mail = facility_code("mail").expect("mail");
        log.set_identity("cyrus/master", mail);
        log.send(Severity::Info, "hello");
        let line = receive(&server);
        // LOG_MAIL (2) * 8 + LOG_INFO (6).
        assert!(line.starts_with("<22>"), "{line}");
        assert!(line.contains(" cyrus/master["), "{line}");
        assert_eq!(facility_code("LOCAL6"), Some(22 << 3));
        assert_eq!(facility_code("local8"), None);
        assert_eq!(facility_code("kern"), None);
    }

    #[test]
    fn no_daemon_means_none() {
        assert!(Syslog::connect_to(Path::new("/nonexistent/ringmaster/log"), "x").is_none());
    }
}
