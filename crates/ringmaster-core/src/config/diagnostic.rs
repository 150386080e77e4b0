//! Errors and warnings about a configuration file, pointing at file:line:col, and their
//! rendering with the source line and a caret, like rustc: escaped (a config may hold any
//! bytes) and capped (a garbage file must not print thousands of lines).

use std::fmt;

use super::model::Location;
use crate::ratelimit::escape;

/// At most this many lines of diagnostics are shown (by `check`) or logged (at start-up and
/// reload); the rest are counted in one more line.
pub const MAX_LINES: usize = 50;
/// Longest source line shown, in characters; the rest is cut.
const MAX_SHOWN_CHARS: usize = 200;
/// Longest message shown (it may quote the input), in characters; the rest is cut.
const MAX_MESSAGE_CHARS: usize = 300;

/// What a finding in a config file means for the file: an error rejects it, a warning does
/// not. A verdict, not a log level: the shell logs errors at error level and warnings at
/// warning level, and the syslog priority (`sys::syslog::Severity`, eight RFC 5424 levels
/// with their wire numbers) is the shell's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One thing wrong (or suspicious) in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    pub message: String,
    /// The offending source line, for display under the message (empty when unknown).
    pub source_line: String,
    /// The file could not be read at all (an I/O error, not a mistake in the file).
    pub unreadable: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&head(self, &self.location.to_string()))
    }
}

impl Diagnostic {
    /// An error at `location`, showing `source_line`.
    pub fn error(location: Location, message: impl Into<String>, source_line: &str) -> Self {
        Diagnostic {
            severity: Severity::Error,
            location,
            message: message.into(),
            source_line: source_line.to_string(),
            unreadable: false,
        }
    }

    /// A warning at `location`, showing `source_line`.
    pub fn warning(location: Location, message: impl Into<String>, source_line: &str) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            location,
            message: message.into(),
            source_line: source_line.to_string(),
            unreadable: false,
        }
    }

    /// A diagnostic about a whole file (no line to show): line 0, column 0 are printed as
    /// just the file name.
    pub fn file_error(file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            location: Location {
                file: file.to_string(),
                line: 0,
                col: 0,
            },
            message: message.into(),
            source_line: String::new(),
            unreadable: false,
        }
    }

    /// `file` could not be read (`cannot read FILE: Too many open files`): not a mistake in
    /// the file, and said so.
    pub fn unreadable(file: &str, err: &std::io::Error) -> Self {
        let text = err.to_string();
        // "Too many open files", without std's " (os error 24)".
        let reason = match err.raw_os_error() {
            Some(code) => text
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&text),
            None => &text,
        };
        Diagnostic {
            unreadable: true,
            ..Diagnostic::file_error(file, format!("cannot read {file}: {reason}"))
        }
    }

    /// Same as [`Diagnostic::file_error`], as a warning.
    pub fn file_warning(file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::file_error(file, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Renders a diagnostic for a human: the `file:line:col: error: message` line, then the source
/// line under a gutter and a caret under the column, like rustc:
///
/// ```text
/// cyrus.conf:12:18: error: unterminated quoted value
///    |
/// 12 |     imap cmd="imapd -U 30 listen="imap"
///    |                  ^
/// ```
///
/// A diagnostic about a whole file (line 0) is one line: `file: error: message`.
pub fn render(d: &Diagnostic) -> String {
    if d.unreadable {
        return format!("{}\n", head(d, ""));
    }
    if d.location.line == 0 {
        return format!("{}\n", head(d, &d.location.file));
    }
    let mut out = format!("{}\n", head(d, &d.location.to_string()));
    if d.source_line.is_empty() && d.location.col == 0 {
        return out;
    }
    let number = d.location.line.to_string();
    let pad = " ".repeat(number.len());
    // Control characters other than tab would garble the terminal: show them as spaces.
    let cut = d.source_line.chars().count() > MAX_SHOWN_CHARS;
    let mut shown: String = d
        .source_line
        .chars()
        .take(MAX_SHOWN_CHARS)
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    if cut {
        shown.push_str(" ...");
    }
    out.push_str(&format!("{pad} |\n{number} | {shown}\n"));
    if d.location.col >= 1 && d.location.col as usize <= MAX_SHOWN_CHARS + 1 {
        // Keep tabs under tabs so the caret lines up whatever the tab width.
        let prefix: String = shown
            .chars()
            .chain(std::iter::repeat(' '))
            .take((d.location.col - 1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("{pad} | {prefix}^\n"));
    }
    out
}

/// `where: kind: message` (just `kind: message` when `place` is empty), escaped, the message
/// cut to [`MAX_MESSAGE_CHARS`].
fn head(d: &Diagnostic, place: &str) -> String {
    let kind = match d.severity {
        Severity::Warning => "warning",
        Severity::Error => "error",
    };
    let escaped = escape(&d.message);
    let message = match escaped.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{} ...", &escaped[..end]),
        None => escaped.into_owned(),
    };
    if place.is_empty() {
        format!("{kind}: {message}")
    } else {
        format!("{}: {kind}: {message}", escape(place))
    }
}

/// Diagnostics rendered, in order, as many as fit in [`MAX_LINES`] lines (at least one), then
/// one line counting the rest (`... and 1234 more errors`). Each item is one diagnostic's
/// rendering (possibly several lines, newline-terminated) and its severity.
pub fn render_capped(diags: &[Diagnostic]) -> Vec<(Severity, String)> {
    let mut out = Vec::new();
    let mut lines = 0;
    for (i, d) in diags.iter().enumerate() {
        let text = render(d);
        let n = text.lines().count();
        if i > 0 && lines + n > MAX_LINES {
            let rest = &diags[i..];
            let errors = rest.iter().filter(|d| d.is_error()).count();
            let warnings = rest.len() - errors;
            let count = match (errors, warnings) {
                (e, 0) => format!("{e} more error{}", plural(e)),
                (0, w) => format!("{w} more warning{}", plural(w)),
                (e, w) => format!("{e} more error{} and {w} warning{}", plural(e), plural(w)),
            };
            let severity = if errors > 0 {
                Severity::Error
            } else {
                Severity::Warning
            };
            out.push((severity, format!("... and {count} (not shown)\n")));
            break;
        }
        lines += n;
        out.push((d.severity, text));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, col: u32) -> Location {
        Location {
            file: "cyrus.conf".into(),
            line,
            col,
        }
    }

    #[test]
    fn renders_caret_under_column() {
        let d = Diagnostic::error(at(12, 5), "bad", "abc defg");
        assert_eq!(
            render(&d),
            "cyrus.conf:12:5: error: bad\n   |\n12 | abc defg\n   |     ^\n"
        );
    }

    #[test]
    fn keeps_tabs_for_alignment() {
        let d = Diagnostic::warning(at(3, 3), "w", "\t\tx");
        assert_eq!(
            render(&d),
            "cyrus.conf:3:3: warning: w\n  |\n3 | \t\tx\n  | \t\t^\n"
        );
    }

    #[test]
    fn caret_past_end_of_line() {
        let d = Diagnostic::error(at(1, 4), "e", "ab");
        assert!(render(&d).ends_with("1 | ab\n  |    ^\n"));
    }

    #[test]
    fn file_level_diagnostic_is_one_line() {
        let d = Diagnostic::file_error("x.conf", "cannot read");
        assert_eq!(render(&d), "x.conf: error: cannot read\n");
    }

    #[test]
    fn control_bytes_are_escaped_and_long_text_is_cut() {
        let d = Diagnostic::error(at(1, 3), "unknown key \"\x1b[31m\"", "ab\x1b[31mcd");
        let text = render(&d);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.starts_with("cyrus.conf:1:3: error: unknown key \"\\x1b[31m\"\n"));
        let long = "x".repeat(5000);
        let d = Diagnostic::error(at(2, 4000), format!("bad {long}"), &long);
        let text = render(&d);
        assert!(text.len() < 700, "{} bytes", text.len());
        assert_eq!(text.lines().count(), 3, "no caret past the cut: {text}");
    }

    #[test]
    fn an_unreadable_file_says_so() {
        // 24: EMFILE on Linux.
        let err = std::io::Error::from_raw_os_error(24);
        let d = Diagnostic::unreadable("/etc/cyrus.conf", &err);
        assert!(d.unreadable && d.is_error());
        assert_eq!(
            render(&d),
            "error: cannot read /etc/cyrus.conf: Too many open files\n"
        );
    }

    #[test]
    fn many_diagnostics_are_capped_with_a_count() {
        let mut diags: Vec<Diagnostic> = (1..=1000)
            .map(|n| Diagnostic::error(at(n, 1), "bad", "junk"))
            .collect();
        diags.push(Diagnostic::warning(at(1001, 1), "odd", "junk"));
        let shown = render_capped(&diags);
        let lines: usize = shown.iter().map(|(_, t)| t.lines().count()).sum();
        assert!(lines <= MAX_LINES + 1, "{lines} lines");
        let (severity, last) = shown.last().unwrap();
        assert_eq!(*severity, Severity::Error);
        let hidden = 1001 - (shown.len() - 1);
        assert_eq!(
            last,
            &format!(
                "... and {} more errors and 1 warning (not shown)\n",
                hidden - 1
            )
        );
        let few = render_capped(&diags[..2]);
        assert_eq!(few.len(), 2);
    }
}
