//! What a configuration needs of the system (descriptors, processes) against what it has:
//! RLIMIT_NOFILE raised at start-up and reload as far as it can go, and a clear line when
//! the configuration cannot fit (start-up's log and `ringmaster check`).

use ringmaster_core::{Config, Listen};

use crate::sys;

/// Descriptors of the master beside its services': signalfd, epoll, stdio, the log file,
/// syslog, the pidfile, a spawn's report pipe, a reload's reads.
const BASE_FDS: u64 = 64;

/// What a configuration asks of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Descriptors the master holds: per address family of each service, a listener, the
    /// duplicate of it that epoll watches and the two ends of its status pipe; a readiness
    /// pipe per daemon.
    pub fds: u64,
    /// Processes that run once started: every prefork, every daemon.
    pub processes: u64,
    /// Most workers at once, when every service has a maxchild; None: no bound.
    pub max_processes: Option<u64>,
}

impl Needs {
    pub fn of(config: &Config) -> Needs {
        let mut fds = BASE_FDS + 2 * config.daemons.len() as u64;
        let mut processes = config.daemons.len() as u64;
        let mut max = Some(config.daemons.len() as u64);
        for s in &config.services {
            // A name or "all addresses" may give one pool per family.
            let families = match &s.listen {
                Listen::Unix(_) => 1,
                Listen::Inet { host: Some(h), .. } if h.parse::<std::net::IpAddr>().is_ok() => 1,
                Listen::Inet { .. } => 2,
            };
            // The listener and the status pipe's two ends (a reload's hand-over dups a
            // shared listener for a while: BASE_FDS covers it).
            fds += 3 * families;
            processes += u64::from(s.prefork) * families;
            max = max
                .zip(s.maxchild)
                .map(|(m, c)| m + u64::from(c) * families);
        }
        Needs {
            fds,
            processes,
            max_processes: max,
        }
    }
}

/// What does not fit, one line each, given the fd limits and pid_max (None: unknown).
pub fn problems(needs: Needs, nofile: Option<(u64, u64)>, pid_max: Option<u64>) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some((soft, hard)) = nofile {
        if needs.fds > soft {
            lines.push(format!(
                "the configuration needs about {} file descriptors, more than RLIMIT_NOFILE \
                 allows ({soft}, hard limit {hard}): some services will not listen \
                 (raise `ulimit -n`)",
                needs.fds
            ));
        }
    }
    if let Some(pid_max) = pid_max {
        if needs.processes > pid_max {
            lines.push(format!(
                "the configuration preforks {} processes, more than \
                 /proc/sys/kernel/pid_max ({pid_max})",
                needs.processes
            ));
        } else if needs.processes * 2 > pid_max {
            lines.push(format!(
                "the configuration preforks {} processes: a reload keeps each old worker until \
                 its replacement is ready, so it needs room for twice that, more than \
                 /proc/sys/kernel/pid_max ({pid_max}): raise it, or reloads will fail to fork",
                needs.processes
            ));
        } else if needs.max_processes.is_some_and(|m| m > pid_max) {
            lines.push(format!(
                "the sum of maxchild ({}) is more than /proc/sys/kernel/pid_max ({pid_max}): \
                 at full load forks will fail",
                needs.max_processes.unwrap_or(0)
            ));
        }
    }
    lines
}

/// Raises RLIMIT_NOFILE to what `config` needs (start-up and reload); returns what still
/// does not fit.
pub fn fit(config: &Config) -> Vec<String> {
    let needs = Needs::of(config);
    let nofile = match sys::limits::raise_nofile(needs.fds) {
        Ok(limits) => Some(limits),
        Err(err) => {
            tracing::warn!("cannot raise RLIMIT_NOFILE to {}: {err}", needs.fds);
            sys::limits::nofile().ok()
        }
    };
    problems(needs, nofile, sys::limits::pid_max())
}

/// What does not fit, without changing anything (`ringmaster check`): the hard limit is what
/// the master could raise its descriptors to.
pub fn check(config: &Config) -> Vec<String> {
    let needs = Needs::of(config);
    let nofile = sys::limits::nofile().ok().map(|(_, hard)| (hard, hard));
    problems(needs, nofile, sys::limits::pid_max())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(fds: u64, processes: u64, max: Option<u64>) -> Needs {
        Needs {
            fds,
            processes,
            max_processes: max,
        }
    }

    #[test]
    fn what_fits_says_nothing() {
        assert!(problems(needs(100, 10, None), Some((1024, 4096)), Some(32768)).is_empty());
    }

    #[test]
    fn too_few_descriptors_or_processes_are_said() {
        let p = problems(needs(15064, 40000, None), Some((1024, 4096)), Some(32768));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("15064 file descriptors"), "{p:?}");
        assert!(p[1].contains("preforks 40000"), "{p:?}");
        let p = problems(needs(10, 20000, None), None, Some(32768));
        assert!(p[0].contains("twice that"), "{p:?}");
        let p = problems(needs(10, 10, Some(50000)), None, Some(32768));
        assert!(p[0].contains("sum of maxchild (50000)"), "{p:?}");
    }
}
