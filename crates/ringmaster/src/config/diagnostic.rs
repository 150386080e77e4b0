//! Errors and warnings about a configuration file, pointing at file:line:col, and their
//! rendering with the source line and a caret, like rustc.

use std::fmt;

use super::model::Location;

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
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}: {}: {}", self.location, kind, self.message)
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
        }
    }

    /// A warning at `location`, showing `source_line`.
    pub fn warning(location: Location, message: impl Into<String>, source_line: &str) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            location,
            message: message.into(),
            source_line: source_line.to_string(),
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
    let kind = match d.severity {
        Severity::Warning => "warning",
        Severity::Error => "error",
    };
    if d.location.line == 0 {
        return format!("{}: {}: {}\n", d.location.file, kind, d.message);
    }
    let mut out = format!("{}: {}: {}\n", d.location, kind, d.message);
    if d.source_line.is_empty() && d.location.col == 0 {
        return out;
    }
    let number = d.location.line.to_string();
    let pad = " ".repeat(number.len());
    // Control characters other than tab would garble the terminal: show them as spaces.
    let shown: String = d
        .source_line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    out.push_str(&format!("{pad} |\n{number} | {shown}\n"));
    if d.location.col >= 1 {
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
}
