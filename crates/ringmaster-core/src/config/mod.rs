//! cyrus.conf and imapd.conf: reading, validating and modelling the configuration.
//!
//! Layers: `lexer` (lines, comments, `key=value`), `parser` (sections and entries),
//! `validate` (keys, defaults, addresses, schedules, conflicts) into `model`; `listen`,
//! `cron` and `services_db` are the small pure pieces they use. The functions taking text are
//! pure; the `load_*` functions add the file system. Programs are looked up by the shell
//! (`launch::prepare`), not here, so `check` and start-up share one lookup.

pub mod cron;
pub mod diagnostic;
pub mod imapd;
mod lexer;
pub mod listen;
pub mod model;
mod parser;
pub mod services_db;
mod validate;

pub use cron::describe as describe_cron;
pub use diagnostic::{render, render_capped, Diagnostic, Severity};
pub use imapd::{load_imapd_conf_all, parse_imapd_conf, ImapdConf};
pub use model::*;
pub use services_db::{ServicesDb, Transport};

use std::path::Path;

/// What parsing needs from the world, injectable so tests do not depend on the machine.
#[derive(Debug, Clone)]
pub struct ParseEnv {
    /// Service names for `listen=`.
    pub services: ServicesDb,
}

impl Default for ParseEnv {
    /// The built-in service names: fully pure.
    fn default() -> Self {
        ParseEnv {
            services: ServicesDb::builtin(),
        }
    }
}

/// A config that parsed and validated, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates the text of a cyrus.conf. Every problem is reported, in file order;
/// the config is returned when none of them is an error. Never panics, whatever the text.
pub fn parse_cyrus_conf(
    file_name: &str,
    text: &str,
    env: &ParseEnv,
) -> (Option<Config>, Vec<Diagnostic>) {
    let (raw, mut diags) = parser::parse(file_name, text);
    let (config, more) = validate::validate(&raw, env);
    diags.extend(more);
    diags.sort_by_key(|d| (d.location.line, d.location.col));
    let ok = !diags.iter().any(Diagnostic::is_error);
    (ok.then_some(config), diags)
}

/// Reads, parses and validates a cyrus.conf. Every error in the file is reported, not just
/// the first.
pub fn load_cyrus_conf_with(path: &Path, env: &ParseEnv) -> Result<Loaded, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| vec![Diagnostic::unreadable(&file, &e)])?;
    let text = String::from_utf8_lossy(&bytes);
    let mut pre = Vec::new();
    if std::str::from_utf8(&bytes).is_err() {
        pre.push(Diagnostic::file_warning(
            &file,
            "not valid UTF-8; invalid bytes are read as U+FFFD",
        ));
    }
    let (config, diags) = parse_cyrus_conf(&file, &text, env);
    pre.extend(diags);
    match config {
        Some(config) => Ok(Loaded {
            config,
            warnings: pre,
        }),
        None => Err(pre),
    }
}

#[cfg(test)]
mod tests;
