//! Tests of the whole cyrus.conf pipeline: validation messages, Cyrus's effective values,
//! and property tests (never panics, locations inside the input, generated configs
//! round-trip).

use proptest::prelude::*;

use super::validate::DEFAULT_MAXFDS;
use super::*;

fn env() -> ParseEnv {
    ParseEnv {
        services: ServicesDb::parse(
            "imap2 143/tcp imap\npop3 110/tcp\nnntp 119/tcp readnews\nsieve 4190/tcp\nlmtp 24/tcp\nnotify 9999/udp\n",
            "services",
        ),
    }
}

fn parse(text: &str) -> (Option<Config>, Vec<Diagnostic>) {
    parse_cyrus_conf("c.conf", text, &env())
}

fn ok(text: &str) -> Config {
    let (config, diags) = parse(text);
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    config.unwrap_or_default()
}

/// (line, col, severity letter, message) of each diagnostic.
fn diags(text: &str) -> Vec<(u32, u32, char, String)> {
    parse(text)
        .1
        .into_iter()
        .map(|d| {
            let s = if d.is_error() { 'E' } else { 'W' };
            (d.location.line, d.location.col, s, d.message)
        })
        .collect()
}

fn services(body: &str) -> String {
    format!("SERVICES {{\n{body}\n}}\n")
}

#[test]
fn service_defaults() {
    let c = ok(&services("imap cmd=\"imapd -U 30\" listen=imap"));
    let s = &c.services[0];
    assert_eq!(s.name, "imap");
    assert_eq!(s.cmd.argv, vec!["imapd", "-U", "30"]);
    assert_eq!(
        s.listen,
        Listen::Inet {
            host: None,
            port: 143
        }
    );
    assert_eq!(s.proto, Proto::Tcp);
    assert_eq!(s.prefork, 0);
    assert_eq!(s.maxchild, None);
    assert_eq!(s.maxforkrate, 0);
    assert!(!s.babysit);
    assert_eq!(s.maxfds, DEFAULT_MAXFDS);
    assert_eq!(s.location.line, 2);
    assert_eq!(s.location.col, 1);
}

#[test]
fn service_keys() {
    let c = ok(&services(
        "  lmtp cmd=lmtpd listen=\"[::1]:lmtp\" proto=tcp6 prefork=2 maxchild=20 maxforkrate=5 babysit=true maxfds=1024 user=mail group=mail",
    ));
    let s = &c.services[0];
    assert_eq!(
        s.listen,
        Listen::Inet {
            host: Some("::1".into()),
            port: 24
        }
    );
    assert_eq!(s.proto, Proto::Tcp6);
    assert_eq!((s.prefork, s.maxchild, s.maxforkrate), (2, Some(20), 5));
    assert!(s.babysit);
    assert_eq!(s.maxfds, 1024);
    assert_eq!(s.run_as.user.as_deref(), Some("mail"));
    assert_eq!(s.run_as.group.as_deref(), Some("mail"));
}

#[test]
fn cyrus_effective_values() {
    // babysit: one ready, 10 forks/s unless told.
    let c = ok(&services("a cmd=x listen=1 babysit=y"));
    assert_eq!((c.services[0].prefork, c.services[0].maxforkrate), (1, 10));
    // Negative maxchild is unlimited.
    let c = ok(&services("a cmd=x listen=1 maxchild=-1"));
    assert_eq!(c.services[0].maxchild, None);
    // UDP: one worker at a time.
    let c = ok(&services("a cmd=x listen=/run/n proto=udp prefork=1"));
    assert_eq!(c.services[0].maxchild, Some(1));
    assert_eq!(c.services[0].listen, Listen::Unix("/run/n".into()));
    let c = ok(&services("a cmd=x listen=notify proto=udp"));
    assert_eq!(
        c.services[0].listen,
        Listen::Inet {
            host: None,
            port: 9999
        }
    );
}

#[test]
fn booleans_as_cyrus_reads_them() {
    for (v, b) in [
        ("0", false),
        ("1", true),
        ("y", true),
        ("n", false),
        ("yes", true),
        ("no", false),
        ("true", true),
        ("false", false),
        ("on", true),
        ("off", false),
        ("YES", true),
    ] {
        let c = ok(&format!("DAEMON {{\n d cmd=x wait={v}\n}}\n"));
        assert_eq!(c.daemons[0].wait, b, "{v}");
    }
    assert_eq!(
        diags("DAEMON {\n d cmd=x wait=yep\n}\n"),
        vec![(
            2,
            15,
            'W',
            "`wait=yep` read as `yes` (from its first letters, as Cyrus does)".into()
        )]
    );
    assert_eq!(
        diags("DAEMON {\n d cmd=x wait=maybe\n}\n")[0].3,
        "`wait` must be yes or no (y/n, 1/0, true/false, on/off), not `maybe`"
    );
}

#[test]
fn events() {
    let c = ok("EVENTS {\n a cmd=x period=30\n b cmd=x at=0401\n c cmd=x\n d cmd=x cron=\"*/5 * * * *\"\n e cmd=x at=5\n}\n");
    assert_eq!(c.events[0].schedule, Schedule::Period { minutes: 30 });
    assert_eq!(
        c.events[1].schedule,
        Schedule::Daily(TimeOfDay { hour: 4, minute: 1 })
    );
    assert_eq!(c.events[2].schedule, Schedule::Period { minutes: 0 });
    assert!(matches!(c.events[3].schedule, Schedule::Cron(_)));
    assert_eq!(
        c.events[4].schedule,
        Schedule::Daily(TimeOfDay { hour: 0, minute: 5 })
    );
}

#[test]
fn at_wins_over_period_with_a_warning() {
    let text = "EVENTS {\n a cmd=x period=60 at=2359\n}\n";
    let c = ok(text);
    assert_eq!(
        c.events[0].schedule,
        Schedule::Daily(TimeOfDay {
            hour: 23,
            minute: 59
        })
    );
    assert_eq!(diags(text)[0].1, 10);
}

#[test]
fn event_errors() {
    let d = diags("EVENTS {\n a cmd=x at=2400\n b cmd=x at=1260\n c cmd=x at=-1\n d cmd=x cron=\"0 0 * *\" \n e cmd=x cron=\"* * * * *\" at=1\n}\n");
    let m: Vec<_> = d.iter().map(|x| (x.0, x.1, x.3.as_str())).collect();
    assert_eq!(
        m,
        vec![
            (
                2,
                13,
                "`at=2400` is not a time of day (HHMM, from 0000 to 2359)"
            ),
            (
                3,
                13,
                "`at=1260` is not a time of day (HHMM, from 0000 to 2359)"
            ),
            (
                4,
                13,
                "`at=-1` is not a time of day (HHMM, from 0000 to 2359)"
            ),
            (
                5,
                23,
                "cron spec has 4 fields, expected 5 (minute hour day-of-month month day-of-week)"
            ),
            (6, 10, "`cron=` cannot be combined with `at=` or `period=`"),
        ]
    );
}

#[test]
fn service_errors() {
    let text = services(
        "a listen=1\nb cmd=x\nc cmd=x listen=1 prefork=many\nd cmd=x listen=0\ne cmd=x listen=nosuch\nf cmd=x listen=2 proto=sctp\ng cmd=\"\" listen=3\nh cmd=x listen=4 maxchild=1x\ni cmd=x listen=\"host:99999\"\nj cmd=x listen=5 prefork=-1",
    );
    let m: Vec<_> = diags(&text)
        .into_iter()
        .filter(|d| d.2 == 'E')
        .map(|d| (d.0, d.1, d.3))
        .collect();
    assert_eq!(
        m,
        vec![
            (2, 1, "SERVICES entry `a` has no `cmd=`".to_string()),
            (3, 1, "SERVICES entry `b` has no `listen=`".to_string()),
            (
                4,
                26,
                "`prefork` must be a whole number, not `many`".to_string()
            ),
            (5, 16, "port 0 is not a port to listen on".to_string()),
            (
                6,
                16,
                "unknown service name `nosuch` (not in services for tcp)".to_string()
            ),
            (
                7,
                24,
                "unknown `proto=sctp`: expected tcp, tcp4, tcp6, udp, udp4 or udp6".to_string()
            ),
            (8, 7, "empty `cmd=`".to_string()),
            (
                9,
                27,
                "`maxchild` must be a whole number, not `1x`".to_string()
            ),
            (10, 22, "port 99999 is out of range (1-65535)".to_string()),
            (
                11,
                26,
                "`prefork` must be a whole number of 0 or more, not `-1`".to_string()
            ),
        ]
    );
}

#[test]
fn names_must_be_unique() {
    let text = "SERVICES {\n a cmd=x listen=1\n a cmd=x listen=2\n}\nDAEMON {\n a cmd=x\n}\nEVENTS {\n e cmd=x\n e cmd=x\n}\n";
    let m: Vec<_> = diags(text).into_iter().map(|d| (d.0, d.3)).collect();
    assert_eq!(
        m,
        vec![
            (
                3,
                "duplicate SERVICES entry `a` (first at line 2)".to_string()
            ),
            (
                6,
                "DAEMON entry `a` has the name of the SERVICES entry at line 2 (names are shared)"
                    .to_string()
            ),
            (
                10,
                "duplicate EVENTS entry `e` (first at line 9)".to_string()
            ),
        ]
    );
}

#[test]
fn warnings_do_not_invalidate() {
    let text = services(
        "a cmd=x listen=143 Cmd=y foo=1\nb cmd=x listen=imap prefork=1 prefork=2\nc cmd=x listen=/s proto=tcp4\nd cmd=x listen=/t proto=udp maxchild=5\ne cmd=x listen=9 maxchild=0\nf cmd=x listen=10 prefork=3 maxchild=2",
    );
    let (config, d) = parse(&text);
    assert!(config.is_some());
    let m: Vec<_> = d
        .into_iter()
        .map(|d| (d.location.line, d.location.col, d.message))
        .collect();
    assert_eq!(
        m,
        vec![
            (2, 20, "unknown key `Cmd` in SERVICES entry `a` is ignored (did you mean `cmd`? keys are case-sensitive)".to_string()),
            (2, 26, "unknown key `foo` in SERVICES entry `a` is ignored".to_string()),
            (3, 16, "`b` listens on the same address as `a` (line 2): only the first will bind".to_string()),
            (3, 31, "`prefork=` given twice; the first is used (as in Cyrus)".to_string()),
            (4, 25, "the address family of `proto=tcp4` means nothing for a unix socket; ringmaster reads it as `tcp`".to_string()),
            (5, 38, "a UDP service runs one worker at a time; `maxchild=` is ignored".to_string()),
            (6, 27, "`maxchild=0`: this service will never start a worker".to_string()),
            (7, 27, "`prefork=3` is more than `maxchild=2`; at most 2 will be ready".to_string()),
        ]
    );
}

#[test]
fn tcp4_and_tcp6_do_not_conflict() {
    let text = services(
        "a cmd=x listen=1 proto=tcp4\nb cmd=x listen=1 proto=tcp6\nc cmd=x listen=1 proto=udp",
    );
    assert!(diags(&text).is_empty());
}

#[test]
fn several_errors_are_all_reported() {
    let text = "START {\n a cmd=\"x\n b! cmd=y\n}\n}\njunk\nSERVICES {\n s listen=1\n";
    let m: Vec<_> = diags(text).into_iter().map(|d| (d.0, d.1, d.3)).collect();
    assert_eq!(
        m,
        vec![
            (2, 8, "unterminated quoted value".to_string()),
            (
                3,
                3,
                "bad character `!` in name (entry names are letters and digits only)".to_string()
            ),
            (5, 1, "stray `}` outside any section".to_string()),
            (
                6,
                1,
                "expected a section (`START {`, `SERVICES {`, `EVENTS {` or `DAEMON {`)"
                    .to_string()
            ),
            (
                7,
                1,
                "section `SERVICES` is never closed (missing `}`)".to_string()
            ),
            (8, 2, "SERVICES entry `s` has no `cmd=`".to_string()),
        ]
    );
}

#[test]
fn empty_file_is_an_empty_config() {
    assert_eq!(ok(""), Config::default());
    assert_eq!(ok("# nothing\n\n   \n"), Config::default());
}

#[test]
fn debian_stock_config_parses() {
    let text = include_str!("../../../ringmaster/tests/data/debian-cyrus.conf");
    let c = ok(text);
    let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["imap", "pop3", "nntp", "http", "lmtpunix", "sieve", "notify"]
    );
    assert_eq!(c.start.len(), 3);
    assert_eq!(c.events.len(), 5);
}

/// Where a diagnostic may point: an existing line, a column at most one past its end.
fn check_locations(text: &str, diags: &[Diagnostic]) {
    let lines: Vec<&str> = text.split('\n').collect();
    for d in diags {
        if d.location.line == 0 {
            continue;
        }
        let line = lines.get(d.location.line as usize - 1);
        let Some(line) = line else {
            panic!("line {} out of range: {d:?}", d.location.line);
        };
        let len = line.chars().count() as u32;
        assert!(
            d.location.col >= 1 && d.location.col <= len + 1,
            "col {} outside line of {len} chars: {d:?}",
            d.location.col
        );
        let _ = render(d);
    }
}

/// Found by `never_panics_on_config_like_text`: an imapd.conf line continued with `\\` got
/// its error column counted along the joined line, past the end of the line it named.
#[test]
fn continued_imapd_line_diagnostic_stays_in_its_line() {
    let text = "a\\\nSERVICES {";
    let (config, d) = parse_cyrus_conf("f", text, &env());
    check_locations(text, &d);
    assert_eq!(config.is_some(), !d.iter().any(Diagnostic::is_error));
    let (_, d) = imapd::parse_imapd_conf("f", text);
    assert!(!d.is_empty());
    check_locations(text, &d);
}

fn conf_alphabet() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("SERVICES {".to_string()),
            Just("START {".to_string()),
            Just("EVENTS {".to_string()),
            Just("DAEMON {".to_string()),
            Just("}".to_string()),
            Just("\n".to_string()),
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just("\"".to_string()),
            Just("#".to_string()),
            Just("=".to_string()),
            Just("cmd=".to_string()),
            Just("listen=".to_string()),
            Just("at=".to_string()),
            Just("cron=".to_string()),
            Just("proto=udp".to_string()),
            Just("babysit=".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(":".to_string()),
            Just("/".to_string()),
            "[a-z0-9]{1,6}",
            "\\PC{0,3}",
        ],
        0..60,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let (_, d) = parse_cyrus_conf("f", &text, &env());
        check_locations(&text, &d);
        let _ = imapd::parse_imapd_conf("f", &text);
    }

    #[test]
    fn never_panics_on_config_like_text(text in conf_alphabet()) {
        let (config, d) = parse_cyrus_conf("f", &text, &env());
        check_locations(&text, &d);
        prop_assert_eq!(config.is_some(), !d.iter().any(Diagnostic::is_error));
        let (_, d) = imapd::parse_imapd_conf("f", &text);
        check_locations(&text, &d);
    }

    #[test]
    fn small_parsers_never_panic(text in "[0-9a-z*/,: \\[\\]-]{0,30}", any_text in "\\PC{0,30}") {
        for t in [&text, &any_text] {
            let _ = cron::parse_cron(t);
            let _ = listen::parse_listen(t, Transport::Tcp, &env().services);
            if let Err(e) = listen::parse_listen(t, Transport::Udp, &env().services) {
                prop_assert!(e.offset <= t.chars().count());
            }
            if let Err(e) = cron::parse_cron(t) {
                prop_assert!(e.offset <= t.chars().count());
            }
        }
    }

    #[test]
    fn generated_configs_round_trip(spec in config_spec()) {
        let text = spec.render();
        let (config, d) = parse_cyrus_conf("f", &text, &env());
        let errors: Vec<_> = d.iter().filter(|d| d.is_error()).collect();
        prop_assert!(errors.is_empty(), "{:?}\n{}", errors, text);
        let config = config.unwrap_or_default();
        prop_assert_eq!(config.services.len(), spec.services.len());
        for (got, want) in config.services.iter().zip(&spec.services) {
            prop_assert_eq!(&got.name, &want.name);
            prop_assert_eq!(&got.cmd.argv, &want.argv);
            prop_assert_eq!(&got.listen, &want.listen);
            prop_assert_eq!(got.proto, want.proto);
            prop_assert_eq!(got.maxfds, want.maxfds.unwrap_or(DEFAULT_MAXFDS));
            prop_assert_eq!(got.babysit, want.babysit);
            if !want.proto.is_udp() {
                prop_assert_eq!(got.maxchild, want.maxchild);
                let prefork = if want.babysit { want.prefork.max(1) } else { want.prefork };
                prop_assert_eq!(got.prefork, prefork);
            }
        }
        prop_assert_eq!(config.events.len(), spec.events.len());
        for (got, want) in config.events.iter().zip(&spec.events) {
            prop_assert_eq!(&got.name, &want.0);
            prop_assert_eq!(&got.schedule, &want.1);
        }
        prop_assert_eq!(config.daemons.len(), spec.daemons.len());
        for (got, want) in config.daemons.iter().zip(&spec.daemons) {
            prop_assert_eq!(&got.name, &want.0);
            prop_assert_eq!(got.wait, want.1);
        }
        check_locations(&text, &d);
    }
}

#[derive(Debug, Clone)]
struct ServiceSpec {
    name: String,
    argv: Vec<String>,
    listen: Listen,
    listen_text: String,
    proto: Proto,
    prefork: u32,
    maxchild: Option<u32>,
    babysit: bool,
    maxfds: Option<u64>,
    quote_all: bool,
}

#[derive(Debug, Clone)]
struct ConfigSpec {
    services: Vec<ServiceSpec>,
    events: Vec<(String, Schedule)>,
    daemons: Vec<(String, bool)>,
    indent: String,
}

impl ConfigSpec {
    fn render(&self) -> String {
        let q = |s: &str, quote: bool| {
            if quote || s.contains(' ') {
                format!("\"{s}\"")
            } else {
                s.to_string()
            }
        };
        let mut out = String::from("# generated\nSERVICES {\n");
        for s in &self.services {
            out.push_str(&format!(
                "{}{}\tcmd={} listen={} proto={} prefork={}",
                self.indent,
                s.name,
                q(&s.argv.join(" "), s.quote_all),
                q(&s.listen_text, s.quote_all),
                q(s.proto.as_str(), s.quote_all),
                s.prefork
            ));
            if let Some(m) = s.maxchild {
                out.push_str(&format!(" maxchild={m}"));
            } else {
                out.push_str(" maxchild=-1");
            }
            if s.babysit {
                out.push_str(" babysit=true");
            }
            if let Some(f) = s.maxfds {
                out.push_str(&format!(" maxfds={f}"));
            }
            out.push_str("  # trailing comment\n");
        }
        out.push_str("}\n\nEVENTS {\n");
        for (name, schedule) in &self.events {
            let when = match schedule {
                Schedule::Period { minutes } => format!("period={minutes}"),
                Schedule::Daily(t) => format!("at={:02}{:02}", t.hour, t.minute),
                Schedule::Cron(c) => format!("cron=\"{}\"", c.text),
            };
            out.push_str(&format!(
                "{}{name} cmd=\"/bin/true x\" {when}\n",
                self.indent
            ));
        }
        out.push_str("}\nDAEMON {\n");
        for (name, wait) in &self.daemons {
            out.push_str(&format!(
                "{}{name} cmd=d wait={}\n",
                self.indent,
                if *wait { "yes" } else { "n" }
            ));
        }
        out.push_str("}\n");
        out
    }
}

fn listen_spec() -> impl Strategy<Value = (Listen, String)> {
    prop_oneof![
        (1u16..=65535).prop_map(|p| (
            Listen::Inet {
                host: None,
                port: p
            },
            p.to_string()
        )),
        "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}".prop_flat_map(|h| (1u16..=65535).prop_map(move |p| (
            Listen::Inet {
                host: Some(h.clone()),
                port: p
            },
            format!("{h}:{p}")
        ))),
        (1u16..=65535).prop_map(|p| (
            Listen::Inet {
                host: Some("::1".into()),
                port: p
            },
            format!("[::1]:{p}")
        )),
        Just((
            Listen::Inet {
                host: Some("localhost".into()),
                port: 143
            },
            "localhost:imap".to_string()
        )),
        "/[a-z]{1,10}(/[a-z0-9.]{1,10}){0,3}".prop_map(|p| (Listen::Unix(p.clone().into()), p)),
    ]
}

fn proto_spec() -> impl Strategy<Value = Proto> {
    prop_oneof![
        Just(Proto::Tcp),
        Just(Proto::Tcp4),
        Just(Proto::Tcp6),
        Just(Proto::Udp),
    ]
}

fn schedule_spec() -> impl Strategy<Value = Schedule> {
    prop_oneof![
        (0u32..100_000).prop_map(|m| Schedule::Period { minutes: m }),
        (0u8..24, 0u8..60).prop_map(|(h, m)| Schedule::Daily(TimeOfDay { hour: h, minute: m })),
        Just("*/15 * * * *")
            .prop_map(|t| Schedule::Cron(cron::parse_cron(t).unwrap_or_else(|_| unreachable!()))),
    ]
}

fn config_spec() -> impl Strategy<Value = ConfigSpec> {
    let service = (
        proptest::collection::vec("[a-zA-Z0-9/._-]{1,12}", 1..4),
        listen_spec(),
        proto_spec(),
        0u32..50,
        proptest::option::of(1u32..1000),
        any::<bool>(),
        proptest::option::of(1u64..100_000),
        any::<bool>(),
    );
    (
        proptest::collection::vec(service, 0..6),
        proptest::collection::vec(schedule_spec(), 0..5),
        proptest::collection::vec(any::<bool>(), 0..3),
        prop_oneof![
            Just(String::new()),
            Just("\t".to_string()),
            Just("   ".to_string())
        ],
    )
        .prop_map(|(services, events, daemons, indent)| {
            let mut out = ConfigSpec {
                services: Vec::new(),
                events: Vec::new(),
                daemons: Vec::new(),
                indent,
            };
            for (
                i,
                (argv, (listen, listen_text), proto, prefork, maxchild, babysit, maxfds, quote_all),
            ) in services.into_iter().enumerate()
            {
                // UDP cannot use a name only known for tcp; unix paths take any proto.
                let proto = if proto.is_udp() && listen_text.contains("imap") {
                    Proto::Tcp
                } else {
                    proto
                };
                // A unix socket with an address family would warn; keep to tcp/udp there.
                let proto = match (&listen, proto) {
                    (Listen::Unix(_), Proto::Tcp4 | Proto::Tcp6) => Proto::Tcp,
                    (Listen::Inet { host: Some(h), .. }, Proto::Tcp4) if h.contains(':') => {
                        Proto::Tcp
                    }
                    _ => proto,
                };
                out.services.push(ServiceSpec {
                    name: format!("svc{i}"),
                    argv,
                    listen,
                    listen_text,
                    proto,
                    prefork,
                    maxchild,
                    babysit,
                    maxfds,
                    quote_all,
                });
            }
            out.events = events
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("ev{i}"), s))
                .collect();
            out.daemons = daemons
                .into_iter()
                .enumerate()
                .map(|(i, w)| (format!("Daemon{i}"), w))
                .collect();
            out
        })
}
