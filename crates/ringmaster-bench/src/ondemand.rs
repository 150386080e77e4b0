//! `ringmaster-bench scale`, services: S services with prefork=0 and one use per worker;
//! times the start (until all S ports listen) and then, one client at a time, connections to
//! random services (each makes the master start a worker): the time to the banner.

use std::collections::HashSet;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::limits;
use crate::load;
use crate::master::{Kind, Master, ServiceSpec};
use crate::scale::{free_ports, services_conf, worker_cmd, Outcome, Setup};

/// Failed connections, with none served yet, after which the rest count as failed too.
const GIVE_UP_AFTER: u64 = 10;

/// What one run with S on-demand services measured.
#[derive(Debug, Clone)]
pub struct DemandRun {
    pub start: Outcome,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub failures: u64,
}

/// Ports of `wanted` in the LISTEN state, from /proc/net/tcp (what the master has bound,
/// seen without connecting: a connection would start a worker).
fn listening(wanted: &HashSet<u16>) -> Vec<u16> {
    parse_listening(
        &fs::read_to_string("/proc/net/tcp").unwrap_or_default(),
        wanted,
    )
}

fn parse_listening(text: &str, wanted: &HashSet<u16>) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace().skip(1);
            let (local, state) = (f.next()?, f.nth(1)?);
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (state == "0A" && wanted.contains(&port)).then_some(port)
        })
        .collect()
}

fn wait_listening(master: &mut Master, ports: &[u16], since: Instant, limit: Duration) -> Outcome {
    let wanted: HashSet<u16> = ports.iter().copied().collect();
    loop {
        let have = listening(&wanted).len();
        if have >= wanted.len() {
            return Ok(since.elapsed().as_secs_f64());
        }
        if let Some(status) = master.exited() {
            return Err(format!(
                "master exited ({status}) with {have} of {} ports bound{}",
                wanted.len(),
                master.log_tail()
            ));
        }
        if since.elapsed() > limit {
            return Err(format!(
                "not done after {} s: {have} of {} ports bound",
                limit.as_secs(),
                wanted.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A small deterministic generator: the same services are tried under every master.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One run: start S services, then `connects` connections one after another to those that
/// listen.
pub fn run_services(
    kind: Kind,
    program: &Path,
    services: u32,
    connects: u32,
    setup: &Setup,
) -> DemandRun {
    let mut run = DemandRun {
        start: Err("not started".into()),
        p50_ms: None,
        p99_ms: None,
        failures: 0,
    };
    let ports = match free_ports(services as usize) {
        Ok(p) => p,
        Err(e) => {
            run.start = Err(e);
            return run;
        }
    };
    let conf = services_conf(&ports, &worker_cmd(setup, 1, None), 0);
    let spec = ServiceSpec {
        worker: setup.worker.clone(),
        prefork: 0,
        max_uses: 1,
        announce: setup.announce,
        extra_args: String::new(),
    };
    let since = Instant::now();
    let mut master = match Master::launch(kind, program, &conf, ports[0], &spec) {
        Ok(m) => m,
        Err(e) => {
            run.start = Err(e);
            return run;
        }
    };
    run.start = wait_listening(&mut master, &ports, since, setup.limit);
    // When some services could not listen, the others still tell the connect latency.
    let ports = listening(&ports.iter().copied().collect());
    if !ports.is_empty() && master.exited().is_none() {
        let mut times = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..connects {
            let port = ports[(next_random(&mut seed) % ports.len() as u64) as usize];
            match load::banner_time(SocketAddr::from(([127, 0, 0, 1], port))) {
                Some(d) => times.push(d),
                None => run.failures += 1,
            }
            // A master that serves nothing would cost a client timeout per connection.
            if times.is_empty() && run.failures >= GIVE_UP_AFTER {
                run.failures = connects as u64;
                break;
            }
        }
        times.sort_unstable();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        run.p50_ms = ms(load::percentile(&times, 50.0));
        run.p99_ms = ms(load::percentile(&times, 99.0));
    }
    let _ = master.terminate(setup.stop_limit);
    master.stop();
    limits::sweep_orphans(&setup.worker.display().to_string(), &HashSet::new());
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
            1: 0100007F:1F91 0100007F:C000 01 00000000:00000000\n\
            2: 0100007F:1F92 00000000:0000 0A 00000000:00000000\n";
        let wanted: HashSet<u16> = [0x1f90, 0x1f91].into_iter().collect();
        assert_eq!(parse_listening(text, &wanted), vec![0x1f90]);
    }
}
