//! The lexical layer of cyrus.conf, as Cyrus's masterconf.c reads it: lines, `#` comments
//! (which start anywhere, even inside quotes), names, and `key=value` arguments.

/// Cyrus's `Uisspace`: the C locale's isspace.
pub(crate) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Cyrus's `Uisalnum`: ASCII letters and digits (names and keys are made of these).
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// One physical line of the file.
#[derive(Debug, Clone)]
pub(crate) struct Line<'a> {
    /// 1-based line number.
    pub number: u32,
    /// The line as written, without its end-of-line characters (for display).
    pub text: &'a str,
    /// The characters before any `#`: what the grammar sees.
    pub chars: Vec<char>,
    /// The comment (from `#` on), when there is one.
    pub comment: Option<String>,
}

impl Line<'_> {
    /// Index of the first non-space character, if any.
    pub fn first_non_space(&self) -> Option<usize> {
        self.chars.iter().position(|&c| !is_space(c))
    }
}

/// Splits a file into lines and strips comments. As in Cyrus, `#` ends the line's content
/// wherever it stands, quotes included.
pub(crate) fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut number: u32 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (raw, next) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        rest = next;
        number = number.saturating_add(1);
        let shown = raw.strip_suffix('\r').unwrap_or(raw);
        let (content, comment) = match raw.find('#') {
            Some(i) => (&raw[..i], Some(raw[i..].to_string())),
            None => (raw, None),
        };
        out.push(Line {
            number,
            text: shown,
            chars: content.chars().collect(),
            comment,
        });
    }
    out
}

/// One `key=value` argument of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arg {
    pub key: String,
    /// 1-based column of the key.
    pub key_col: u32,
    pub value: String,
    /// 1-based column of the value (of its opening quote when quoted).
    pub value_col: u32,
    pub quoted: bool,
}

/// A problem found while scanning a line: 0-based character index, message, and whether it
/// is only a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub index: usize,
    pub message: String,
    pub warning: bool,
}

impl Issue {
    fn error(index: usize, message: impl Into<String>) -> Self {
        Issue {
            index,
            message: message.into(),
            warning: false,
        }
    }
    fn warning(index: usize, message: impl Into<String>) -> Self {
        Issue {
            index,
            message: message.into(),
            warning: true,
        }
    }
}

/// 1-based column from a 0-based index.
pub(crate) fn col(index: usize) -> u32 {
    u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX)
}

/// Shows a character in a message: printable ones as themselves, others escaped.
pub(crate) fn show_char(c: char) -> String {
    if c.is_control() || is_space(c) {
        c.escape_default().to_string()
    } else {
        c.to_string()
    }
}

/// What scanning an entry line found.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScannedEntry {
    /// The entry name and its 0-based index; None when the name itself is bad.
    pub name: Option<(String, usize)>,
    pub args: Vec<Arg>,
    pub issues: Vec<Issue>,
    /// Index of a `}` found where an argument should start: the entry line also closes the
    /// section (Cyrus rejects this; we report it and recover).
    pub closing_brace: Option<usize>,
    /// True when the comment cut a quoted value short.
    pub unterminated: bool,
}

/// Scans `name key=value key="quoted value" ...` starting at `start` (the first non-space).
/// Every problem is recorded; scanning goes on after each where it can, so one line can
/// report several.
pub(crate) fn scan_entry(chars: &[char], start: usize) -> ScannedEntry {
    let mut out = ScannedEntry::default();
    let mut i = start;
    while chars.get(i).copied().is_some_and(is_name_char) {
        i += 1;
    }
    match chars.get(i).copied() {
        Some(c) if !is_space(c) => {
            out.issues.push(Issue::error(
                i,
                format!(
                    "bad character `{}` in name (entry names are letters and digits only)",
                    show_char(c)
                ),
            ));
            return out;
        }
        _ => {}
    }
    out.name = Some((chars[start..i].iter().collect(), start));

    loop {
        while chars.get(i).copied().is_some_and(is_space) {
            i += 1;
        }
        let Some(&first) = chars.get(i) else {
            return out;
        };
        if first == '}' {
            out.closing_brace = Some(i);
            return out;
        }
        let key_start = i;
        while chars.get(i).copied().is_some_and(is_name_char) {
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect();
        match chars.get(i).copied() {
            Some('=') if !key.is_empty() => {}
            Some('=') => {
                out.issues
                    .push(Issue::error(key_start, "missing key before `=`"));
                skip_word(chars, &mut i);
                continue;
            }
            None => {
                out.issues.push(Issue::error(
                    key_start,
                    format!("expected `key=value`, found `{key}` with no `=`"),
                ));
                return out;
            }
            Some(c) if is_space(c) => {
                out.issues.push(Issue::error(
                    key_start,
                    format!("expected `key=value`, found `{key}` with no `=`"),
                ));
                continue;
            }
            Some(c) => {
                out.issues.push(Issue::error(
                    i,
                    format!(
                        "bad character `{}` in argument (keys are letters and digits only)",
                        show_char(c)
                    ),
                ));
                skip_word(chars, &mut i);
                continue;
            }
        }
        i += 1; // the '='
        if !scan_value(chars, &mut i, key, key_start, &mut out) {
            return out;
        }
    }
}

/// Scans the value after `key=` at `*i`, leaving `*i` after it; false when the line ends in
/// an unterminated quote (nothing more to scan).
fn scan_value(
    chars: &[char],
    i: &mut usize,
    key: String,
    key_start: usize,
    out: &mut ScannedEntry,
) -> bool {
    let value_start = *i;
    if chars.get(*i) == Some(&'"') {
        let body = *i + 1;
        let Some(len) = chars[body..].iter().position(|&c| c == '"') else {
            out.issues
                .push(Issue::error(value_start, "unterminated quoted value"));
            out.unterminated = true;
            return false;
        };
        let value: String = chars[body..body + len].iter().collect();
        *i = body + len + 1;
        out.args.push(Arg {
            key,
            key_col: col(key_start),
            value,
            value_col: col(value_start),
            quoted: true,
        });
        if chars.get(*i).is_some_and(|&c| !is_space(c)) {
            out.issues.push(Issue::warning(
                *i,
                "missing space after quoted value (Cyrus reads on as if there were one)",
            ));
        }
    } else {
        while chars.get(*i).copied().is_some_and(|c| !is_space(c)) {
            *i += 1;
        }
        out.args.push(Arg {
            key,
            key_col: col(key_start),
            value: chars[value_start..*i].iter().collect(),
            value_col: col(value_start),
            quoted: false,
        });
    }
    true
}

fn skip_word(chars: &[char], i: &mut usize) {
    while chars.get(*i).copied().is_some_and(|c| !is_space(c)) {
        *i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(s: &str) -> ScannedEntry {
        let chars: Vec<char> = s.chars().collect();
        let start = chars.iter().position(|&c| !is_space(c)).unwrap_or(0);
        scan_entry(&chars, start)
    }

    #[test]
    fn comment_cuts_anywhere_even_in_quotes() {
        let ls = lines("a cmd=\"x # y\"\n# all\n");
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[0].chars.iter().collect::<String>(), "a cmd=\"x ");
        assert_eq!(ls[0].comment.as_deref(), Some("# y\""));
        assert!(ls[1].chars.is_empty());
    }

    #[test]
    fn line_numbers_and_crlf() {
        let ls = lines("a\r\nb\n\nc");
        assert_eq!(ls.len(), 4);
        assert_eq!(ls[0].text, "a");
        assert_eq!(ls[3].number, 4);
    }

    #[test]
    fn entry_with_bare_and_quoted_values() {
        let e = scan("  imap cmd=\"imapd -U 30\" listen=imap prefork=0");
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        assert_eq!(e.name, Some(("imap".into(), 2)));
        assert_eq!(e.args.len(), 3);
        assert_eq!(e.args[0].value, "imapd -U 30");
        assert_eq!(e.args[0].key_col, 8);
        assert_eq!(e.args[0].value_col, 12);
        assert!(e.args[0].quoted);
        assert_eq!(e.args[1].value, "imap");
    }

    #[test]
    fn bad_name_character_points_at_it() {
        let e = scan("squatter_1 cmd=x");
        assert_eq!(e.name, None);
        assert_eq!(e.issues[0].index, 8);
        assert!(e.issues[0].message.contains("`_`"));
    }

    #[test]
    fn unterminated_quote() {
        let e = scan("a cmd=\"x");
        assert_eq!(e.issues[0].message, "unterminated quoted value");
        assert_eq!(e.issues[0].index, 6);
        assert!(e.unterminated);
    }

    #[test]
    fn several_issues_on_one_line() {
        let e = scan("a b-c=1 nokey d=2 =3");
        assert_eq!(e.issues.len(), 3, "{:?}", e.issues);
        assert_eq!(e.args.len(), 1);
        assert_eq!(e.args[0].key, "d");
    }

    #[test]
    fn brace_after_arguments() {
        let e = scan("a cmd=x }");
        assert_eq!(e.closing_brace, Some(8));
    }

    #[test]
    fn empty_value_and_no_space_after_quote() {
        let e = scan("a cmd= x=\"1\"y=2");
        assert_eq!(e.args.len(), 3);
        assert_eq!(e.args[0].value, "");
        assert!(e.issues[0].warning);
    }
}
