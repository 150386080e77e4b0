//! `ringmaster check` as an operator runs it: the real binary on broken configs (exact
//! `file:line:col: error: message`, non-zero exit), on Debian's stock cyrus.conf, and on the
//! machine's /etc/cyrus.conf when there is one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::skip_unless;

const EX_CONFIG: i32 = 78;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Runs `ringmaster check -M conf -C <test imapd.conf>` with the test services database.
fn check(conf: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg("check")
        .arg("-M")
        .arg(conf)
        .arg("-C")
        .arg(data("imapd.conf"))
        .env("RINGMASTER_SERVICES_FILE", data("services"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run ringmaster: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "ringmaster panicked:\n{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// Asserts that checking `broken/<name>` fails with exactly these errors (`line:col:
/// message`), in this order.
fn assert_errors(name: &str, expected: &[&str]) {
    let path = data(&format!("broken/{name}"));
    let (code, stdout) = check(&path);
    assert_eq!(code, EX_CONFIG, "{name}: exit status\n{stdout}");
    let prefix = format!("{}:", path.display());
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(": error: "))
        .map(|l| &l[prefix.len()..])
        .collect();
    let expected: Vec<String> = expected
        .iter()
        .map(|e| {
            let (pos, msg) = e.split_once(' ').unwrap_or((e, ""));
            format!("{pos}: error: {msg}")
        })
        .collect();
    assert_eq!(errors, expected, "{name}:\n{stdout}");
    assert!(
        stdout
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("error: the configuration is invalid"),
        "{name}: last line\n{stdout}"
    );
}

#[test]
fn unterminated_quote() {
    assert_errors(
        "unterminated-quote.conf",
        &["2:14 unterminated quoted value"],
    );
    // The source line and a caret under the quote follow the message.
    let (_, stdout) = check(&data("broken/unterminated-quote.conf"));
    assert!(
        stdout.contains("2 | \trecover\tcmd=\"ctl_cyrusdb -r\n  | \t       \t    ^\n"),
        "{stdout}"
    );
}

#[test]
fn hash_in_quotes_starts_a_comment() {
    assert_errors(
        "hash-in-quotes.conf",
        &["2:11 unterminated quoted value (`#` starts a comment even inside quotes, as in Cyrus)"],
    );
}

#[test]
fn bad_character_in_name() {
    assert_errors(
        "bad-name.conf",
        &["2:10 bad character `_` in name (entry names are letters and digits only)"],
    );
}

#[test]
fn duplicate_service() {
    assert_errors(
        "duplicate-service.conf",
        &["4:3 duplicate SERVICES entry `imap` (first at line 2)"],
    );
}

#[test]
fn missing_cmd() {
    assert_errors(
        "missing-cmd.conf",
        &["2:3 SERVICES entry `imap` has no `cmd=`"],
    );
}

#[test]
fn bad_number() {
    assert_errors(
        "bad-number.conf",
        &["2:38 `prefork` must be a whole number, not `five`"],
    );
}

#[test]
fn bad_port() {
    assert_errors(
        "bad-port.conf",
        &["2:25 port 70000 is out of range (1-65535)"],
    );
}

#[test]
fn unknown_service_name() {
    let services = data("services");
    let msg = format!(
        "2:36 unknown service name `imapx` (not in {} for tcp)",
        services.display()
    );
    assert_errors("unknown-service-name.conf", &[&msg]);
}

#[test]
fn unbalanced_bracket() {
    assert_errors(
        "unbalanced-bracket.conf",
        &["2:26 unbalanced `[` in listen address (no `]`)"],
    );
}

#[test]
fn empty_host() {
    assert_errors("empty-host.conf", &["2:25 empty host in listen address"]);
}

#[test]
fn section_never_closed() {
    assert_errors(
        "unclosed-section.conf",
        &["2:1 section `SERVICES` is never closed (missing `}`)"],
    );
}

#[test]
fn stray_brace() {
    assert_errors("stray-brace.conf", &["4:1 stray `}` outside any section"]);
}

#[test]
fn junk_outside_sections() {
    assert_errors(
        "junk-outside.conf",
        &["1:1 expected a section (`START {`, `SERVICES {`, `EVENTS {` or `DAEMON {`)"],
    );
}

#[test]
fn bad_at() {
    assert_errors(
        "bad-at.conf",
        &["2:37 `at=2400` is not a time of day (HHMM, from 0000 to 2359)"],
    );
}

#[test]
fn bad_cron() {
    assert_errors("bad-cron.conf", &["2:45 bad day of week `fry`"]);
}

#[test]
fn bad_boolean() {
    assert_errors(
        "bad-boolean.conf",
        &["2:24 `wait` must be yes or no (y/n, 1/0, true/false, on/off), not `perhaps`"],
    );
}

#[test]
fn bad_proto() {
    assert_errors(
        "bad-proto.conf",
        &["2:36 unknown `proto=sctp`: expected tcp, tcp4, tcp6, udp, udp4 or udp6"],
    );
}

#[test]
fn every_error_is_reported() {
    assert_errors(
        "several-errors.conf",
        &[
            "2:9 unterminated quoted value",
            "3:4 bad character `!` in name (entry names are letters and digits only)",
            "5:1 section `SERVICES` is never closed (missing `}`)",
            "6:25 port 0 is not a port to listen on",
            "7:3 duplicate SERVICES entry `imap` (first at line 6)",
        ],
    );
}

#[test]
fn missing_cyrus_conf_is_a_clear_error() {
    let path = data("broken/no-such-file.conf");
    let (code, stdout) = check(&path);
    assert_eq!(code, EX_CONFIG);
    assert!(
        stdout.contains(&format!(
            "error: cannot read {}: No such file or directory",
            path.display()
        )),
        "{stdout}"
    );
}

#[test]
fn a_missing_dash_c_file_refuses_as_the_master_does() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg("check")
        .arg("-M")
        .arg(data("debian-cyrus.conf"))
        .arg("-C")
        .arg(data("no-such-imapd.conf"))
        .env("RINGMASTER_SERVICES_FILE", data("services"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run ringmaster: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stdout}");
    assert!(
        stdout.contains("no-such-imapd.conf: error: cannot read"),
        "{stdout}"
    );
}

/// Debian's packages: cyrus-common (START's /usr/sbin/cyrus, the `cyrus` user).
fn have_cyrus_common() -> bool {
    !skip_unless(
        Path::new("/usr/sbin/cyrus").exists(),
        "/usr/sbin/cyrus (install cyrus-common)",
    )
}

/// Debian's stock cyrus.conf enables nntp and http, whose programs come in other packages:
/// with a service directory holding only cyrus-imapd's and cyrus-pop3d's programs, the master
/// runs without those two, and check says so (exit 1).
#[test]
fn debian_stock_config_runs_without_nntp_and_http() {
    if !have_cyrus_common() {
        return;
    }
    let bin = std::env::temp_dir().join(format!("rm-check-bin-{}", std::process::id()));
    std::fs::create_dir_all(&bin).expect("service dir");
    for program in ["imapd", "pop3d", "lmtpd", "timsieved", "notifyd"] {
        let path = bin.join(program);
        std::fs::write(&path, "#!/bin/sh\n").expect("write program");
        let _ = Command::new("chmod").arg("0755").arg(&path).status();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg("check")
        .arg("-M")
        .arg(data("debian-cyrus.conf"))
        .arg("-C")
        .arg(data("imapd.conf"))
        .arg("--service-path")
        .arg(&bin)
        .env("RINGMASTER_SERVICES_FILE", data("services"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run ringmaster: {e}"));
    let _ = std::fs::remove_dir_all(&bin);
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code, 1, "{stdout}");
    let conf = data("debian-cyrus.conf").display().to_string();
    for (line, name, program) in [(35, "nntp", "nntpd"), (37, "http", "httpd")] {
        let error = format!(
            "{conf}:{line}:2: error: cannot find executable for service '{name}': {program}"
        );
        assert!(stdout.contains(&error), "missing {error:?} in\n{stdout}");
    }
    for line in [
        "START (3):",
        "SERVICES (5):",
        "EVENTS (5):",
        "DAEMON (0):",
        "DOWN (2):",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    let has = |prefix: &str, rest: &str| {
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with(prefix) && l.contains(rest))
    };
    assert!(
        has(
            "imap ",
            "listen=143 proto=tcp prefork=0 maxchild=100 babysit=no"
        ),
        "{stdout}"
    );
    assert!(
        has("pop3 ", "listen=110 proto=tcp prefork=0 maxchild=50"),
        "{stdout}"
    );
    assert!(
        has("lmtpunix ", "listen=/run/cyrus/socket/lmtp proto=tcp"),
        "{stdout}"
    );
    assert!(has("sieve ", "listen=localhost:4190"), "{stdout}");
    assert!(has("notify ", "proto=udp prefork=1 maxchild=1"), "{stdout}");
    assert!(has("checkpoint ", "every 30 min"), "{stdout}");
    assert!(has("delprune ", "daily at 04:01"), "{stdout}");
    assert!(
        has("recover ", "/usr/sbin/cyrus ctl_cyrusdb -r"),
        "{stdout}"
    );
    let last = stdout.trim_end().lines().last().unwrap_or("");
    assert_eq!(
        last, "down: the master would run without service nntp, service http",
        "{stdout}"
    );
}

#[test]
fn machine_cyrus_conf_passes() {
    let path = Path::new("/etc/cyrus.conf");
    if skip_unless(path.exists(), "/etc/cyrus.conf (install cyrus-common)") {
        return;
    }
    // The machine's own services database and service directory: the real thing.
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(["check", "-M", "/etc/cyrus.conf"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ringmaster: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 1: it runs, with the entries whose programs this machine lacks down (Debian's stock
    // file enables nntp and http, which come in other packages).
    let code = out.status.code();
    assert!(code == Some(0) || code == Some(1), "{code:?}\n{stdout}");
    let last = stdout.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with(if code == Some(0) { "ok: " } else { "down: " }),
        "{stdout}"
    );
}
