//! The structure of cyrus.conf: `NAME {` ... `}` sections holding one entry per line.
//! Turns text into raw entries per section, reporting every structural error and going on.

use super::diagnostic::Diagnostic;
use super::lexer::{self, col, is_name_char, is_space, Arg, Line};
use super::model::Location;

/// The four sections Cyrus's master reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Start,
    Services,
    Events,
    Daemon,
}

impl Section {
    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "START" => Some(Section::Start),
            "SERVICES" => Some(Section::Services),
            "EVENTS" => Some(Section::Events),
            "DAEMON" => Some(Section::Daemon),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Section::Start => "START",
            Section::Services => "SERVICES",
            Section::Events => "EVENTS",
            Section::Daemon => "DAEMON",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An entry as written: name, arguments, where.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub name: String,
    pub location: Location,
    pub source_line: String,
    pub args: Vec<Arg>,
}

impl RawEntry {
    /// Location of a column on this entry's line.
    pub fn at(&self, col: u32) -> Location {
        Location {
            col,
            ..self.location.clone()
        }
    }
}

/// Entries of each section, in file order.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawConfig {
    pub sections: [Vec<RawEntry>; 4],
}

impl RawConfig {
    pub fn section(&self, s: Section) -> &[RawEntry] {
        &self.sections[s.index()]
    }
}

enum State {
    Outside,
    /// Inside a section; `keep` is None for a skipped one (unknown or repeated).
    Inside {
        keep: Option<Section>,
        name: String,
        opened: Location,
        opened_line: String,
    },
    /// A section name without `{`: the brace may follow on the next line.
    ExpectBrace {
        keep: Option<Section>,
        name: String,
        opened: Location,
        opened_line: String,
    },
}

struct Ctx<'f> {
    file: &'f str,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn loc(&self, line: &Line, index: usize) -> Location {
        Location {
            file: self.file.to_string(),
            line: line.number,
            col: col(index),
        }
    }
    fn error(&mut self, line: &Line, index: usize, msg: impl Into<String>) {
        let d = Diagnostic::error(self.loc(line, index), msg, line.text);
        self.diags.push(d);
    }
    fn warning(&mut self, line: &Line, index: usize, msg: impl Into<String>) {
        let d = Diagnostic::warning(self.loc(line, index), msg, line.text);
        self.diags.push(d);
    }
}

/// Parses the section structure and entries of a cyrus.conf.
pub(crate) fn parse(file: &str, text: &str) -> (RawConfig, Vec<Diagnostic>) {
    let mut ctx = Ctx {
        file,
        diags: Vec::new(),
    };
    let mut raw = RawConfig::default();
    let mut seen = [false; 4];
    let mut state = State::Outside;

    for line in lexer::lines(text) {
        let Some(start) = line.first_non_space() else {
            continue;
        };
        state = match state {
            State::ExpectBrace {
                keep,
                name,
                opened,
                opened_line,
            } => {
                if line.chars[start] == '{' {
                    trailing_after_brace(&mut ctx, &line, start + 1);
                    State::Inside {
                        keep,
                        name,
                        opened,
                        opened_line,
                    }
                } else {
                    // Treat the section as open anyway and read this line inside it.
                    let inside = State::Inside {
                        keep,
                        name,
                        opened,
                        opened_line,
                    };
                    inside_line(&mut ctx, &mut raw, &line, start, inside)
                }
            }
            State::Outside => outside_line(&mut ctx, &line, start, &mut seen),
            inside @ State::Inside { .. } => inside_line(&mut ctx, &mut raw, &line, start, inside),
        };
    }

    match state {
        State::Outside => {}
        State::Inside {
            name,
            opened,
            opened_line,
            ..
        }
        | State::ExpectBrace {
            name,
            opened,
            opened_line,
            ..
        } => {
            ctx.diags.push(Diagnostic::error(
                opened,
                format!("section `{name}` is never closed (missing `}}`)"),
                &opened_line,
            ));
        }
    }
    (raw, ctx.diags)
}

fn trailing_after_brace(ctx: &mut Ctx, line: &Line, from: usize) {
    if let Some(i) = (from..line.chars.len()).find(|&i| !is_space(line.chars[i])) {
        if line.chars[i] == '}' {
            // `NAME { }`: an empty section, closed on the same line.
            return;
        }
        ctx.error(
            line,
            i,
            "unexpected text after `{` (entries go on lines of their own)",
        );
    }
}

/// The section named `name` if it is a known one seen for the first time; a second one of a
/// kind is ignored, as Cyrus does.
fn first_of_its_kind(
    ctx: &mut Ctx,
    line: &Line,
    start: usize,
    name: &str,
    seen: &mut [bool; 4],
) -> Option<Section> {
    match Section::from_name(name) {
        Some(s) if seen[s.index()] => {
            ctx.warning(
                line,
                start,
                format!(
                    "second `{}` section is ignored (Cyrus reads only the first)",
                    s.name()
                ),
            );
            None
        }
        Some(s) => {
            seen[s.index()] = true;
            Some(s)
        }
        None => None,
    }
}

fn outside_line(ctx: &mut Ctx, line: &Line, start: usize, seen: &mut [bool; 4]) -> State {
    let chars = &line.chars;
    if chars[start] == '}' {
        ctx.error(line, start, "stray `}` outside any section");
        return State::Outside;
    }
    let mut i = start;
    while chars.get(i).copied().is_some_and(is_name_char) {
        i += 1;
    }
    if i == start {
        ctx.error(
            line,
            start,
            "expected a section (`START {`, `SERVICES {`, `EVENTS {` or `DAEMON {`)",
        );
        return State::Outside;
    }
    let name: String = chars[start..i].iter().collect();
    let mut j = i;
    while chars.get(j).copied().is_some_and(is_space) {
        j += 1;
    }
    let opened = ctx.loc(line, start);
    let opened_line = line.text.to_string();
    let keep = first_of_its_kind(ctx, line, start, &name, seen);
    match chars.get(j) {
        Some('{') => {
            if keep.is_none() && Section::from_name(&name).is_none() {
                ctx.warning(line, start, format!("unknown section `{name}` is skipped"));
            }
            let empty_close = (j + 1..chars.len())
                .find(|&k| !is_space(chars[k]))
                .is_some_and(|k| chars[k] == '}');
            trailing_after_brace(ctx, line, j + 1);
            if empty_close {
                return State::Outside;
            }
            State::Inside {
                keep,
                name,
                opened,
                opened_line,
            }
        }
        None if Section::from_name(&name).is_some() => {
            ctx.error(
                line,
                j,
                format!("expected `{{` after `{name}` (on the same line, as Cyrus requires)"),
            );
            State::ExpectBrace {
                keep,
                name,
                opened,
                opened_line,
            }
        }
        _ => {
            ctx.error(
                line,
                start,
                "expected a section (`START {`, `SERVICES {`, `EVENTS {` or `DAEMON {`)",
            );
            State::Outside
        }
    }
}

fn inside_line(
    ctx: &mut Ctx,
    raw: &mut RawConfig,
    line: &Line,
    start: usize,
    state: State,
) -> State {
    let State::Inside { ref keep, .. } = state else {
        return state;
    };
    let keep = *keep;
    let chars = &line.chars;
    if chars[start] == '}' {
        if let Some(k) = (start + 1..chars.len()).find(|&k| !is_space(chars[k])) {
            ctx.warning(line, k, "text after `}` is ignored");
        }
        return State::Outside;
    }
    let Some(section) = keep else {
        // Skipped section: Cyrus only looks for its closing brace.
        return state;
    };
    let scanned = lexer::scan_entry(chars, start);
    for issue in &scanned.issues {
        let mut message = issue.message.clone();
        if scanned.unterminated && line.comment.as_deref().is_some_and(|c| c.contains('"')) {
            message.push_str(" (`#` starts a comment even inside quotes, as in Cyrus)");
        }
        if issue.warning {
            ctx.warning(line, issue.index, message);
        } else {
            ctx.error(line, issue.index, message);
        }
    }
    let had_errors = scanned.issues.iter().any(|i| !i.warning);
    if let (Some((name, index)), false) = (scanned.name, had_errors) {
        raw.sections[section.index()].push(RawEntry {
            name,
            location: ctx.loc(line, index),
            source_line: line.text.to_string(),
            args: scanned.args,
        });
    }
    if let Some(b) = scanned.closing_brace {
        ctx.error(
            line,
            b,
            "`}` must start a line of its own (Cyrus rejects it here)",
        );
        return State::Outside;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> RawConfig {
        let (raw, diags) = parse("c", text);
        assert!(diags.is_empty(), "{diags:?}");
        raw
    }

    fn messages(text: &str) -> Vec<(u32, u32, String)> {
        parse("c", text)
            .1
            .into_iter()
            .map(|d| (d.location.line, d.location.col, d.message))
            .collect()
    }

    #[test]
    fn sections_and_entries() {
        let raw = parse_ok(
            "# head\nSTART {\n  recover cmd=\"ctl_cyrusdb -r\"\n}\nservices {\n imap cmd=imapd listen=imap\n}\nEVENTS { }\n",
        );
        assert_eq!(raw.section(Section::Start).len(), 1);
        assert_eq!(raw.section(Section::Start)[0].name, "recover");
        assert_eq!(raw.section(Section::Start)[0].location.line, 3);
        assert_eq!(raw.section(Section::Start)[0].location.col, 3);
        assert_eq!(raw.section(Section::Services)[0].args.len(), 2);
        assert!(raw.section(Section::Events).is_empty());
    }

    #[test]
    fn unknown_section_is_skipped_with_a_warning() {
        let (raw, diags) = parse("c", "FOO {\n x=1 bad!\n}\nDAEMON {\n d cmd=x\n}\n");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].message, "unknown section `FOO` is skipped");
        assert_eq!(raw.section(Section::Daemon).len(), 1);
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            messages("}\nSTART {\n a cmd=x\n"),
            vec![
                (1, 1, "stray `}` outside any section".to_string()),
                (
                    2,
                    1,
                    "section `START` is never closed (missing `}`)".to_string()
                ),
            ]
        );
        assert_eq!(
            messages("junk here\n"),
            vec![(
                1,
                1,
                "expected a section (`START {`, `SERVICES {`, `EVENTS {` or `DAEMON {`)"
                    .to_string()
            )]
        );
        assert_eq!(
            messages("SERVICES\n{\n a cmd=x listen=1\n}\n"),
            vec![(
                1,
                9,
                "expected `{` after `SERVICES` (on the same line, as Cyrus requires)".to_string()
            )]
        );
    }

    #[test]
    fn hash_in_quotes_hints() {
        let m = messages("START {\n a cmd=\"x # y\"\n}\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].1, 8);
        assert!(m[0].2.starts_with("unterminated quoted value (`#`"));
    }

    #[test]
    fn second_section_is_ignored() {
        let (raw, diags) = parse("c", "START {\n a cmd=x\n}\nSTART {\n b cmd=y\n}\n");
        assert_eq!(raw.section(Section::Start).len(), 1);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.starts_with("second `START` section"));
    }

    #[test]
    fn brace_at_end_of_entry() {
        let (raw, diags) = parse("c", "START {\n a cmd=x }\nEVENTS {\n}\n");
        assert_eq!(raw.section(Section::Start).len(), 1);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].location.col, 10);
    }
}
