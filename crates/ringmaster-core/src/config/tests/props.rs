//! Property tests of the cyrus.conf pipeline: it never panics, every location is inside the
//! input, and generated configurations round-trip.

use proptest::prelude::*;

use super::*;

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
