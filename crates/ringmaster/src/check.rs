//! `ringmaster check`: validate a configuration and say what would run.
//!
//! Loads the configuration through the master's own loading path ([`launch::prepare`]) with
//! the master's flags, so programs and users are resolved exactly as at start-up. Prints every
//! error and warning of cyrus.conf and imapd.conf (rendered with the source line and a
//! caret), then, when the master would start, a summary of what it would run and what would
//! be down. The last line says what would happen. Exit status: 0 when everything would run
//! (warnings allowed), [`EX_DOWN`] (1) when the master would run with the listed entries
//! down, [`EXIT_CONFIG`] (78, from sysexits.h, as Cyrus's master uses) when it would refuse
//! to start.

use std::io::Write;

use ringmaster_core::{
    escape, render_capped, Config, ImapdConf, ParseEnv, RunAs, Schedule, Severity, Unresolved,
    EXIT_CONFIG,
};

use crate::cli::CheckArgs;
use crate::launch;

/// The master would run, with some entries down.
pub const EX_DOWN: i32 = 1;

/// Runs the check with the machine's services database, printing to `out`; returns the
/// process exit status.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> i32 {
    run_with(args, &launch::parse_env(), out)
}

/// [`run`] with an explicit parse environment. Loads through [`launch::prepare`], the
/// master's own loading path, with the master's flags, so the verdict is the master's.
pub fn run_with(args: &CheckArgs, env: &ParseEnv, out: &mut dyn Write) -> i32 {
    let cyrus_name = args.paths.cyrus_conf.display().to_string();
    let sources = launch::sources(&args.paths, &args.service_path);
    let policy = launch::policy(args.user.as_deref(), args.group.as_deref());
    let (prepared, diags) = match launch::prepare(&sources, &policy, env) {
        Ok(p) => {
            let mut diags = p.warnings.clone();
            diags.extend(p.down.iter().cloned());
            diags.sort_by(|a, b| {
                (&a.location.file, a.location.line, a.location.col).cmp(&(
                    &b.location.file,
                    b.location.line,
                    b.location.col,
                ))
            });
            (Some(p), diags)
        }
        Err(diags) => (None, diags),
    };

    for (_, text) in render_capped(&diags) {
        let _ = write!(out, "{text}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    if !diags.is_empty() {
        let _ = writeln!(out);
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let Some(prepared) = prepared else {
        let _ = writeln!(
            out,
            "error: the configuration is invalid: {}, {}; the master would not start",
            plural(errors, "error"),
            plural(warnings, "warning")
        );
        return EXIT_CONFIG;
    };
    let config = &prepared.setup.config;
    // Values from the files are shown as they are, control characters escaped.
    let _ = write!(out, "{}", escaped_lines(&summary(config)));
    let down = down_list(&config.unresolved);
    if !down.is_empty() {
        let _ = writeln!(out, "DOWN ({}):", down.len());
        for d in &down {
            let _ = writeln!(out, "  {}", escape(d));
        }
    }
    for line in crate::limits::check(config) {
        let _ = writeln!(out, "warning: {line}");
    }
    let imapd_name = sources.imapd_conf.display().to_string();
    if sources.imapd_conf.exists() {
        let _ = write!(
            out,
            "{}",
            escaped_lines(&imapd_summary(&imapd_name, &prepared.setup.imapd))
        );
    }
    let note = if warnings > 0 {
        format!(" ({})", plural(warnings, "warning"))
    } else {
        String::new()
    };
    if down.is_empty() {
        let _ = writeln!(out, "ok: {cyrus_name} is valid{note}");
        0
    } else {
        let _ = writeln!(
            out,
            "down: the master would run without {}{note}",
            down.join(", ")
        );
        EX_DOWN
    }
}

/// The entries that would be down, as `service nntp`, `event x`, `daemon y`.
fn down_list(unresolved: &Unresolved) -> Vec<String> {
    let named = |kind: &str, names: &[String]| {
        names
            .iter()
            .map(|n| format!("{kind} {n}"))
            .collect::<Vec<_>>()
    };
    let mut all = named("service", &unresolved.services);
    all.extend(named("event", &unresolved.events));
    all.extend(named("daemon", &unresolved.daemons));
    all
}

/// `text` with each line's control characters escaped.
fn escaped_lines(text: &str) -> String {
    text.lines()
        .map(|line| format!("{}\n", escape(line)))
        .collect()
}

/// Says an event's schedule in words.
pub fn describe_schedule(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Period { minutes: 0 } => "once, at start-up".to_string(),
        Schedule::Period { minutes: 1 } => "every minute".to_string(),
        Schedule::Period { minutes } => format!("every {minutes} min"),
        Schedule::Daily(t) => format!("daily at {:02}:{:02}", t.hour, t.minute),
        Schedule::Cron(spec) => ringmaster_core::describe_cron(spec),
    }
}

fn run_as(r: &RunAs) -> String {
    let mut s = String::new();
    if let Some(u) = &r.user {
        s.push_str(&format!(" user={u}"));
    }
    if let Some(g) = &r.group {
        s.push_str(&format!(" group={g}"));
    }
    s
}

/// The summary of what would run.
pub fn summary(config: &Config) -> String {
    let width = config
        .start
        .iter()
        .map(|e| e.name.len())
        .chain(config.services.iter().map(|e| e.name.len()))
        .chain(config.events.iter().map(|e| e.name.len()))
        .chain(config.daemons.iter().map(|e| e.name.len()))
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    let none = |s: &mut String, empty: bool| {
        if empty {
            s.push_str("  (none)\n");
        }
    };
    s.push_str(&format!("START ({}):\n", config.start.len()));
    for e in &config.start {
        s.push_str(&format!(
            "  {:width$}  {}{}\n",
            e.name,
            e.cmd,
            run_as(&e.run_as)
        ));
    }
    none(&mut s, config.start.is_empty());
    s.push_str(&format!("SERVICES ({}):\n", config.services.len()));
    for e in &config.services {
        let maxchild = e
            .maxchild
            .map_or_else(|| "unlimited".to_string(), |n| n.to_string());
        let maxforkrate = if e.maxforkrate == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", e.maxforkrate)
        };
        s.push_str(&format!(
            "  {:width$}  listen={} proto={} prefork={} maxchild={} babysit={} maxforkrate={}{}  cmd: {}\n",
            e.name,
            e.listen,
            e.proto,
            e.prefork,
            maxchild,
            if e.babysit { "yes" } else { "no" },
            maxforkrate,
            run_as(&e.run_as),
            e.cmd
        ));
    }
    none(&mut s, config.services.is_empty());
    s.push_str(&format!("EVENTS ({}):\n", config.events.len()));
    for e in &config.events {
        s.push_str(&format!(
            "  {:width$}  {}{}  cmd: {}\n",
            e.name,
            describe_schedule(&e.schedule),
            run_as(&e.run_as),
            e.cmd
        ));
    }
    none(&mut s, config.events.is_empty());
    s.push_str(&format!("DAEMON ({}):\n", config.daemons.len()));
    for e in &config.daemons {
        s.push_str(&format!(
            "  {:width$}  {}{}  cmd: {}\n",
            e.name,
            if e.wait { "wait=yes" } else { "wait=no" },
            run_as(&e.run_as),
            e.cmd
        ));
    }
    none(&mut s, config.daemons.is_empty());
    s
}

fn imapd_summary(name: &str, conf: &ImapdConf) -> String {
    let mut s = format!("imapd.conf {name}: {} options", conf.options.len());
    for (key, value) in [
        ("configdirectory", conf.configdirectory()),
        ("servername", conf.servername()),
        ("cyrus_user", conf.cyrus_user()),
        ("cyrus_group", conf.cyrus_group()),
        ("master_ready_file", conf.master_ready_file()),
        ("master_pid_file", conf.master_pid_file()),
    ] {
        if let Some(v) = value {
            s.push_str(&format!(", {key}={v}"));
        }
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmaster_core::{CronSpec, TimeOfDay};

    #[test]
    fn schedules_in_words() {
        assert_eq!(
            describe_schedule(&Schedule::Period { minutes: 30 }),
            "every 30 min"
        );
        assert_eq!(
            describe_schedule(&Schedule::Period { minutes: 0 }),
            "once, at start-up"
        );
        assert_eq!(
            describe_schedule(&Schedule::Daily(TimeOfDay { hour: 4, minute: 1 })),
            "daily at 04:01"
        );
        let spec = CronSpec {
            minutes: 1,
            hours: 1,
            days_of_month: 2,
            months: 2,
            days_of_week: 1,
            any_day_of_month: false,
            any_day_of_week: false,
            text: "0 0 1 1 0".into(),
        };
        assert_eq!(
            describe_schedule(&Schedule::Cron(spec)),
            "cron \"0 0 1 1 0\""
        );
    }
}
