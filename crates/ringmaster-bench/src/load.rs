//! The client load: N threads connect, read the banner and close, in a loop bounded in time;
//! and the light [`Background`] load `scale` runs through a recycle and a stop.
//!
//! Against 127.0.0.1, each connection comes from another address of 127.0.0.0/8: at tens of
//! thousands of connections a second, one source address runs out of ephemeral ports (every
//! closed connection holds one in TIME_WAIT for a minute), and the search for a free one then
//! makes connect slow and the figures depend on what earlier runs left behind.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-attempt bound on connect and on waiting for the banner.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// A bound on attempts per client thread, whatever the duration.
const MAX_ATTEMPTS: u64 = 10_000_000;

/// What the clients saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ok: u64,
    pub refused: u64,
    /// Reset, aborted, or closed before the banner.
    pub reset: u64,
    /// Of `reset`, those that had part of the banner first: a worker accepted the
    /// connection and then left it.
    pub cut: u64,
    /// No connection or no banner within [`CLIENT_TIMEOUT`].
    pub timeout: u64,
    pub other: u64,
    pub first_other: Option<String>,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.refused += o.refused;
        self.reset += o.reset;
        self.cut += o.cut;
        self.timeout += o.timeout;
        self.other += o.other;
        if self.first_other.is_none() {
            self.first_other = o.first_other;
        }
        self.latencies.extend(o.latencies);
    }

    /// Count one attempt.
    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok(d) => {
                self.ok += 1;
                self.latencies.push(d);
            }
            Outcome::Refused => self.refused += 1,
            Outcome::Reset => self.reset += 1,
            Outcome::Cut => {
                self.reset += 1;
                self.cut += 1;
            }
            Outcome::Timeout => self.timeout += 1,
            Outcome::Other(e) => {
                self.other += 1;
                self.first_other.get_or_insert(e);
            }
        }
    }

    pub fn failures(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.other
    }

    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100) in ms, over successful attempts.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p).map(|d| d.as_secs_f64() * 1e3)
    }
}

/// Nearest-rank percentile of `sorted` (must be sorted ascending).
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

enum Outcome {
    Ok(Duration),
    Refused,
    Reset,
    /// Reset or closed after part of the banner.
    Cut,
    Timeout,
    Other(String),
}

fn classify(e: std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => Outcome::Reset,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        _ => Outcome::Other(e.to_string()),
    }
}

/// A loopback source address for the `n`-th attempt of client `client`: 127.0.0.2 to
/// 127.0.0.251, spread over the clients.
fn loopback_source(client: usize, n: u64) -> Ipv4Addr {
    let host = 2 + ((client as u64 * 61 + n) % 250) as u8;
    Ipv4Addr::new(127, 0, 0, host)
}

fn connect_from(addr: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT);
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    // A port whose last connection from this address lingers in TIME_WAIT may be used again.
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    socket.connect_timeout(&addr.into(), CLIENT_TIMEOUT)?;
    Ok(socket.into())
}

/// One attempt: connect, send `request` (if any: an HTTP server speaks second), read up to
/// the end of the first line, close.
fn attempt(addr: SocketAddr, source: Option<Ipv4Addr>, request: &[u8]) -> Outcome {
    let start = Instant::now();
    let mut s = match connect_from(addr, source) {
        Ok(s) => s,
        Err(e) => return classify(e),
    };
    if let Err(e) = s.set_read_timeout(Some(CLIENT_TIMEOUT)) {
        return classify(e);
    }
    if !request.is_empty() {
        if let Err(e) = std::io::Write::write_all(&mut s, request) {
            return classify(e);
        }
    }
    let mut buf = [0u8; 512];
    let mut got = 0;
    let cut_short = |got: usize, outcome: Outcome| match outcome {
        Outcome::Reset if got > 0 => Outcome::Cut,
        other => other,
    };
    loop {
        match s.read(&mut buf[got..]) {
            Ok(0) => return cut_short(got, Outcome::Reset),
            Ok(n) => {
                got += n;
                if buf[..got].contains(&b'\n') {
                    return Outcome::Ok(start.elapsed());
                }
                if got == buf.len() {
                    return Outcome::Other("banner longer than 512 bytes".into());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return cut_short(got, classify(e)),
        }
    }
}

/// One connection from 127.0.0.1: the time to the end of the banner line, if it came.
pub fn banner_time(addr: SocketAddr) -> Option<Duration> {
    match attempt(addr, None, b"") {
        Outcome::Ok(d) => Some(d),
        _ => None,
    }
}

fn client(
    addr: SocketAddr,
    index: usize,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    request: &[u8],
) -> Stats {
    let mut st = Stats::default();
    let spread = addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST);
    for n in 0..MAX_ATTEMPTS {
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        let source = spread.then(|| loopback_source(index, n));
        let outcome = attempt(addr, source, request);
        // A refusal is instant: do not spin on a port that is not there.
        let pause = matches!(outcome, Outcome::Refused | Outcome::Other(_));
        st.record(outcome);
        if pause {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    st
}

/// Run `clients` client threads against `addr` for `duration`, while `meanwhile` runs on
/// this thread (it gets the deadline and must return by it).
pub fn run(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    meanwhile: impl FnOnce(Instant),
) -> Stats {
    run_with(addr, clients, duration, b"", meanwhile)
}

/// [`run`], each client sending `request` after connecting (an HTTP GET, say).
pub fn run_with(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    request: &'static [u8],
    meanwhile: impl FnOnce(Instant),
) -> Stats {
    let start = Instant::now();
    let deadline = start + duration;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for index in 0..clients.max(1) {
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            client(addr, index, deadline, stop, request)
        }));
    }
    meanwhile(deadline);
    let mut total = Stats::default();
    for h in handles {
        match h.join() {
            Ok(st) => total.merge(st),
            Err(_) => total.other += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total
}

/// The window a [`Background`] load starts no attempt in.
pub const PAUSED: usize = usize::MAX;

/// What a [`Background`] load's threads and its owner share.
struct Shared {
    /// The window new attempts are counted in, or [`PAUSED`].
    window: AtomicUsize,
    /// Attempts begun and not yet counted.
    in_flight: AtomicUsize,
    /// Attempts counted, in any window.
    done: AtomicU64,
    stop: AtomicBool,
}

/// A light load in the background: `clients` threads, each connecting to the ports in turn
/// (round-robin over all of them), reading the banner, closing, then pausing. Its owner opens
/// numbered windows (a phase of the run each); an attempt counts in the window open when it
/// began.
pub struct Background {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<Vec<Stats>>>,
    windows: usize,
    started: Instant,
}

impl Background {
    /// Start the threads, paused: nothing is tried before [`Background::open`].
    pub fn start(addrs: Vec<SocketAddr>, clients: usize, pause: Duration, windows: usize) -> Self {
        let shared = Arc::new(Shared {
            window: AtomicUsize::new(PAUSED),
            in_flight: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        // No port, no client: there would be nothing to connect to.
        let clients = if addrs.is_empty() { 0 } else { clients };
        let addrs = Arc::new(addrs);
        let threads = (0..clients)
            .map(|index| {
                let shared = Arc::clone(&shared);
                let addrs = Arc::clone(&addrs);
                std::thread::spawn(move || {
                    background_client(&shared, &addrs, index, clients, pause, windows)
                })
            })
            .collect();
        Background {
            shared,
            threads,
            windows,
            started: Instant::now(),
        }
    }

    /// Count attempts that begin from now on in `window`.
    pub fn open(&self, window: usize) {
        self.shared.window.store(window, Ordering::SeqCst);
    }

    /// Attempts finished so far, in any window.
    pub fn done(&self) -> u64 {
        self.shared.done.load(Ordering::SeqCst)
    }

    /// Begin no attempt, and wait (at most `limit`) until those under way are counted, so
    /// that none begun in one window ends in the next: whether it was lost to that window.
    pub fn pause(&self, limit: Duration) -> bool {
        self.shared.window.store(PAUSED, Ordering::SeqCst);
        let deadline = Instant::now() + limit;
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Stop the threads and sum what they saw, window by window.
    pub fn finish(self) -> Vec<Stats> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut total = vec![Stats::default(); self.windows];
        for thread in self.threads {
            match thread.join() {
                Ok(per_window) => {
                    for (sum, st) in total.iter_mut().zip(per_window) {
                        sum.merge(st);
                    }
                }
                Err(_) => {
                    if let Some(first) = total.first_mut() {
                        first.other += 1;
                        first
                            .first_other
                            .get_or_insert("a client thread panicked".into());
                    }
                }
            }
        }
        for st in &mut total {
            st.latencies.sort_unstable();
            st.elapsed = self.started.elapsed();
        }
        total
    }
}

fn background_client(
    shared: &Shared,
    addrs: &[SocketAddr],
    index: usize,
    clients: usize,
    pause: Duration,
    windows: usize,
) -> Vec<Stats> {
    let mut per_window = vec![Stats::default(); windows];
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        // Counted in flight before the window is read: once `pause` has seen none in
        // flight, no attempt can still begin in the window it closed.
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let window = shared.window.load(Ordering::SeqCst);
        let Some(stats) = per_window.get_mut(window) else {
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let turn = index as u64 + n * clients as u64;
        let addr = addrs[(turn % addrs.len() as u64) as usize];
        stats.record(attempt(addr, Some(loopback_source(index, n)), b""));
        shared.done.fetch_add(1, Ordering::SeqCst);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        n += 1;
        std::thread::sleep(pause);
    }
    per_window
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    /// A server that greets every client and waits for it to close, as the worker does.
    fn greeter() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = std::io::Write::write_all(&mut conn, b"* OK test\r\n");
                let _ = conn.read(&mut [0u8; 16]);
            }
        });
        addr
    }

    #[test]
    fn background_counts_each_attempt_in_the_window_it_began() {
        let open = greeter();
        // Bound, then dropped: nothing listens there any more.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let load = Background::start(vec![open, closed], 2, Duration::from_millis(1), 2);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(load.done(), 0, "paused until a window opens");
        load.open(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while load.done() < 8 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(load.pause(Duration::from_secs(5)));
        let in_first = load.done();
        load.open(1);
        while load.done() < in_first + 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = load.finish();
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].ok + stats[0].failures(), in_first);
        for st in &stats {
            // Round-robin: half the attempts meet the greeter, half the closed port.
            assert!(st.ok > 0 && st.refused > 0, "{st:?}");
            assert_eq!(st.ok + st.refused, st.ok + st.failures(), "{st:?}");
        }
    }
}
