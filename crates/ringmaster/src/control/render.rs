//! What the client subcommands print: the status table (readable at 80 columns), a reload's
//! report and a dry run's plan. Pure functions of the protocol's documents; times are shown
//! by a function the caller gives (local time in the client, fixed in tests).

use std::fmt::Write as _;

use super::proto::{PlanDoc, ReportDoc, ServiceDoc, StatusDoc};

/// Shows a time given in seconds since the epoch.
pub type ShowTime<'a> = &'a dyn Fn(i64) -> String;

const NAME: usize = 10;
const LISTEN: usize = 18;

/// The status table.
pub fn status_table(doc: &StatusDoc, time: ShowTime<'_>) -> String {
    let mut out = String::new();
    let listening = if doc.all_listening {
        "every service listens"
    } else {
        "NOT every service listens"
    };
    let _ = writeln!(out, "master pid {}: {}, {listening}", doc.pid, doc.phase);
    if let Some(m) = &doc.master {
        let _ = writeln!(out, "binary {}", m.binary.display());
        let _ = writeln!(out, "version {}, {} upgrade(s)", m.version, m.upgrades);
        if let Some(e) = &m.last_error {
            let _ = writeln!(out, "last upgrade failed: {e}");
        }
    }
    if !doc.services.is_empty() {
        let _ = writeln!(
            out,
            "{:<NAME$} {:<LISTEN$} {:>3} {:>3} {:>4} {:>4} {:>3} {:>6} {:>5} PAUSED",
            "SERVICE", "LISTEN", "GEN", "RDY", "BUSY", "STRT", "DRN", "FORKS", "CRASH"
        );
    }
    for s in &doc.services {
        service_row(&mut out, s, doc, time);
    }
    if !doc.daemons.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<16} {:>8} {:>8}  UP SINCE",
            "DAEMON", "PID", "RESTARTS"
        );
        for d in &doc.daemons {
            let pid = d.pid.map_or("-".to_string(), |p| p.to_string());
            let since = match (d.up_since_unix, d.restart_unix) {
                (Some(t), _) => time(t),
                (None, Some(t)) => format!("down; restart at {}", time(t)),
                (None, None) => "down".to_string(),
            };
            let _ = writeln!(out, "{:<16} {pid:>8} {:>8}  {since}", d.name, d.restarts);
        }
    }
    if !doc.events.is_empty() {
        let _ = writeln!(out, "\n{:<16} {:<20} RUNNING", "EVENT", "NEXT RUN");
        for e in &doc.events {
            let next = e.next_unix.map_or("-".to_string(), time);
            let _ = writeln!(out, "{:<16} {next:<20} {}", e.name, e.running);
        }
    }
    out.push('\n');
    reloads(&mut out, doc, time);
    out
}

fn service_row(out: &mut String, s: &ServiceDoc, doc: &StatusDoc, time: ShowTime<'_>) {
    let twin = doc
        .services
        .iter()
        .any(|o| o.name == s.name && o.family != s.family && o.listening);
    let name = if twin && s.family == 6 {
        format!("{}/6", s.name)
    } else {
        s.name.clone()
    };
    let name = if s.retiring {
        format!("{name} (old)")
    } else {
        name
    };
    if name.len() > NAME || s.listen.len() > LISTEN {
        let _ = writeln!(out, "{name} {}", s.listen);
        let _ = write!(out, "{:<w$}", "", w = NAME + LISTEN + 2);
    } else {
        let _ = write!(out, "{name:<NAME$} {:<LISTEN$} ", s.listen);
    }
    if !s.listening {
        let _ = writeln!(out, "DOWN");
    } else {
        let w = &s.workers;
        let paused = s.paused_until_unix.map_or("-".to_string(), time);
        let _ = writeln!(
            out,
            "{:>3} {:>3} {:>4} {:>4} {:>3} {:>6} {:>5} {paused}",
            s.generation, w.ready, w.busy, w.starting, w.draining, s.forks, s.crashes
        );
    }
    if let Some(e) = &s.bind_error {
        let retry = s
            .bind_retry_unix
            .map_or(String::new(), |t| format!(" (retry at {})", time(t)));
        let _ = writeln!(out, "  bind error: {e}{retry}");
    }
    if let Some(e) = &s.exec_error {
        let _ = writeln!(out, "  last exec error: {e}");
    }
}

fn reloads(out: &mut String, doc: &StatusDoc, time: ShowTime<'_>) {
    let r = &doc.reloads;
    match &r.last {
        None => {
            let _ = writeln!(out, "no reload since start");
        }
        Some(last) => {
            let _ = writeln!(
                out,
                "last reload: #{} at {}\n  {}",
                last.id,
                time(last.finished_unix),
                report_summary(last)
            );
            for line in last
                .errors
                .iter()
                .chain(&last.bind_errors)
                .flat_map(|e| e.lines())
            {
                let _ = writeln!(out, "  {line}");
            }
            let _ = writeln!(
                out,
                "reloads since start: {} applied, {} partial, {} rejected",
                r.applied, r.partial, r.rejected
            );
        }
    }
    if let Some(t) = r.in_progress_since_unix {
        let _ = writeln!(out, "a reload is in progress since {}", time(t));
    }
}

/// One line on a finished reload.
pub fn report_summary(r: &ReportDoc) -> String {
    let secs = r.duration_ms as f64 / 1000.0;
    let draining = match r.draining {
        0 => String::new(),
        1 => "; 1 old worker draining".to_string(),
        n => format!("; {n} old workers draining"),
    };
    match r.result.as_str() {
        "rejected" => format!(
            "rejected ({} problems); the old configuration runs on",
            r.errors.len()
        ),
        "partial" => format!(
            "applied in part: {} socket(s) could not be bound{draining}",
            r.bind_errors.len()
        ),
        _ if r.settled => format!("applied; new workers ready in {secs:.1} s{draining}"),
        _ => format!(
            "applied; settle limit reached ({secs:.1} s) before all new workers were \
             ready{draining}"
        ),
    }
}

/// The plan of a dry run.
pub fn plan(plan: &PlanDoc) -> String {
    let mut out = String::from("reload plan (dry run: nothing was applied):\n");
    let workers = |n: u32| match n {
        1 => "1 worker".to_string(),
        n => format!("{n} workers"),
    };
    for s in &plan.services {
        let what = match s.change.as_str() {
            "kept" => format!("kept on {}; {} to recycle", s.listen, workers(s.recycle)),
            "rebound" => format!(
                "rebound from {} to {}; {} to recycle",
                s.old_listen.as_deref().unwrap_or("?"),
                s.listen,
                workers(s.recycle)
            ),
            "added" => format!("added on {}", s.listen),
            "removed" => format!("removed from {}; {} to drain", s.listen, workers(s.recycle)),
            _ => format!("untouched on {} (cannot be resolved now)", s.listen),
        };
        let _ = writeln!(out, "  service {:<12} {what}", s.name);
    }
    for e in &plan.events {
        let _ = writeln!(out, "  event   {:<12} {}", e.name, e.change);
    }
    for d in &plan.daemons {
        let what = match d.change.as_str() {
            "same" => "restarted (unchanged)",
            "changed" => "restarted (changed)",
            other => other,
        };
        let _ = writeln!(out, "  daemon  {:<12} {what}", d.name);
    }
    let _ = writeln!(out, "workers to recycle: {}", plan.recycle);
    out
}

#[cfg(test)]
mod tests {
    use super::super::proto::*;
    use super::*;

    fn service(name: &str, listen: &str) -> ServiceDoc {
        ServiceDoc {
            name: name.into(),
            family: 4,
            listen: listen.into(),
            proto: "tcp".into(),
            listening: true,
            generation: 2,
            retiring: false,
            workers: WorkersDoc {
                ready: 3,
                busy: 12,
                starting: 0,
                draining: 1,
            },
            prefork: 3,
            maxchild: Some(100),
            forks: 123_456,
            exits: Default::default(),
            crashes: 7,
            ready_fails: 0,
            waiting: 0,
            paused_until_unix: Some(1000),
            bind_error: None,
            bind_retry_unix: None,
            exec_error: None,
        }
    }

    #[test]
    fn the_table_fits_80_columns_and_shows_errors_and_the_last_reload() {
        let mut down = service("pop3s", "[2001:db8::1]:995");
        down.listening = false;
        down.bind_error = Some("Address already in use".into());
        down.bind_retry_unix = Some(2000);
        let doc = StatusDoc {
            pid: 42,
            phase: "running".into(),
            all_listening: false,
            now_unix: 0,
            services: vec![
                service("imap", "0.0.0.0:143"),
                service("lmtpunix", "/var/run/cyrus/socket/lmtp"),
                down,
            ],
            daemons: vec![DaemonDoc {
                name: "idled".into(),
                pid: Some(77),
                up_since_unix: Some(5),
                restarts: 1,
                restart_unix: None,
            }],
            events: vec![EventDoc {
                name: "checkpoint".into(),
                next_unix: Some(1800),
                running: 0,
            }],
            reloads: ReloadsDoc {
                applied: 1,
                partial: 0,
                rejected: 1,
                in_progress_since_unix: None,
                last: Some(ReportDoc {
                    id: 2,
                    result: "rejected".into(),
                    settled: false,
                    errors: vec!["/etc/cyrus.conf:3:7: error: unknown key".into()],
                    bind_errors: vec![],
                    draining: 0,
                    started_unix: 10,
                    finished_unix: 10,
                    duration_ms: 3,
                }),
            },
            master: None,
        };
        let table = status_table(&doc, &|t| format!("T{t}"));
        for line in table.lines() {
            assert!(line.len() <= 80, "{line:?}");
        }
        assert!(table.contains("master pid 42: running, NOT every service listens"));
        assert!(
            table.contains("imap       0.0.0.0:143          "),
            "{table}"
        );
        assert!(
            table.contains("lmtpunix /var/run/cyrus/socket/lmtp\n"),
            "{table}"
        );
        assert!(table.contains("123456     7 T1000"), "{table}");
        assert!(table.contains("bind error: Address already in use (retry at T2000)"));
        assert!(table.contains("idled"));
        assert!(table.contains("checkpoint       T1800"));
        assert!(table.contains("last reload: #2 at T10\n  rejected (1 problems)"));
        assert!(table.contains("  /etc/cyrus.conf:3:7: error: unknown key"));
    }

    #[test]
    fn the_plan_says_what_happens_to_each_entry() {
        let doc = PlanDoc {
            services: vec![ServicePlanDoc {
                name: "pop3".into(),
                listen: "127.0.0.1:1110".into(),
                old_listen: Some("127.0.0.1:110".into()),
                change: "rebound".into(),
                recycle: 1,
            }],
            events: vec![],
            daemons: vec![EntryPlanDoc {
                name: "idled".into(),
                change: "same".into(),
            }],
            recycle: 1,
        };
        let text = plan(&doc);
        assert!(text.contains("rebound from 127.0.0.1:110 to 127.0.0.1:1110; 1 worker to recycle"));
        assert!(text.contains("idled        restarted (unchanged)"));
        assert!(text.contains("workers to recycle: 1"));
    }
}
