//! Everything the master knows before it forks: the loaded configuration, where each program
//! lives, who each process runs as, and the environment children get.
//!
//! One loading path ([`prepare`]) for start-up, reload and `ringmaster check`: a syntax error
//! rejects the whole file; an entry whose program or user cannot be resolved is left out (and
//! named in `Config::unresolved`) so that every other entry runs.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use ringmaster_core::{
    render_capped, Config, Diagnostic, ImapdConf, Location, ParseEnv, RateLimiter, Role, RunAs,
    ServicesDb, Severity, SpawnRequest, Unresolved, Verdict,
};

use crate::exec;
use crate::sys;
use crate::sys::spawn::ExecSpec;
use crate::sys::users::Credentials;

/// Where relative `cmd=` programs are looked up, in order (Cyrus: LIBEXEC_DIR, then SBIN_DIR).
pub const DEFAULT_SERVICE_PATH: &str =
    "/usr/lib/cyrus/bin:/usr/libexec/cyrus-imapd:/usr/lib/cyrus-imapd:/usr/sbin";

/// Variables of the master's own environment that children must not see: they describe the
/// master's supervision (systemd socket activation, readiness), not the child's.
const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// Who the master is and whom children run as by default.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    /// The master runs as root: children get the configured identities.
    pub am_root: bool,
    /// From -u; else imapd.conf's cyrus_user; else $CYRUS_USER; else `cyrus` if it exists.
    pub cli_user: Option<String>,
    pub cli_group: Option<String>,
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub cyrus_conf: PathBuf,
    pub imapd_conf: PathBuf,
    /// -C was given: a missing imapd.conf is an error then.
    pub imapd_conf_required: bool,
    pub service_path: Vec<PathBuf>,
}

/// A configuration checked down to the last program and user.
#[derive(Debug, Clone)]
pub struct LoadedSetup {
    pub config: Config,
    pub imapd: ImapdConf,
    programs: HashMap<String, PathBuf>,
    identities: HashMap<RunAs, Option<Credentials>>,
}

/// Why a configuration did not load: what to print (capped, escaped), and whether the file
/// could not even be read (an I/O error is not an invalid configuration).
#[derive(Debug, Clone)]
pub struct LoadError {
    pub problems: Vec<(Severity, String)>,
    pub unreadable: bool,
}

impl LoadError {
    fn from_diagnostics(diags: &[Diagnostic]) -> LoadError {
        LoadError {
            problems: render_capped(diags),
            unreadable: diags.iter().any(|d| d.unreadable),
        }
    }

    /// Logs every problem at its own level (warnings are WARN); `prefix` leads each line.
    pub fn log(&self, prefix: &str) {
        for (severity, text) in &self.problems {
            match severity {
                Severity::Error => error!("{prefix}{}", text.trim_end()),
                Severity::Warning => warn!("{prefix}{}", text.trim_end()),
            }
        }
    }
}

/// Loads, validates and prepares spawning.
pub struct Launcher {
    sources: Sources,
    policy: IdentityPolicy,
    base_env: Vec<(String, String)>,
    setup: LoadedSetup,
    /// The nice value children get back when the master runs at another one (--master-nice).
    child_nice: Option<i32>,
    /// Full reports of rejected reloads, bounded: a SIGHUP storm onto a broken file logs one
    /// line per reload once the first few reports are out.
    rejections: RateLimiter<()>,
}

impl Launcher {
    /// Loads the configuration for start-up. Err: the master must not start; it carries every
    /// problem, rendered (capped, escaped). Entries that are down are logged here and left out.
    pub fn load(sources: Sources, policy: IdentityPolicy) -> Result<Launcher, LoadError> {
        let prepared = prepare(&sources, &policy, &parse_env())
            .map_err(|diags| LoadError::from_diagnostics(&diags))?;
        for (_, text) in render_capped(&prepared.warnings) {
            warn!("{}", text.trim_end());
        }
        for (_, text) in render_capped(&prepared.down) {
            error!("{}; it stays down", text.trim_end());
        }
        let base_env = std::env::vars()
            .filter(|(k, _)| !PRIVATE_ENV.contains(&k.as_str()))
            .filter(|(k, _)| {
                k != ringmaster_proto::ENV_SERVICE
                    && k != ringmaster_proto::ENV_ID
                    && k != ringmaster_proto::ENV_ISDAEMON
            })
            .collect();
        Ok(Launcher {
            sources,
            policy,
            base_env,
            setup: prepared.setup,
            child_nice: None,
            rejections: RateLimiter::default(),
        })
    }

    /// Children are to run at this nice value (the master's own was changed).
    pub fn set_child_nice(&mut self, nice: Option<i32>) {
        self.child_nice = nice;
    }

    pub fn setup(&self) -> &LoadedSetup {
        &self.setup
    }

    /// Reads the configuration again for a reload. Invalid: every problem is logged, the
    /// running setup stays as it was, and every problem (warnings included) is returned,
    /// rendered with its file:line:col. Entries that are down are logged; the supervisor
    /// keeps what runs under their names.
    pub fn reload(&mut self) -> Result<Config, Vec<String>> {
        match prepare(&self.sources, &self.policy, &parse_env()) {
            Ok(prepared) => {
                for (_, text) in render_capped(&prepared.warnings) {
                    warn!("reload: {}", text.trim_end());
                }
                for (_, text) in render_capped(&prepared.down) {
                    error!("reload: {}", text.trim_end());
                }
                info!(
                    "configuration reloaded from {}",
                    self.sources.cyrus_conf.display()
                );
                let config = prepared.setup.config.clone();
                self.setup = prepared.setup;
                Ok(config)
            }
            Err(diags) => {
                let failure = LoadError::from_diagnostics(&diags);
                match self.rejections.check(&(), std::time::Instant::now()) {
                    Verdict::Log { suppressed } => {
                        if suppressed > 0 {
                            warn!(
                                "reload: suppressed the details of {suppressed} similar rejections"
                            );
                        }
                        failure.log("reload: ");
                    }
                    Verdict::Suppress => {}
                }
                let verdict = if failure.unreadable {
                    "reload failed: the configuration could not be read"
                } else {
                    "reload rejected: the new configuration is invalid"
                };
                error!("{verdict}; still running the previous one");
                Err(failure
                    .problems
                    .iter()
                    .map(|(_, text)| text.trim_end().to_string())
                    .collect())
            }
        }
    }

    /// Loads and validates the configuration as [`Launcher::reload`] does, for a dry run:
    /// nothing is logged or kept. Err: every problem, rendered with its file:line:col.
    pub fn dry_run(&self) -> Result<Config, Vec<String>> {
        match prepare(&self.sources, &self.policy, &parse_env()) {
            Ok(prepared) => Ok(prepared.setup.config),
            Err(diags) => Err(LoadError::from_diagnostics(&diags)
                .problems
                .iter()
                .map(|(_, text)| text.trim_end().to_string())
                .collect()),
        }
    }

    /// The process a spawn request describes, minus its descriptors (the runtime adds them).
    pub fn exec_spec(&self, request: &SpawnRequest) -> Result<ExecSpec, String> {
        let argv0 = request
            .argv
            .first()
            .ok_or_else(|| format!("{}: empty command", request.name))?;
        let program = match self.setup.programs.get(argv0) {
            Some(path) => path.clone(),
            None => find_program(argv0, &self.sources.service_path)
                .ok_or_else(|| format!("{}: cannot find executable {argv0}", request.name))?,
        };
        let credentials = match self.setup.identities.get(&request.run_as) {
            Some(creds) => creds.clone(),
            None => resolve_identity(&request.run_as, &self.policy, &self.setup.imapd)?,
        };
        let mut env: Vec<CString> = Vec::new();
        let overridden = |k: &str| request.env.iter().any(|(key, _)| key == k);
        for (key, value) in self
            .base_env
            .iter()
            .filter(|(k, _)| !overridden(k))
            .chain(request.env.iter())
        {
            env.push(cstring(&format!("{key}={value}"))?);
        }
        Ok(ExecSpec {
            program: cstring(&program.to_string_lossy())?,
            argv: request
                .argv
                .iter()
                .map(|a| cstring(a))
                .collect::<Result<_, _>>()?,
            env,
            status_fd: None,
            listen_fd: None,
            // maxfds, else what the master started with (if it raised its own).
            nofile_limit: match request.maxfds {
                0 => sys::limits::original_nofile(),
                n => Some((n, n)),
            },
            credentials,
            parent_death_signal: true,
            cwd: None,
            nice: self.child_nice,
            own_process_group: matches!(request.role, Role::Worker { .. }),
        })
    }

    /// Removes what a crashed Cyrus worker leaves behind: its proc file (which Cyrus's
    /// maxlogins counts) and its idle socket.
    pub fn cleanup_after_crash(&self, pid: i32) {
        let imapd = &self.setup.imapd;
        let Some(configdir) = imapd.configdirectory() else {
            return;
        };
        let proc_dir = imapd
            .get("proc_path")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(configdir).join("proc"));
        let candidates = [
            proc_dir.join(pid.to_string()),
            proc_dir.join(format!("{pid}.new")),
            proc_dir.join(format!(".{pid}.new")),
            Path::new(configdir)
                .join("socket")
                .join(format!("idle.{pid}")),
        ];
        for path in candidates {
            match std::fs::remove_file(&path) {
                Ok(()) => info!("removed {} left by crashed worker {pid}", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

fn cstring(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("{text:?} contains a NUL byte"))
}

/// Looks a program up: absolute as is, relative in each service directory in turn.
pub fn find_program(argv0: &str, service_path: &[PathBuf]) -> Option<PathBuf> {
    if argv0.starts_with('/') {
        return exec::resolve_executable(argv0, Path::new("/"));
    }
    service_path
        .iter()
        .find_map(|dir| exec::resolve_executable(argv0, dir))
}

/// The parse environment of the master and of `check`: the machine's services database; no
/// executable lookups while parsing, as [`prepare`] resolves programs along the service path.
pub fn parse_env() -> ParseEnv {
    ParseEnv {
        services: ServicesDb::system(),
    }
}

/// Where the configuration comes from, given the master's flags.
pub fn sources(paths: &crate::cli::ConfigPaths, service_path: &str) -> Sources {
    Sources {
        cyrus_conf: paths.cyrus_conf.clone(),
        imapd_conf: paths.imapd_conf_path(),
        imapd_conf_required: paths.imapd_conf.is_some(),
        service_path: parse_service_path(service_path),
    }
}

/// Who children run as, given the master's flags and who runs this process.
pub fn policy(user: Option<&str>, group: Option<&str>) -> IdentityPolicy {
    IdentityPolicy {
        am_root: sys::users::is_root(),
        cli_user: user.map(String::from),
        cli_group: group.map(String::from),
    }
}

/// Splits a colon-separated list of directories.
pub fn parse_service_path(text: &str) -> Vec<PathBuf> {
    text.split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// What [`prepare`] made of the configuration: what runs, and what is down and why.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The configuration to run: every entry in it resolved; `config.unresolved` names the
    /// entries left out.
    pub setup: LoadedSetup,
    /// Warnings about cyrus.conf and imapd.conf.
    pub warnings: Vec<Diagnostic>,
    /// One error per entry left out (its program or user cannot be resolved), at the entry.
    pub down: Vec<Diagnostic>,
}

/// The one loading path of start-up, reload and `ringmaster check`: parses cyrus.conf and
/// imapd.conf, then resolves every entry's program and identity. An entry that cannot be
/// resolved is left out (down, with an error at its location) so that the others run; only
/// a START entry is fatal, as START prepares what everything else needs (Cyrus exits when a
/// START command fails). Err: the master must refuse to start (or keep the old
/// configuration on reload), with every problem found, warnings included.
pub fn prepare(
    sources: &Sources,
    policy: &IdentityPolicy,
    env: &ParseEnv,
) -> Result<Prepared, Vec<Diagnostic>> {
    let parsed = ringmaster_core::load_cyrus_conf_with(&sources.cyrus_conf, env);
    let mut diags = match &parsed {
        Ok(loaded) => loaded.warnings.clone(),
        Err(diags) => diags.clone(),
    };
    let imapd = load_imapd(sources, &mut diags);
    let loaded = match parsed {
        Ok(loaded) if !diags.iter().any(Diagnostic::is_error) => loaded,
        _ => return Err(diags),
    };
    let lines = source_lines(&sources.cyrus_conf);
    let mut resolver = Resolver {
        sources,
        policy,
        imapd: &imapd,
        lines: &lines,
        programs: HashMap::new(),
        identities: HashMap::new(),
        down: Vec::new(),
    };
    let mut config = loaded.config;
    if let Err(fatal) = resolver.resolve_all(&mut config) {
        diags.extend(fatal);
        return Err(diags);
    }
    let Resolver {
        programs,
        identities,
        down,
        ..
    } = resolver;
    Ok(Prepared {
        setup: LoadedSetup {
            config,
            imapd,
            programs,
            identities,
        },
        warnings: diags,
        down,
    })
}

/// imapd.conf, or Cyrus's defaults when it is missing and was not asked for by name.
fn load_imapd(sources: &Sources, diags: &mut Vec<Diagnostic>) -> ImapdConf {
    let imapd_name = sources.imapd_conf.display().to_string();
    match ringmaster_core::load_imapd_conf_all(&sources.imapd_conf) {
        Ok((conf, more)) => {
            diags.extend(more);
            conf
        }
        Err(e) if e.kind() == ErrorKind::NotFound && !sources.imapd_conf_required => {
            diags.push(Diagnostic::file_warning(
                &imapd_name,
                "not found; Cyrus's defaults apply",
            ));
            ImapdConf::default()
        }
        Err(e) => {
            diags.push(Diagnostic::file_error(
                &imapd_name,
                format!("cannot read: {e}"),
            ));
            ImapdConf::default()
        }
    }
}

/// cyrus.conf's lines, for quoting an entry in its diagnostics.
fn source_lines(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Resolves entries one by one, remembering what it found for the spawns to come.
struct Resolver<'a> {
    sources: &'a Sources,
    policy: &'a IdentityPolicy,
    imapd: &'a ImapdConf,
    lines: &'a [String],
    programs: HashMap<String, PathBuf>,
    identities: HashMap<RunAs, Option<Credentials>>,
    down: Vec<Diagnostic>,
}

impl Resolver<'_> {
    /// START entries must all resolve (Err: their problems); other entries that do not are
    /// left out of `config` and listed in `config.unresolved`.
    fn resolve_all(&mut self, config: &mut Config) -> Result<(), Vec<Diagnostic>> {
        let fatal: Vec<Diagnostic> = config
            .start
            .iter()
            .filter_map(|e| self.entry("START", &e.name, &e.cmd, &e.run_as, &e.location))
            .collect();
        if !fatal.is_empty() {
            return Err(fatal);
        }
        let mut unresolved = Unresolved::default();
        config.services.retain(|e| {
            let ok = self.ok("service", &e.name, &e.cmd, &e.run_as, &e.location);
            if !ok {
                unresolved.services.push(e.name.clone());
            }
            ok
        });
        config.events.retain(|e| {
            let ok = self.ok("event", &e.name, &e.cmd, &e.run_as, &e.location);
            if !ok {
                unresolved.events.push(e.name.clone());
            }
            ok
        });
        config.daemons.retain(|e| {
            let ok = self.ok("daemon", &e.name, &e.cmd, &e.run_as, &e.location);
            if !ok {
                unresolved.daemons.push(e.name.clone());
            }
            ok
        });
        config.unresolved = unresolved;
        Ok(())
    }

    /// True when the entry can run; otherwise its error goes to `down`.
    fn ok(
        &mut self,
        kind: &str,
        name: &str,
        cmd: &ringmaster_core::Command,
        run_as: &RunAs,
        location: &Location,
    ) -> bool {
        match self.entry(kind, name, cmd, run_as, location) {
            None => true,
            Some(problem) => {
                self.down.push(problem);
                false
            }
        }
    }

    /// The first problem with an entry's program or identity, if any.
    fn entry(
        &mut self,
        kind: &str,
        name: &str,
        cmd: &ringmaster_core::Command,
        run_as: &RunAs,
        location: &Location,
    ) -> Option<Diagnostic> {
        let source_line = location
            .line
            .checked_sub(1)
            .and_then(|i| self.lines.get(i as usize))
            .map_or("", String::as_str);
        let problem = |message: String| Diagnostic::error(location.clone(), message, source_line);
        if let Some(argv0) = cmd.argv.first() {
            if !self.programs.contains_key(argv0) {
                let Some(path) = find_program(argv0, &self.sources.service_path) else {
                    let looked = if argv0.starts_with('/') {
                        String::new()
                    } else {
                        format!(
                            " (looked in {})",
                            self.sources
                                .service_path
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    return Some(problem(format!(
                        "cannot find executable for {kind} '{name}': {argv0}{looked}"
                    )));
                };
                self.programs.insert(argv0.clone(), path);
            }
        }
        if !self.identities.contains_key(run_as) {
            match resolve_identity(run_as, self.policy, self.imapd) {
                Ok(creds) => {
                    self.identities.insert(run_as.clone(), creds);
                }
                Err(e) => return Some(problem(format!("{kind} '{name}': {e}"))),
            }
        }
        None
    }
}

/// Whom a process of an entry runs as. None: as the master (an unprivileged master).
pub fn resolve_identity(
    run_as: &RunAs,
    policy: &IdentityPolicy,
    imapd: &ImapdConf,
) -> Result<Option<Credentials>, String> {
    if !policy.am_root {
        // An unprivileged master can only run children as itself: say so now, not at fork.
        let me = sys::users::current_credentials();
        if let Some(user) = &run_as.user {
            let wanted = sys::users::lookup_credentials(user, None)?;
            if wanted.uid != me.uid {
                return Err(format!(
                    "user={user} needs a master started as root (this master runs as uid {})",
                    me.uid
                ));
            }
        }
        if let Some(group) = &run_as.group {
            let gid = sys::users::lookup_group(group)?;
            if gid != me.gid {
                return Err(format!(
                    "group={group} needs a master started as root (this master runs as gid {})",
                    me.gid
                ));
            }
        }
        return Ok(None);
    }
    let env_user = std::env::var("CYRUS_USER").ok();
    let env_group = std::env::var("CYRUS_GROUP").ok();
    let user = run_as
        .user
        .clone()
        .or_else(|| policy.cli_user.clone())
        .or_else(|| imapd.cyrus_user().map(String::from))
        .or(env_user)
        .or_else(|| sys::users::user_exists("cyrus").then(|| "cyrus".to_string()))
        .ok_or_else(|| {
            "the master runs as root and no user is set for its children: give -u USER, \
             cyrus_user in imapd.conf, CYRUS_USER in the environment, or user= on the entry \
             (user=root only if you mean it)"
                .to_string()
        })?;
    let group = run_as
        .group
        .clone()
        .or_else(|| policy.cli_group.clone())
        .or_else(|| imapd.cyrus_group().map(String::from))
        .or(env_group);
    sys::users::lookup_credentials(&user, group.as_deref()).map(Some)
}
