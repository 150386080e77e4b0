//! Validation of cyrus.conf entries: messages with their locations, Cyrus's effective values.

use super::*;

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
    let text = include_str!("../../../../ringmaster/tests/data/debian-cyrus.conf");
    let c = ok(text);
    let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["imap", "pop3", "nntp", "http", "lmtpunix", "sieve", "notify"]
    );
    assert_eq!(c.start.len(), 3);
    assert_eq!(c.events.len(), 5);
}
