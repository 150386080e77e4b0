//! `ringmaster check`: validate a configuration and say what would run.
//!
//! Prints every error and warning of cyrus.conf and imapd.conf (rendered with the source line
//! and a caret), then, when cyrus.conf is usable, a summary of what the master would run.
//! The last line says whether the configuration is valid. Exit status: 0 when it is usable
//! (warnings allowed), [`EX_CONFIG`] (78, from sysexits.h, as Cyrus's master uses) when not.

use std::io::{ErrorKind, Write};

use crate::cli::CheckArgs;
use crate::config::{self, imapd, Config, Diagnostic, ImapdConf, ParseEnv, Schedule, Severity};

/// sysexits.h EX_CONFIG: the configuration is invalid.
pub const EX_CONFIG: i32 = 78;

/// Runs the check with the machine's services database and service directory, printing to
/// `out`; returns the process exit status.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> i32 {
    run_with(args, &ParseEnv::system(), out)
}

/// [`run`] with an explicit parse environment.
pub fn run_with(args: &CheckArgs, env: &ParseEnv, out: &mut dyn Write) -> i32 {
    let cyrus_path = &args.paths.cyrus_conf;
    let cyrus_name = cyrus_path.display().to_string();
    let (config, mut diags) = match config::load_cyrus_conf_with(cyrus_path, env) {
        Ok(loaded) => (Some(loaded.config), loaded.warnings),
        Err(diags) => (None, diags),
    };

    let imapd_path = args.paths.imapd_conf_path();
    let imapd_name = imapd_path.display().to_string();
    let imapd = match imapd::load_imapd_conf_all(&imapd_path) {
        Ok((conf, more)) => {
            diags.extend(more);
            Some(conf)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            diags.push(Diagnostic::file_warning(
                &imapd_name,
                "not found; Cyrus's defaults apply",
            ));
            None
        }
        Err(e) => {
            diags.push(Diagnostic::unreadable(&imapd_name, &e));
            None
        }
    };

    for (_, text) in config::render_capped(&diags) {
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
    // Values from the files are shown as they are, control characters escaped.
    if let Some(config) = &config {
        let _ = write!(out, "{}", escaped_lines(&summary(config)));
    }
    if let Some(conf) = &imapd {
        let _ = write!(out, "{}", escaped_lines(&imapd_summary(&imapd_name, conf)));
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    if errors == 0 {
        let note = if warnings > 0 {
            format!(" ({})", plural(warnings, "warning"))
        } else {
            String::new()
        };
        let _ = writeln!(out, "ok: {cyrus_name} is valid{note}");
        0
    } else {
        let _ = writeln!(
            out,
            "error: the configuration is invalid: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        );
        EX_CONFIG
    }
}

fn escaped_lines(text: &str) -> String {
    text.lines()
        .map(|line| format!("{}\n", crate::ratelimit::escape(line)))
        .collect()
}

/// Says an event's schedule in words.
pub fn describe_schedule(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Period { minutes: 0 } => "once, at start-up".to_string(),
        Schedule::Period { minutes: 1 } => "every minute".to_string(),
        Schedule::Period { minutes } => format!("every {minutes} min"),
        Schedule::Daily(t) => format!("daily at {:02}:{:02}", t.hour, t.minute),
        Schedule::Cron(spec) => config::cron::describe(spec),
    }
}

fn run_as(r: &config::RunAs) -> String {
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
    use crate::config::{CronSpec, TimeOfDay};

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
