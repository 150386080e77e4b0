//! Command-line interface: Cyrus master's own flags for run mode, plus `check`, `demo` and
//! the control socket's client subcommands (their flags are in control/client.rs).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_CYRUS_CONF: &str = "/etc/cyrus.conf";
pub const DEFAULT_IMAPD_CONF: &str = "/etc/imapd.conf";

/// A Unix service master: runs a Cyrus IMAP cyrus.conf (START, SERVICES, EVENTS, DAEMON),
/// with SIGHUP reloads that drop no connection.
///
/// With no subcommand, ringmaster runs the master with Cyrus master's flags, so it can stand
/// where `master` (or `cyrmaster`) stands in an init script or unit file.
///
/// Signals: SIGHUP reloads (every service is recycled onto the new config), SIGTERM/SIGINT
/// stop fast, SIGQUIT stops gracefully (workers finish their clients), SIGUSR1 reopens the
/// -L log file, SIGUSR2 re-executes the master from its binary (same pid, nothing dropped).
/// Any other signal that
/// would kill or stop the master is logged and ignored.
#[derive(Debug, Parser)]
#[command(
    name = "ringmaster",
    version = crate::VERSION,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load cyrus.conf and imapd.conf as the master would (programs and users resolved), print
    /// every error and warning with file:line:col and a summary of what would run. Exit 0: it
    /// all runs; 1: the master would run with the listed entries down; 78: it would refuse
    /// to start.
    Check(CheckArgs),
    /// Run a built-in demo configuration (an echo service on 127.0.0.1) in the foreground.
    Demo(DemoArgs),
    /// Write the man pages and shell completions into DIR (packaging: docs/packaging.md).
    #[command(hide = true)]
    GenerateAssets(crate::assets::GenerateArgs),
    /// Show the running master's services, workers, daemons, events and last reload.
    Status(crate::control::client::StatusArgs),
    /// Reload the running master and wait for the result (exit 0: applied; 1: rejected or
    /// partly applied, with every error printed). Waiting is the default; --no-wait only asks.
    Reload(crate::control::client::ReloadArgs),
    /// Stop the running master and wait until it has exited.
    Stop(crate::control::client::StopArgs),
    /// Print the running master's metrics (Prometheus text exposition).
    Metrics(crate::control::client::MetricsArgs),
    /// Re-execute the running master from its binary (or --binary PATH), same pid, keeping
    /// every socket and worker; wait until the new binary answers (docs/upgrade.md).
    Upgrade(crate::control::client::UpgradeArgs),
}

#[derive(Debug, Args)]
pub struct ConfigPaths {
    /// The cyrus.conf to run.
    #[arg(short = 'M', value_name = "CYRUS_CONF", default_value = DEFAULT_CYRUS_CONF)]
    pub cyrus_conf: PathBuf,
    /// The imapd.conf the master reads (configdirectory, cyrus_user, master_ready_file...).
    /// As with Cyrus's master it is not passed on: a worker's `cmd=` says `-C` itself.
    #[arg(short = 'C', value_name = "IMAPD_CONF")]
    pub imapd_conf: Option<PathBuf>,
}

impl ConfigPaths {
    /// The imapd.conf to read: the one given, else the default.
    pub fn imapd_conf_path(&self) -> PathBuf {
        self.imapd_conf
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_IMAPD_CONF))
    }
}

/// `check` takes the master's flags that change what runs, so that it resolves programs and
/// users exactly as the master would.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub paths: ConfigPaths,
    /// As for the master: the default user for workers, events and daemons.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// As for the master: the default group for workers.
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,
    /// As for the master: where relative `cmd=` programs are looked up.
    #[arg(long, value_name = "DIRS", default_value = crate::launch::DEFAULT_SERVICE_PATH)]
    pub service_path: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// TCP port on 127.0.0.1 for the demo echo service.
    #[arg(long, default_value_t = 4143)]
    pub port: u16,
    /// Directory for the demo's generated cyrus.conf, pidfile and sockets (default: a new
    /// directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub paths: ConfigPaths,
    /// Write the master's pid here, and hold a lock on it so a second master refuses to start.
    #[arg(short = 'p', value_name = "PIDFILE")]
    pub pidfile: Option<PathBuf>,
    /// Create this file once every service listens; remove it at exit (default: imapd.conf's
    /// master_ready_file, else <configdirectory>/master.ready).
    #[arg(short = 'r', value_name = "READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// listen() backlog for every listening socket.
    #[arg(short = 'l', value_name = "BACKLOG", default_value_t = 32)]
    pub backlog: i32,
    /// Stay in the foreground and keep stdio (log to stderr).
    #[arg(short = 'D', conflicts_with = "daemonize")]
    pub foreground: bool,
    /// Daemonize: detach from the terminal and log to syslog.
    #[arg(short = 'd')]
    pub daemonize: bool,
    /// Log to this file instead of syslog or stderr.
    #[arg(short = 'L', value_name = "LOGFILE")]
    pub logfile: Option<PathBuf>,
    /// Accepted for compatibility with Cyrus's master (its janitor rate); ringmaster reaps
    /// children the moment they exit, so there is nothing to tune.
    #[arg(short = 'j', value_name = "RATE")]
    pub janitor: Option<u32>,
    /// Verbose logging (repeat for more).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Seconds a stop (SIGTERM/SIGINT) waits for workers after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub stop_timeout: Duration,
    /// Seconds an old-generation worker may go on serving its client after a reload (or a
    /// SIGQUIT) before it gets SIGTERM, then SIGKILL after --stop-timeout.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_seconds)]
    pub drain_timeout: Duration,
    /// Default user for workers, events and daemons when the master runs as root (else
    /// imapd.conf's cyrus_user, $CYRUS_USER, or `cyrus`).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Where relative `cmd=` programs are looked up, colon-separated, in order.
    #[arg(long, value_name = "DIRS", default_value = crate::launch::DEFAULT_SERVICE_PATH)]
    pub service_path: String,
    /// Run the master itself at this nice value (-20..19; below its current one needs root
    /// or CAP_SYS_NICE). Workers, events and daemons still get the nice value the master was
    /// started with. Default: the master keeps the priority it was started with.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub master_nice: Option<i32>,
    /// Default group for workers (else imapd.conf's cyrus_group, $CYRUS_GROUP, or the user's
    /// primary group).
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,
    /// The control socket for `ringmaster status/reload/stop/metrics` (default:
    /// /run/ringmaster/control.sock as root, else $XDG_RUNTIME_DIR/ringmaster/control.sock).
    #[arg(short = 'S', long = "control", value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Run without a control socket.
    #[arg(long, conflicts_with = "control")]
    pub no_control: bool,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics (e.g. 127.0.0.1:9187), from
    /// the master's own loop. Off by default; bind it to loopback or a trusted network.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The self-test a master runs on a new binary before upgrading to it: exit 0 when this
    /// binary reads upgrade state format N.
    #[arg(long, hide = true, value_name = "N")]
    pub check_upgrade: Option<u32>,
}

pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("`{text}` seconds is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cyrus_master_flags_parse() {
        let cli = Cli::try_parse_from([
            "ringmaster",
            "-C",
            "/x/imapd.conf",
            "-M",
            "/x/cyrus.conf",
            "-p",
            "/run/pid",
            "-l",
            "64",
            "-D",
            "-L",
            "/tmp/log",
            "-v",
            "-r",
            "/run/ready",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.backlog, 64);
        assert!(cli.run.foreground);
        assert_eq!(cli.run.paths.cyrus_conf, PathBuf::from("/x/cyrus.conf"));
        assert_eq!(cli.run.master_nice, None);
    }

    #[test]
    fn master_nice_takes_a_negative_value_in_range() {
        let cli = Cli::try_parse_from(["ringmaster", "--master-nice", "-5"]).unwrap();
        assert_eq!(cli.run.master_nice, Some(-5));
        assert!(Cli::try_parse_from(["ringmaster", "--master-nice", "-21"]).is_err());
        assert!(Cli::try_parse_from(["ringmaster", "--master-nice", "20"]).is_err());
    }

    #[test]
    fn check_takes_paths() {
        let cli = Cli::try_parse_from([
            "ringmaster",
            "check",
            "-M",
            "a.conf",
            "-u",
            "mail",
            "--service-path",
            "/opt/bin",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Check(args)) => {
                assert_eq!(args.paths.cyrus_conf, PathBuf::from("a.conf"));
                assert_eq!(args.user.as_deref(), Some("mail"));
                assert_eq!(args.service_path, "/opt/bin");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
