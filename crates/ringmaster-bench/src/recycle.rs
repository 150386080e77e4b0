//! The idle-pool recycle scenario: SIGHUP until no old worker is left and a full new pool
//! runs, timed over several rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::master::{Kind, Master, ServiceSpec};
use crate::table::{row, Better, Row};
use crate::{load, procfs};

/// With an idle pool of `spec.prefork`, time SIGHUP -> no old worker left and a full new pool.
pub fn recycle_scenario(
    kind: Kind,
    program: &Path,
    spec: &ServiceSpec,
    rounds: u32,
) -> Result<Vec<Row>, String> {
    const LIMIT: Duration = Duration::from_secs(20);
    let mut master = Master::start(kind, program, spec)?;
    let want = spec.prefork as usize;
    let mut times = Vec::new();
    let (mut old_gone_times, mut new_running_times) = (Vec::new(), Vec::new());
    let mut failure = None;
    for _ in 0..rounds.max(1) {
        if let Err(e) = master.wait_children(want, LIMIT) {
            failure = Some(e);
            break;
        }
        let old = procfs::children(master.pid());
        let start = Instant::now();
        if let Err(e) = master.signal(Signal::SIGHUP) {
            failure = Some(e);
            break;
        }
        let (mut old_gone, mut new_running) = (None, None);
        loop {
            let now = procfs::children(master.pid());
            let stale = now.iter().filter(|p| old.contains(p)).count();
            if stale == 0 && old_gone.is_none() {
                old_gone = Some(start.elapsed());
            }
            if now.len() - stale >= want && new_running.is_none() {
                new_running = Some(start.elapsed());
            }
            if let (Some(gone), Some(running)) = (old_gone, new_running) {
                times.push(gone.max(running));
                old_gone_times.push(gone);
                new_running_times.push(running);
                break;
            }
            if start.elapsed() > LIMIT {
                let first = now.iter().find(|p| old.contains(p)).copied();
                failure = Some(format!(
                    "not recycled after {LIMIT:?}: {stale} old workers left, {} new; \
                     first left: {}",
                    now.len() - stale,
                    first.map(procfs::describe).unwrap_or_default()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if failure.is_some() {
            break;
        }
        // Let the pool settle (and the clock of any fork-rate limit pass) between rounds.
        std::thread::sleep(Duration::from_millis(500));
    }
    master.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    times.sort_unstable();
    old_gone_times.sort_unstable();
    new_running_times.sort_unstable();
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    Ok(vec![
        row(
            "recycle p50 ms",
            ms(load::percentile(&times, 50.0)),
            Better::Lower,
        ),
        row("recycle max ms", ms(times.last().copied()), Better::Lower),
        row(
            "  no old worker left, p50 ms",
            ms(load::percentile(&old_gone_times, 50.0)),
            Better::Lower,
        ),
        row(
            "  all new ones running, p50 ms",
            ms(load::percentile(&new_running_times, 50.0)),
            Better::Lower,
        ),
        row("rounds", times.len() as f64, Better::Neither),
    ])
}
