//! `prometheus_enabled: yes`: ringmaster writes Cyrus's `cyrus_master_*` report where Cyrus
//! 3.6.1's own master writes it, with the same metric names, types and label sets. Checked
//! against Debian's /usr/lib/cyrus/bin/master run on the same configuration first.
//!
//! Needs root and Debian's cyrus-common: skipped with a reason without them, except under
//! CI=true, where it must run.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const CYRUS_MASTER: &str = "/usr/lib/cyrus/bin/master";

/// The report's shape: `TYPE` lines, and each sample's name and labels (values and
/// timestamps left out); also whether every sample had a timestamp.
fn shape(text: &str) -> (BTreeSet<String>, BTreeSet<String>, bool) {
    let mut types = BTreeSet::new();
    let mut series = BTreeSet::new();
    let mut stamped = true;
    for line in text.lines() {
        if line.starts_with("# TYPE ") {
            types.insert(line.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series_part, rest) = match line.find('}') {
                Some(end) => line.split_at(end + 1),
                None => line.split_once(' ').unwrap_or((line, "")),
            };
            series.insert(series_part.to_string());
            stamped &= rest.split_whitespace().count() == 2;
        }
    }
    (types, series, stamped)
}

/// Waits for the report at `path` to name every service; returns its text.
fn wait_report(path: &Path, names: &[&str], m: &mut Master) -> String {
    let mut text = String::new();
    let complete = wait_until(WAIT, || {
        text = read_to_string(path);
        names
            .iter()
            .all(|n| text.contains(&format!("service=\"{n}\"")))
    });
    assert!(
        complete,
        "no complete report at {}: {text:?}\nlog:\n{}",
        path.display(),
        m.log_text()
    );
    text
}

fn chown_cyrus(path: &Path) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg("cyrus:")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown cyrus {}", path.display());
}

#[test]
fn the_cyrus_master_report_matches_cyrus_own() {
    if skip_unless(
        is_root(),
        "root (Cyrus's master runs its services as cyrus)",
    ) || skip_unless(
        Path::new(CYRUS_MASTER).exists(),
        "Debian's Cyrus master (/usr/lib/cyrus/bin/master: apt-get install cyrus-common)",
    ) {
        return;
    }
    let dir = TestDir::new("cyrus-metrics");
    let (v4, v6) = (free_port(), free_port());
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut conf = format!(
        "SERVICES {{\n  echo cmd=\"{WORKER}\" listen=\"127.0.0.1:{v4}\" prefork=1\n  \
         sock cmd=\"{WORKER}\" listen=\"{}\" prefork=0 maxchild=3\n",
        dir.path("echo.sock").display()
    );
    let mut names = vec!["echo", "sock", "dd"];
    if ipv6 {
        conf.push_str(&format!(
            "  echo6 cmd=\"{WORKER}\" listen=\"[::1]:{v6}\" prefork=0\n"
        ));
        names.push("echo6");
    }
    conf.push_str(&format!(
        "}}\nDAEMON {{\n  dd cmd=\"{WORKER} --daemon-ready\"\n}}\n"
    ));
    let imapd = format!(
        "configdirectory: {}\nprometheus_enabled: yes\nprometheus_update_freq: 1s\ncyrus_user: cyrus\n",
        dir.0.display()
    );
    fs::write(dir.path("cyrus.conf"), &conf).expect("cyrus.conf");
    fs::write(dir.path("imapd.conf"), &imapd).expect("imapd.conf");
    chown_cyrus(&dir.0);
    let report: PathBuf = dir.path("stats/master.txt");

    let mut cyrus = spawn_master_program(CYRUS_MASTER, &dir, &[]);
    let theirs = wait_report(&report, &names, &mut cyrus);
    let their_meta = fs::metadata(&report).expect("their report");
    cyrus.stop();
    fs::remove_dir_all(dir.path("stats")).expect("clear the stats dir");

    let ready = dir.path("master.ready").display().to_string();
    let mut ours_master = spawn_master_program(MASTER, &dir, &["-r", &ready, "-v"]);
    ours_master.wait_ready();
    let ours = wait_report(&report, &names, &mut ours_master);
    let our_meta = fs::metadata(&report).expect("our report");

    let (their_types, their_series, their_stamps) = shape(&theirs);
    let (our_types, our_series, our_stamps) = shape(&ours);
    assert_eq!(our_types, their_types, "ours:\n{ours}\ntheirs:\n{theirs}");
    assert_eq!(our_series, their_series, "ours:\n{ours}\ntheirs:\n{theirs}");
    assert!(
        their_stamps && our_stamps,
        "ours:\n{ours}\ntheirs:\n{theirs}"
    );
    assert_eq!(our_meta.mode() & 0o777, 0o600);
    assert_eq!(their_meta.mode() & 0o777, 0o600);
    assert_eq!(our_meta.uid(), their_meta.uid(), "owned by the cyrus user");
    ours_master.stop();
}
