//! End-to-end test of on-demand spawning under a steady stream of one-use workers: every
//! worker serves before it exits, so none may count as a failure, whatever order its note
//! and its exit reach the master in.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn one_use_workers_that_served_never_throttle_the_pool() {
    const CLIENTS: u64 = 8;
    const PER_CLIENT: u64 = 150;
    let dir = TestDir::new("spawn-burst");
    let port = free_port();
    let conf = format!(
        "SERVICES {{\n  burst cmd=\"{WORKER} -U 1\" listen=\"127.0.0.1:{port}\" prefork=0\n}}\n"
    );
    let mut m = Start::new(&dir, &conf).start();
    // Each client connects, waits for its banner and leaves, as fast as it can: each
    // connection needs a new worker, and the workers' notes and exits arrive mixed with the
    // forks. A worker taken for one that exited before serving counts towards the throttle,
    // which shuts the listener (refused connections) and says so in the log.
    let served = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let served = Arc::clone(&served);
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..PER_CLIENT {
                    if Instant::now() > deadline {
                        return Err("out of time".into());
                    }
                    let mut stream = connect_from_spread(port, c * PER_CLIENT + i)
                        .map_err(|e| format!("connection {i}: {e}"))?;
                    stream
                        .set_read_timeout(Some(WAIT))
                        .map_err(|e| e.to_string())?;
                    let banner = read_line(&stream);
                    if !banner.starts_with("* OK") {
                        return Err(format!("connection {i}: no banner: {banner:?}"));
                    }
                    let _ = stream.write_all(b"QUIT\r\n");
                    served.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or_else(|_| Err("client panicked".into())))
        .collect();
    let log = m.log_text();
    m.stop();
    assert!(
        !log.contains("pool_throttled"),
        "workers that served were counted as failures:\n{log}"
    );
    for r in results {
        assert!(
            r.is_ok(),
            "{r:?} ({} served)\n{log}",
            served.load(Ordering::Relaxed)
        );
    }
}
