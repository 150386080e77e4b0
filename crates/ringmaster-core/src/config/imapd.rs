//! imapd.conf: the `key: value` file of which the master needs a few options. Read as Cyrus's
//! lib/libconfig.c reads it: `#` comments on lines of their own, keys of letters, digits,
//! `-` and `_` folded to lower case, a trailing `\` continuing a line, `@include: file`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostic;
use super::model::Location;

/// The options of an imapd.conf, keys lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImapdConf {
    pub options: HashMap<String, String>,
}

impl ImapdConf {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// `configdirectory`: Cyrus's state directory.
    pub fn configdirectory(&self) -> Option<&str> {
        self.get("configdirectory")
    }

    /// `cyrus_user`: who Cyrus runs as.
    pub fn cyrus_user(&self) -> Option<&str> {
        self.get("cyrus_user")
    }

    /// `cyrus_group`: the group Cyrus runs as.
    pub fn cyrus_group(&self) -> Option<&str> {
        self.get("cyrus_group")
    }

    /// `master_ready_file`: created once the master listens on every service.
    pub fn master_ready_file(&self) -> Option<&str> {
        self.get("master_ready_file")
    }

    /// `master_pid_file`: where the master writes its pid.
    pub fn master_pid_file(&self) -> Option<&str> {
        self.get("master_pid_file")
    }

    /// `servername`: the server's name.
    pub fn servername(&self) -> Option<&str> {
        self.get("servername")
    }

    /// `master_bind_errors_fatal`: a bind failure at start-up stops the master. Read as
    /// Cyrus reads a switch: 1, yes, on, t, true.
    pub fn master_bind_errors_fatal(&self) -> bool {
        self.get("master_bind_errors_fatal").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "yes" | "y" | "on" | "t" | "true"
            )
        })
    }

    /// `syslog_prefix`: prepended to the syslog ident.
    pub fn syslog_prefix(&self) -> Option<&str> {
        self.get("syslog_prefix")
    }
}

/// Where each option was first given, to report duplicates across included files.
type Seen = HashMap<String, Location>;

struct Reader<'r> {
    read: &'r mut dyn FnMut(&str) -> Result<String, String>,
    conf: ImapdConf,
    seen: Seen,
    diags: Vec<Diagnostic>,
    /// Files being read, to refuse include loops.
    stack: Vec<String>,
}

impl Reader<'_> {
    fn text(&mut self, file: &str, text: &str) {
        self.stack.push(file.to_string());
        let mut logical = String::new();
        let mut parts: Vec<Part> = Vec::new();
        let mut number: u32 = 0;
        for raw in text.split('\n') {
            number = number.saturating_add(1);
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            parts.push(Part {
                number,
                start: logical.chars().count(),
                text: raw.to_string(),
            });
            if let Some(cont) = raw.strip_suffix('\\') {
                logical.push_str(cont);
                continue;
            }
            logical.push_str(raw);
            let line = std::mem::take(&mut logical);
            self.line(file, &std::mem::take(&mut parts), &line);
        }
        if !logical.is_empty() {
            let line = std::mem::take(&mut logical);
            self.line(file, &parts, &line);
        }
        self.stack.pop();
    }

    /// Reads one logical line, made of the physical `parts` (more than one when lines end
    /// in `\\`).
    fn line(&mut self, file: &str, parts: &[Part], line: &str) {
        let at = |index: usize| locate(file, parts, index).0;
        let shown_at = |index: usize| locate(file, parts, index).1;
        let chars: Vec<char> = line.chars().collect();
        let Some(start) = chars.iter().position(|c| !c.is_ascii_whitespace()) else {
            return;
        };
        if chars[start] == '#' {
            return;
        }
        let mut i = start;
        if chars[i] == '@' {
            i += 1;
        }
        while chars
            .get(i)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            i += 1;
        }
        if chars.get(i) != Some(&':') {
            let msg = match chars.get(i) {
                Some(c) if !c.is_ascii_whitespace() && *c != '=' => {
                    format!("invalid option name: bad character `{c}`")
                }
                _ => "invalid option name: expected `key: value`".to_string(),
            };
            self.diags.push(Diagnostic::error(at(i), msg, shown_at(i)));
            return;
        }
        let key: String = chars[start..i]
            .iter()
            .collect::<String>()
            .to_ascii_lowercase();
        if key.is_empty() || key == "@" {
            self.diags.push(Diagnostic::error(
                at(start),
                "missing option name before `:`",
                shown_at(start),
            ));
            return;
        }
        let value: String = chars[i + 1..].iter().collect();
        let value = value
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .to_string();
        if value.is_empty() {
            self.diags.push(Diagnostic::error(
                at(i),
                format!("empty value for option `{key}`"),
                shown_at(i),
            ));
            return;
        }
        if let Some(directive) = key.strip_prefix('@') {
            let (location, shown) = (at(start), shown_at(start));
            self.directive(directive, &key, &value, location, shown);
            return;
        }
        if let Some(first) = self.seen.get(&key) {
            let msg = format!("option `{key}` given twice (first at {first})");
            self.diags
                .push(Diagnostic::error(at(start), msg, shown_at(start)));
            return;
        }
        self.seen.insert(key.clone(), at(start));
        self.conf.options.insert(key, value);
    }

    /// A directive line (`@include: file`); `key` as written, `value` its argument.
    fn directive(
        &mut self,
        directive: &str,
        key: &str,
        value: &str,
        location: Location,
        shown: &str,
    ) {
        if directive != "include" {
            self.diags.push(Diagnostic::error(
                location,
                format!("unknown directive `{key}` (only `@include` exists)"),
                shown,
            ));
            return;
        }
        if self.stack.iter().any(|f| f == value) {
            self.diags.push(Diagnostic::error(
                location,
                format!("`{value}` is included twice"),
                shown,
            ));
            return;
        }
        match (self.read)(value) {
            Ok(text) => self.text(value, &text),
            Err(e) => self.diags.push(Diagnostic::error(
                location,
                format!("cannot read included `{value}`: {e}"),
                shown,
            )),
        }
    }
}

/// One physical line of a logical (continued) line.
struct Part {
    number: u32,
    /// Character index in the logical line where this physical line's text starts.
    start: usize,
    /// The physical line as written, for display.
    text: String,
}

/// The location and displayed text of character `index` of a logical line: inside the
/// physical line holding it, so a column never runs past the line it names. An index past
/// the end points just after the last line's text.
fn locate<'p>(file: &str, parts: &'p [Part], index: usize) -> (Location, &'p str) {
    let part = parts
        .iter()
        .rev()
        .find(|p| p.start <= index)
        .or_else(|| parts.first());
    let (number, col, text) = match part {
        Some(p) => {
            let len = p.text.chars().count();
            (
                p.number,
                index.saturating_sub(p.start).min(len),
                p.text.as_str(),
            )
        }
        None => (0, index, ""),
    };
    let location = Location {
        file: file.to_string(),
        line: number,
        col: u32::try_from(col.saturating_add(1)).unwrap_or(u32::MAX),
    };
    (location, text)
}

/// Parses imapd.conf text, reading `@include`d files with `read` (given the path as
/// written). Every problem is reported.
pub fn parse_imapd_conf_with(
    file_name: &str,
    text: &str,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
) -> (ImapdConf, Vec<Diagnostic>) {
    let mut reader = Reader {
        read,
        conf: ImapdConf::default(),
        seen: Seen::new(),
        diags: Vec::new(),
        stack: Vec::new(),
    };
    reader.text(file_name, text);
    (reader.conf, reader.diags)
}

/// Parses imapd.conf text; `@include` is reported as an error (no file system here).
pub fn parse_imapd_conf(file_name: &str, text: &str) -> (ImapdConf, Vec<Diagnostic>) {
    parse_imapd_conf_with(file_name, text, &mut |_| {
        Err("includes are not followed when parsing text".to_string())
    })
}

fn read_file(path: &Path) -> std::io::Result<String> {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads an imapd.conf and the files it includes, reporting every problem. Err only when the
/// file itself cannot be read (a missing imapd.conf is for the caller to judge).
pub fn load_imapd_conf_all(path: &Path) -> Result<(ImapdConf, Vec<Diagnostic>), std::io::Error> {
    let text = read_file(path)?;
    let mut read = |p: &str| read_file(&PathBuf::from(p)).map_err(|e| e.to_string());
    Ok(parse_imapd_conf_with(
        &path.display().to_string(),
        &text,
        &mut read,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_options() {
        let (conf, diags) = parse_imapd_conf(
            "imapd.conf",
            "# comment\n\nconfigdirectory: /var/lib/cyrus\n  ServerName:   mail.example.org  \n\
             partition-default: /var/spool/cyrus/mail\nsasl_pwcheck_method: saslauthd\n\
             admins: a \\\nb\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(conf.configdirectory(), Some("/var/lib/cyrus"));
        assert_eq!(conf.servername(), Some("mail.example.org"));
        assert_eq!(conf.get("partition-default"), Some("/var/spool/cyrus/mail"));
        assert_eq!(conf.get("admins"), Some("a b"));
        assert_eq!(conf.cyrus_user(), None);
    }

    #[test]
    fn hash_inside_a_value_is_kept() {
        let (conf, _) = parse_imapd_conf("f", "servername: a#b\n");
        assert_eq!(conf.servername(), Some("a#b"));
    }

    #[test]
    fn errors() {
        let (_, diags) = parse_imapd_conf(
            "f",
            "key = value\nbad key: x\nempty:\nx: 1\nX: 2\n@foo: bar\n: v\n",
        );
        let got: Vec<(u32, u32, &str)> = diags
            .iter()
            .map(|d| (d.location.line, d.location.col, d.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 4, "invalid option name: expected `key: value`"),
                (2, 4, "invalid option name: expected `key: value`"),
                (3, 6, "empty value for option `empty`"),
                (5, 1, "option `x` given twice (first at f:4:1)"),
                (6, 1, "unknown directive `@foo` (only `@include` exists)"),
                (7, 1, "missing option name before `:`"),
            ]
        );
    }

    #[test]
    fn continued_lines_point_into_the_physical_line() {
        // Found by proptest: the column was counted along the joined line and ran past the
        // end of the line it named.
        let (_, diags) = parse_imapd_conf("f", "a\\\nSERVICES {");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].location.line, diags[0].location.col), (2, 9));
        assert_eq!(diags[0].source_line, "SERVICES {");

        let (_, diags) = parse_imapd_conf("f", "x: 1\nkey \\\n  more \\\n\nbad key: y\n");
        let got: Vec<(u32, u32, &str)> = diags
            .iter()
            .map(|d| (d.location.line, d.location.col, d.source_line.as_str()))
            .collect();
        assert_eq!(got, vec![(2, 4, "key \\"), (5, 4, "bad key: y")]);

        // An unfinished continuation at the end of the text.
        let (_, diags) = parse_imapd_conf("f", "ab\\");
        assert_eq!((diags[0].location.line, diags[0].location.col), (1, 3));
    }

    #[test]
    fn includes_are_followed_and_loops_refused() {
        let mut read = |p: &str| match p {
            "/a" => Ok("servername: s\n@include: /b\n".to_string()),
            "/b" => Ok("@include: /a\n".to_string()),
            _ => Err("no such file".to_string()),
        };
        let (conf, diags) =
            parse_imapd_conf_with("main", "@include: /a\n@include: /nope\n", &mut read);
        assert_eq!(conf.servername(), Some("s"));
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags[0].message.contains("included twice"));
        assert!(diags[1].message.starts_with("cannot read included `/nope`"));
    }
}
