//! Where the master's log lines go: stderr in the foreground (-D), a file (-L), else syslog.
//! SIGUSR1 reopens the file (for logrotate); imapd.conf's `syslog_prefix` and
//! `syslog_facility` set syslog's ident and facility once the configuration is read.
//!
//! Everything is written synchronously from the one thread of the master: no logging thread.
//! Control characters other than newline and tab never reach the log raw: whatever a line
//! quotes (a name from a config, say), they are written as `\xNN`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ringmaster_core::{Field, LogRecord};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::sys::daemonize::LOG_FILE_MODE;
use crate::sys::syslog::{self, Severity, Syslog};

/// Where log lines go.
pub enum Target {
    Stderr,
    /// The file, and its path for reopening.
    File(File, PathBuf),
    Syslog(Syslog),
}

impl Target {
    /// Opens the log file for appending (created [`LOG_FILE_MODE`] if missing).
    pub fn file(path: &Path) -> io::Result<Target> {
        Ok(Target::File(open_log(path)?, path.to_path_buf()))
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// The installed target, for [`reopen`] and [`set_syslog_identity`].
static INSTALLED: OnceLock<Arc<Mutex<Target>>> = OnceLock::new();

/// Whether the master logs to a file (`-L`), which [`reopen`] reopens.
pub fn to_file() -> bool {
    INSTALLED
        .get()
        .and_then(|t| t.lock().ok().map(|g| matches!(*g, Target::File(..))))
        .unwrap_or(false)
}

/// Opens the log file again by its path (SIGUSR1, after logrotate moved it away); the old
/// file is closed once the new one is open. Nothing to do when logging elsewhere.
pub fn reopen() {
    let Some(target) = INSTALLED.get() else {
        return;
    };
    // Not logged under the lock: a line would take the same lock.
    let outcome = match target.lock() {
        Ok(mut guard) => match &mut *guard {
            Target::File(file, path) => match open_log(path) {
                Ok(new) => {
                    *file = new;
                    Ok(path.clone())
                }
                Err(e) => Err((path.clone(), e)),
            },
            _ => return,
        },
        Err(_) => return,
    };
    match outcome {
        Ok(path) => tracing::info!("log file {} reopened", path.display()),
        Err((path, e)) => tracing::warn!(
            "cannot reopen log file {}: {e}; still writing to the old one",
            path.display()
        ),
    }
}

/// Logs to syslog as `ident` with `facility` from now on (when logging to syslog).
pub fn set_syslog_identity(ident: &str, facility: u8) {
    if let Some(Ok(mut guard)) = INSTALLED.get().map(|t| t.lock()) {
        if let Target::Syslog(log) = &mut *guard {
            log.set_identity(ident, facility);
        }
    }
}

/// The syslog ident and facility for imapd.conf's `syslog_prefix` and `syslog_facility`, as
/// Cyrus's programs derive theirs: `<prefix>/master` ($CYRUS_SYSLOG_PREFIX first, as in
/// Cyrus), else `ringmaster`; the facility named (Cyrus's master ignores it; ringmaster
/// follows it), else LOG_DAEMON. Also a complaint about an unknown facility name.
pub fn syslog_identity(
    env_prefix: Option<&str>,
    conf_prefix: Option<&str>,
    facility: Option<&str>,
) -> (String, u8, Option<String>) {
    let ident = match env_prefix.filter(|p| !p.is_empty()).or(conf_prefix) {
        Some(prefix) => format!("{prefix}/master"),
        None => "ringmaster".to_string(),
    };
    match facility {
        None => (ident, syslog::FACILITY_DAEMON, None),
        Some(name) => match syslog::facility_code(name) {
            Some(code) => (ident, code, None),
            None => (
                ident,
                syslog::FACILITY_DAEMON,
                Some(format!(
                    "syslog_facility: unknown facility `{}` (DAEMON, MAIL, NEWS, USER, \
                     LOCAL0..LOCAL7): using DAEMON",
                    ringmaster_core::escape(name)
                )),
            ),
        },
    }
}

/// A `MakeWriter` over a shared [`Target`].
#[derive(Clone)]
struct Sink {
    target: Arc<Mutex<Target>>,
}

/// One log line being formatted; sent when dropped.
pub struct LineWriter {
    target: Arc<Mutex<Target>>,
    level: Level,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(clean) = clean_controls(&self.buf) {
            self.buf = clean;
        }
        let Ok(mut target) = self.target.lock() else {
            return;
        };
        // A log line that cannot be written is dropped: the master must go on.
        match &mut *target {
            Target::Stderr => {
                let _ = io::stderr().write_all(&self.buf);
            }
            Target::File(file, _) => {
                let _ = file.write_all(&self.buf);
            }
            Target::Syslog(syslog) => {
                let text = String::from_utf8_lossy(&self.buf);
                let severity = match self.level {
                    Level::ERROR => Severity::Error,
                    Level::WARN => Severity::Warning,
                    Level::INFO => Severity::Info,
                    _ => Severity::Debug,
                };
                syslog.send(severity, text.trim_end());
            }
        }
    }
}

/// `line` with control characters other than newline and tab escaped (`\x1b`), or None when
/// there are none (the usual case: nothing is copied).
fn clean_controls(line: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(line);
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(bad) {
        return None;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in text.chars() {
        if bad(c) {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Some(out.into_bytes())
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            target: self.target.clone(),
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            target: self.target.clone(),
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// Installs the global logger. `verbose` 0 logs info and up, 1 debug, 2 trace.
pub fn init(target: Target, verbose: u8) {
    let max = match verbose {
        0 => Level::INFO,
        1 => Level::DEBUG,
        _ => Level::TRACE,
    };
    let with_time = !matches!(target, Target::Syslog(_));
    let target = Arc::new(Mutex::new(target));
    let _ = INSTALLED.set(target.clone());
    let sink = Sink { target };
    let builder = tracing_subscriber::fmt()
        .with_max_level(max)
        .with_writer(sink)
        .with_ansi(false)
        .with_target(false);
    // A second init (tests) keeps the first logger.
    let _ = if with_time {
        builder.try_init()
    } else {
        builder.without_time().with_level(false).try_init()
    };
}

/// A field's value as printed: bare when it is one word, else quoted (`status="signal 9"`).
struct Value<'a>(&'a str);

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bare = !self.0.is_empty()
            && !self
                .0
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
        if bare {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Prints one of the core's log records: its line, then `event=<kind>` and its fields, so
/// that readers and tests can match the kind rather than the wording.
pub fn print(record: &LogRecord) {
    let field = |f: Field| record.field(f).map(|v| tracing::field::display(Value(v)));
    // tracing wants the level and the field names fixed at each call site: one per level,
    // each with every field (an absent one prints nothing).
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                $level,
                event = %record.event.name(),
                service = field(Field::Service),
                family = field(Field::Family),
                entry = field(Field::Entry),
                pid = field(Field::Pid),
                pgid = field(Field::Pgid),
                status = field(Field::Status),
                listen = field(Field::Listen),
                error = field(Field::Error),
                count = field(Field::Count),
                seconds = field(Field::Seconds),
                reload = field(Field::Reload),
                services = field(Field::Services),
                workers = field(Field::Workers),
                draining = field(Field::Draining),
                bind_errors = field(Field::BindErrors),
                "{}",
                record.message
            )
        };
    }
    match record.level {
        ringmaster_core::Level::Error => emit!(Level::ERROR),
        ringmaster_core::Level::Warn => emit!(Level::WARN),
        ringmaster_core::Level::Info => emit!(Level::INFO),
        ringmaster_core::Level::Debug => emit!(Level::DEBUG),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_values_print_bare_and_others_quoted() {
        assert_eq!(Value("imap").to_string(), "imap");
        assert_eq!(Value("signal 9").to_string(), "\"signal 9\"");
        assert_eq!(Value("").to_string(), "\"\"");
        assert_eq!(Value("a=b").to_string(), "\"a=b\"");
    }

    #[test]
    fn syslog_ident_follows_the_prefix_and_the_facility_its_name() {
        let (ident, facility, warning) = syslog_identity(None, Some("cyrus"), Some("local6"));
        assert_eq!(
            (ident.as_str(), facility, warning),
            ("cyrus/master", 22 << 3, None)
        );
        // $CYRUS_SYSLOG_PREFIX wins, as in Cyrus.
        let (ident, _, _) = syslog_identity(Some("env"), Some("cyrus"), None);
        assert_eq!(ident, "env/master");
        let (ident, facility, warning) = syslog_identity(Some(""), None, Some("kern"));
        assert_eq!((ident.as_str(), facility), ("ringmaster", 3 << 3));
        assert!(warning.is_some_and(|w| w.contains("`kern`")));
    }

    #[test]
    fn control_characters_are_escaped_but_newlines_and_tabs_kept() {
        assert_eq!(clean_controls(b"plain line\n"), None);
        assert_eq!(clean_controls(b"a\tb\nc\n"), None);
        assert_eq!(
            clean_controls(b"name \x1b[31mred\r\n").as_deref(),
            Some(&b"name \\x1b[31mred\\x0d\n"[..])
        );
        assert_eq!(
            clean_controls("c1 \u{9b}2J\n".as_bytes()).as_deref(),
            Some(&b"c1 \\x9b2J\n"[..])
        );
    }
}
