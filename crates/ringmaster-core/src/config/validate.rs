//! From raw entries to the typed model: every key of every section with Cyrus's defaults and
//! effective values, numbers, booleans, listen addresses, schedules, names and conflicts.

use std::collections::HashMap;

use super::cron::parse_cron;
use super::diagnostic::Diagnostic;
use super::lexer::Arg;
use super::listen::parse_listen;
use super::model::*;
use super::parser::{RawConfig, RawEntry, Section};
use super::services_db::Transport;
use super::ParseEnv;

/// Default `maxfds=` of a service: 0, the inherited limit is left alone. That is what
/// Cyrus's master.c does (its documentation says 256, its code reads a default of 0).
pub const DEFAULT_MAXFDS: u64 = 0;
/// Cyrus's "reasonable safety" fork rate for a babysat service that sets none.
pub const BABYSIT_MAXFORKRATE: u32 = 10;

const START_KEYS: &[&str] = &["cmd", "user", "group"];
const SERVICE_KEYS: &[&str] = &[
    "cmd",
    "listen",
    "proto",
    "prefork",
    "maxchild",
    "maxforkrate",
    "babysit",
    "maxfds",
    "user",
    "group",
];
const EVENT_KEYS: &[&str] = &["cmd", "period", "at", "cron", "user", "group"];
const DAEMON_KEYS: &[&str] = &["cmd", "wait", "user", "group"];
/// Keys Cyrus reads in DAEMON entries that ringmaster accepts and does not use.
const DAEMON_IGNORED_KEYS: &[&str] = &["maxfds", "maxforkrate"];

struct Validator<'a> {
    env: &'a ParseEnv,
    diags: Vec<Diagnostic>,
}

/// The arguments of one entry, first occurrence of a key winning (as in Cyrus).
struct Args<'e> {
    entry: &'e RawEntry,
    section: Section,
}

impl<'e> Args<'e> {
    fn get(&self, key: &str) -> Option<&'e Arg> {
        self.entry.args.iter().find(|a| a.key == key)
    }
}

/// Column of the first character of a value (inside the quotes when quoted).
fn value_col(arg: &Arg) -> u32 {
    arg.value_col.saturating_add(u32::from(arg.quoted))
}

fn offset_col(arg: &Arg, offset: usize) -> u32 {
    value_col(arg).saturating_add(u32::try_from(offset).unwrap_or(u32::MAX))
}

impl Validator<'_> {
    fn error(&mut self, entry: &RawEntry, col: u32, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(entry.at(col), msg, &entry.source_line));
    }

    fn warning(&mut self, entry: &RawEntry, col: u32, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(entry.at(col), msg, &entry.source_line));
    }

    /// Warns about unknown and repeated keys.
    fn check_keys(&mut self, args: &Args, known: &[&str]) {
        let entry = args.entry;
        let mut seen: Vec<&str> = Vec::new();
        for arg in &entry.args {
            if seen.contains(&arg.key.as_str()) {
                self.warning(
                    entry,
                    arg.key_col,
                    format!(
                        "`{}=` given twice; the first is used (as in Cyrus)",
                        arg.key
                    ),
                );
                continue;
            }
            seen.push(&arg.key);
            if known.contains(&arg.key.as_str()) {
                continue;
            }
            if args.section == Section::Daemon && DAEMON_IGNORED_KEYS.contains(&arg.key.as_str()) {
                self.warning(
                    entry,
                    arg.key_col,
                    format!("`{}=` is ignored in DAEMON entries by ringmaster", arg.key),
                );
                continue;
            }
            let lower = arg.key.to_ascii_lowercase();
            let hint = if known.contains(&lower.as_str()) {
                format!(" (did you mean `{lower}`? keys are case-sensitive)")
            } else {
                String::new()
            };
            self.warning(
                entry,
                arg.key_col,
                format!(
                    "unknown key `{}` in {} entry `{}` is ignored{hint}",
                    arg.key,
                    args.section.name(),
                    entry.name
                ),
            );
        }
    }

    fn command(&mut self, args: &Args) -> Option<Command> {
        let entry = args.entry;
        let Some(arg) = args.get("cmd") else {
            self.error(
                entry,
                entry.location.col,
                format!(
                    "{} entry `{}` has no `cmd=`",
                    args.section.name(),
                    entry.name
                ),
            );
            return None;
        };
        let argv: Vec<String> = arg.value.split_whitespace().map(String::from).collect();
        if argv.is_empty() {
            self.error(entry, arg.value_col, "empty `cmd=`");
            return None;
        }
        Some(Command { argv })
    }

    fn run_as(&mut self, args: &Args) -> RunAs {
        let mut run_as = RunAs::default();
        for (key, slot) in [("user", &mut run_as.user), ("group", &mut run_as.group)] {
            if let Some(arg) = args.get(key) {
                if arg.value.is_empty() || arg.value.chars().any(char::is_whitespace) {
                    self.error(
                        args.entry,
                        arg.value_col,
                        format!("bad `{key}=` value `{}`", arg.value),
                    );
                } else {
                    *slot = Some(arg.value.clone());
                }
            }
        }
        run_as
    }

    /// A non-negative whole number; Err(()) after reporting when bad.
    fn number(&mut self, args: &Args, key: &str, max: u64) -> Result<Option<u64>, ()> {
        let Some(arg) = args.get(key) else {
            return Ok(None);
        };
        let text = arg.value.as_str();
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
            let what = if text.starts_with('-') && text[1..].chars().all(|c| c.is_ascii_digit()) {
                "a whole number of 0 or more"
            } else {
                "a whole number"
            };
            self.error(
                args.entry,
                arg.value_col,
                format!("`{key}` must be {what}, not `{text}`"),
            );
            return Err(());
        }
        match text.parse::<u64>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => {
                self.error(
                    args.entry,
                    arg.value_col,
                    format!("`{key}={text}` is out of range (at most {max})"),
                );
                Err(())
            }
        }
    }

    /// Cyrus's switch: 0/1, y/n, yes/no, t/f, true/false, on/off.
    fn boolean(&mut self, args: &Args, key: &str) -> Result<Option<bool>, ()> {
        let Some(arg) = args.get(key) else {
            return Ok(None);
        };
        let lower = arg.value.to_ascii_lowercase();
        let exact = match lower.as_str() {
            "0" | "n" | "no" | "f" | "false" | "off" => Some(false),
            "1" | "y" | "yes" | "t" | "true" | "on" => Some(true),
            _ => None,
        };
        if exact.is_some() {
            return Ok(exact);
        }
        // What Cyrus's masterconf_getswitch makes of it: it looks at the first letters only.
        let v = arg.value.as_bytes();
        let cyrus = match v {
            [b'0' | b'n' | b'f', ..] | [b'o', b'f', ..] => Some(false),
            [b'1' | b'y' | b't', ..] | [b'o', b'n', ..] => Some(true),
            _ => None,
        };
        match cyrus {
            Some(b) => {
                self.warning(
                    args.entry,
                    arg.value_col,
                    format!(
                        "`{key}={}` read as `{}` (from its first letters, as Cyrus does)",
                        arg.value,
                        if b { "yes" } else { "no" }
                    ),
                );
                Ok(Some(b))
            }
            None => {
                self.error(
                    args.entry,
                    arg.value_col,
                    format!(
                        "`{key}` must be yes or no (y/n, 1/0, true/false, on/off), not `{}`",
                        arg.value
                    ),
                );
                Err(())
            }
        }
    }

    fn start(&mut self, entry: &RawEntry) -> Option<StartEntry> {
        let args = Args {
            entry,
            section: Section::Start,
        };
        self.check_keys(&args, START_KEYS);
        let cmd = self.command(&args);
        let run_as = self.run_as(&args);
        Some(StartEntry {
            name: entry.name.clone(),
            cmd: cmd?,
            run_as,
            location: entry.location.clone(),
        })
    }

    fn service(&mut self, entry: &RawEntry) -> Option<ServiceEntry> {
        let args = Args {
            entry,
            section: Section::Services,
        };
        self.check_keys(&args, SERVICE_KEYS);
        let cmd = self.command(&args);
        let run_as = self.run_as(&args);
        let mut ok = true;

        let proto = self.proto(&args).unwrap_or_else(|()| {
            ok = false;
            Proto::Tcp
        });
        let transport = if proto.is_udp() {
            Transport::Udp
        } else {
            Transport::Tcp
        };

        let listen = self.listen(&args, proto, transport);

        let prefork = self.number(&args, "prefork", u64::from(u32::MAX));
        let maxforkrate = self.number(&args, "maxforkrate", u64::from(u32::MAX));
        let maxfds = self.number(&args, "maxfds", u64::MAX);
        let babysit = self.boolean(&args, "babysit");
        let maxchild = match args.get("maxchild") {
            None => Ok(None),
            Some(arg)
                if arg.value.starts_with('-')
                    && arg.value.len() > 1
                    && arg.value[1..].chars().all(|c| c.is_ascii_digit()) =>
            {
                Ok(None) // Cyrus: any negative maxchild is unlimited.
            }
            Some(_) => self.number(&args, "maxchild", u64::from(u32::MAX)),
        };
        let (Ok(prefork), Ok(maxforkrate), Ok(maxfds), Ok(babysit), Ok(maxchild)) =
            (prefork, maxforkrate, maxfds, babysit, maxchild)
        else {
            return None;
        };
        let (Some(cmd), Some(listen), true) = (cmd, listen, ok) else {
            return None;
        };
        // Bounded by `number`'s max above.
        let mut prefork = prefork.map_or(0, |n| n as u32);
        let mut maxchild = maxchild.map(|n| n as u32);
        let mut maxforkrate = maxforkrate.map_or(0, |n| n as u32);
        let babysit = babysit.unwrap_or(false);

        // Cyrus's effective values: a babysat service keeps one ready and forks at most
        // 10/s unless told otherwise.
        if babysit && prefork == 0 {
            prefork = 1;
        }
        if babysit && maxforkrate == 0 {
            maxforkrate = BABYSIT_MAXFORKRATE;
        }
        self.worker_limits(&args, proto, &mut prefork, &mut maxchild);
        Some(ServiceEntry {
            name: entry.name.clone(),
            cmd,
            listen,
            proto,
            prefork,
            maxchild,
            maxforkrate,
            babysit,
            maxfds: maxfds.unwrap_or(DEFAULT_MAXFDS),
            run_as,
            location: entry.location.clone(),
        })
    }

    /// `proto=` (tcp when absent); `Err` once an unknown one is reported.
    fn proto(&mut self, args: &Args) -> Result<Proto, ()> {
        match args.get("proto") {
            None => Ok(Proto::Tcp),
            Some(arg) => match arg.value.as_str() {
                "tcp" => Ok(Proto::Tcp),
                "tcp4" => Ok(Proto::Tcp4),
                "tcp6" => Ok(Proto::Tcp6),
                "udp" => Ok(Proto::Udp),
                "udp4" => Ok(Proto::Udp4),
                "udp6" => Ok(Proto::Udp6),
                other => {
                    let more = if other.starts_with("quic") {
                        " (QUIC services are not supported by ringmaster)"
                    } else {
                        ""
                    };
                    self.error(
                        args.entry,
                        arg.value_col,
                        format!(
                            "unknown `proto={other}`: expected tcp, tcp4, tcp6, udp, udp4 or udp6{more}"
                        ),
                    );
                    Err(())
                }
            },
        }
    }

    /// `listen=`, parsed for `transport`; None once a problem is reported.
    fn listen(&mut self, args: &Args, proto: Proto, transport: Transport) -> Option<Listen> {
        let listen = match args.get("listen") {
            None => {
                self.error(
                    args.entry,
                    args.entry.location.col,
                    format!("SERVICES entry `{}` has no `listen=`", args.entry.name),
                );
                None
            }
            Some(arg) => match parse_listen(&arg.value, transport, &self.env.services) {
                Ok(l) => Some(l),
                Err(e) => {
                    let col = if arg.value.is_empty() {
                        arg.value_col
                    } else {
                        offset_col(arg, e.offset)
                    };
                    self.error(args.entry, col, e.message);
                    None
                }
            },
        };
        if let (Some(Listen::Unix(_)), Some(arg)) = (&listen, args.get("proto")) {
            if !matches!(proto, Proto::Tcp | Proto::Udp) {
                self.warning(
                    args.entry,
                    arg.value_col,
                    format!(
                        "the address family of `proto={proto}` means nothing for a unix socket; \
                         ringmaster reads it as `{}`",
                        if proto.is_udp() { "udp" } else { "tcp" }
                    ),
                );
            }
        }
        listen
    }

    /// Cyrus's limits for what the socket is: one worker at a time on a datagram socket;
    /// warnings for a stream service whose prefork or maxchild cannot work as written.
    fn worker_limits(
        &mut self,
        args: &Args,
        proto: Proto,
        prefork: &mut u32,
        maxchild: &mut Option<u32>,
    ) {
        if proto.is_udp() {
            // Cyrus runs one worker at a time on a datagram socket.
            if let Some(arg) = args.get("maxchild") {
                if *maxchild != Some(1) {
                    self.warning(
                        args.entry,
                        arg.value_col,
                        "a UDP service runs one worker at a time; `maxchild=` is ignored",
                    );
                }
            }
            if *prefork > 1 {
                if let Some(arg) = args.get("prefork") {
                    self.warning(
                        args.entry,
                        arg.value_col,
                        "a UDP service keeps at most one worker ready; read as `prefork=1`",
                    );
                }
                *prefork = 1;
            }
            *maxchild = Some(1);
        } else {
            if let (Some(0), Some(arg)) = (*maxchild, args.get("maxchild")) {
                self.warning(
                    args.entry,
                    arg.value_col,
                    "`maxchild=0`: this service will never start a worker",
                );
            } else if let (Some(max), Some(arg)) = (*maxchild, args.get("prefork")) {
                if *prefork > max {
                    self.warning(
                        args.entry,
                        arg.value_col,
                        format!("`prefork={}` is more than `maxchild={max}`; at most {max} will be ready", *prefork),
                    );
                }
            }
        }
    }

    /// `at=` (HHMM), None when absent; `Err` once a bad one is reported.
    fn time_of_day(&mut self, args: &Args) -> Result<Option<TimeOfDay>, ()> {
        match args.get("at") {
            None => Ok(None),
            Some(arg) => {
                let text = arg.value.as_str();
                let n = if !text.is_empty()
                    && text.len() <= 4
                    && text.chars().all(|c| c.is_ascii_digit())
                {
                    text.parse::<u32>().ok()
                } else {
                    None
                };
                match n {
                    Some(n) if n / 100 <= 23 && n % 100 <= 59 => Ok(Some(TimeOfDay {
                        hour: (n / 100) as u8,
                        minute: (n % 100) as u8,
                    })),
                    _ => {
                        self.error(
                            args.entry,
                            arg.value_col,
                            format!("`at={text}` is not a time of day (HHMM, from 0000 to 2359)"),
                        );
                        Err(())
                    }
                }
            }
        }
    }

    fn event(&mut self, entry: &RawEntry) -> Option<EventEntry> {
        let args = Args {
            entry,
            section: Section::Events,
        };
        self.check_keys(&args, EVENT_KEYS);
        let cmd = self.command(&args);
        let run_as = self.run_as(&args);
        let period = self.number(&args, "period", u64::from(u32::MAX));
        let at = self.time_of_day(&args);
        let cron = match args.get("cron") {
            None => Ok(None),
            Some(arg) => match parse_cron(&arg.value) {
                Ok(spec) => Ok(Some(spec)),
                Err(e) => {
                    self.error(entry, offset_col(arg, e.offset), e.message);
                    Err(())
                }
            },
        };
        let (Ok(period), Ok(at), Ok(cron)) = (period, at, cron) else {
            return None;
        };
        let schedule = match (cron, at, period) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                let col = args.get("cron").map_or(entry.location.col, |a| a.key_col);
                self.error(
                    entry,
                    col,
                    "`cron=` cannot be combined with `at=` or `period=`",
                );
                return None;
            }
            (Some(spec), None, None) => Schedule::Cron(spec),
            (None, Some(time), period) => {
                if let (Some(p), Some(arg)) = (period, args.get("period")) {
                    if p != 0 {
                        self.warning(
                            entry,
                            arg.key_col,
                            format!(
                                "`period=` is ignored when `at=` is given: this event runs daily at {:02}:{:02} (as in Cyrus)",
                                time.hour, time.minute
                            ),
                        );
                    }
                }
                Schedule::Daily(time)
            }
            (None, None, period) => Schedule::Period {
                minutes: period.map_or(0, |p| p as u32),
            },
        };
        Some(EventEntry {
            name: entry.name.clone(),
            cmd: cmd?,
            schedule,
            run_as,
            location: entry.location.clone(),
        })
    }

    fn daemon(&mut self, entry: &RawEntry) -> Option<DaemonEntry> {
        let args = Args {
            entry,
            section: Section::Daemon,
        };
        self.check_keys(&args, DAEMON_KEYS);
        let cmd = self.command(&args);
        let run_as = self.run_as(&args);
        let wait = self.boolean(&args, "wait").ok()?;
        Some(DaemonEntry {
            name: entry.name.clone(),
            cmd: cmd?,
            wait: wait.unwrap_or(false),
            run_as,
            location: entry.location.clone(),
        })
    }

    /// Duplicate names within a section; DAEMON names may not repeat SERVICES names either
    /// (Cyrus keeps both in one table).
    fn names(&mut self, raw: &RawConfig) {
        let mut services: HashMap<&str, &RawEntry> = HashMap::new();
        for section in [
            Section::Start,
            Section::Services,
            Section::Events,
            Section::Daemon,
        ] {
            let mut seen: HashMap<&str, &RawEntry> = HashMap::new();
            for entry in raw.section(section) {
                if let Some(first) = seen.get(entry.name.as_str()) {
                    let msg = format!(
                        "duplicate {} entry `{}` (first at line {})",
                        section.name(),
                        entry.name,
                        first.location.line
                    );
                    self.error(entry, entry.location.col, msg);
                    continue;
                }
                seen.insert(&entry.name, entry);
                if section == Section::Services {
                    services.insert(&entry.name, entry);
                } else if section == Section::Daemon {
                    if let Some(first) = services.get(entry.name.as_str()) {
                        let msg = format!(
                            "DAEMON entry `{}` has the name of the SERVICES entry at line {} (names are shared)",
                            entry.name, first.location.line
                        );
                        self.error(entry, entry.location.col, msg);
                    }
                }
            }
        }
    }

    /// Two services on one address: the second cannot bind.
    fn listen_conflicts(&mut self, services: &[ServiceEntry], raw: &RawConfig) {
        for (i, s) in services.iter().enumerate() {
            let Some(first) = services[..i].iter().find(|f| same_address(f, s)) else {
                continue;
            };
            let Some(entry) = raw
                .section(Section::Services)
                .iter()
                .find(|e| e.location == s.location)
            else {
                continue;
            };
            let col = entry
                .args
                .iter()
                .find(|a| a.key == "listen")
                .map_or(entry.location.col, |a| a.value_col);
            self.warning(
                entry,
                col,
                format!(
                    "`{}` listens on the same address as `{}` (line {}): only the first will bind",
                    s.name, first.name, first.location.line
                ),
            );
        }
    }
}

fn same_address(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    match (&a.listen, &b.listen) {
        (Listen::Unix(p), Listen::Unix(q)) => p == q,
        (Listen::Inet { host: ha, port: pa }, Listen::Inet { host: hb, port: pb }) => {
            let families_meet = a.proto.is_udp() == b.proto.is_udp()
                && !matches!(
                    (a.proto, b.proto),
                    (Proto::Tcp4, Proto::Tcp6)
                        | (Proto::Tcp6, Proto::Tcp4)
                        | (Proto::Udp4, Proto::Udp6)
                        | (Proto::Udp6, Proto::Udp4)
                );
            pa == pb && families_meet && (ha == hb || ha.is_none() || hb.is_none())
        }
        _ => false,
    }
}

/// Validates raw entries into a Config. Returns the config when no error was found, and
/// every diagnostic either way.
pub(crate) fn validate(raw: &RawConfig, env: &ParseEnv) -> (Config, Vec<Diagnostic>) {
    let mut v = Validator {
        env,
        diags: Vec::new(),
    };
    v.names(raw);
    let mut config = Config::default();
    for e in raw.section(Section::Start) {
        config.start.extend(v.start(e));
    }
    for e in raw.section(Section::Services) {
        config.services.extend(v.service(e));
    }
    for e in raw.section(Section::Events) {
        config.events.extend(v.event(e));
    }
    for e in raw.section(Section::Daemon) {
        config.daemons.extend(v.daemon(e));
    }
    v.listen_conflicts(&config.services, raw);
    (config, v.diags)
}
