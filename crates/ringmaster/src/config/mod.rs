//! cyrus.conf and imapd.conf: reading, validating and modelling the configuration.
//!
//! Layers: `lexer` (lines, comments, `key=value`), `parser` (sections and entries),
//! `validate` (keys, defaults, addresses, schedules, conflicts) into `model`; `listen`,
//! `cron`, `services_db` and `exec` are the small pure pieces they use. The functions taking
//! text are pure; the `load_*` functions add the file system.

pub mod cron;
pub mod diagnostic;
pub mod exec;
pub mod imapd;
mod lexer;
pub mod listen;
pub mod model;
mod parser;
pub mod services_db;
mod validate;

pub use diagnostic::{render, render_capped, Diagnostic, Severity};
pub use exec::{executable_path, resolve_executable, DEFAULT_SERVICE_DIR};
pub use imapd::{load_imapd_conf, parse_imapd_conf, ImapdConf};
pub use model::*;
pub use services_db::{ServicesDb, Transport};
pub use validate::{BABYSIT_MAXFORKRATE, DEFAULT_MAXFDS};

use std::path::{Path, PathBuf};

/// What parsing needs from the world, injectable so tests do not depend on the machine.
#[derive(Debug, Clone)]
pub struct ParseEnv {
    /// Service names for `listen=`.
    pub services: ServicesDb,
    /// When set, each `cmd=`'s program is looked up (relative ones in this directory) and one
    /// that is missing is a warning. None: no file system access at all.
    pub service_dir: Option<PathBuf>,
}

impl Default for ParseEnv {
    /// The built-in service names, no executable checks: fully pure.
    fn default() -> Self {
        ParseEnv {
            services: ServicesDb::builtin(),
            service_dir: None,
        }
    }
}

impl ParseEnv {
    /// The machine's view: /etc/services (or `$RINGMASTER_SERVICES_FILE`; the built-in table
    /// when unreadable) and executables looked up in [`DEFAULT_SERVICE_DIR`].
    pub fn system() -> Self {
        ParseEnv {
            services: ServicesDb::system(),
            service_dir: Some(PathBuf::from(DEFAULT_SERVICE_DIR)),
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

/// Reads, parses and validates a cyrus.conf with [`ParseEnv::system`]. Every error in the
/// file is reported, not just the first.
pub fn load_cyrus_conf(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    load_cyrus_conf_with(path, &ParseEnv::system())
}

/// [`load_cyrus_conf`] with an explicit environment.
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
