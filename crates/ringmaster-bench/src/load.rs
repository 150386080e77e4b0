//! The client load: N threads connect, read the banner and close, in a loop bounded in time.
//!
//! Against 127.0.0.1, each connection comes from another address of 127.0.0.0/8: at tens of
//! thousands of connections a second, one source address runs out of ephemeral ports (every
//! closed connection holds one in TIME_WAIT for a minute), and the search for a free one then
//! makes connect slow and the figures depend on what earlier runs left behind.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
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
        self.timeout += o.timeout;
        self.other += o.other;
        if self.first_other.is_none() {
            self.first_other = o.first_other;
        }
        self.latencies.extend(o.latencies);
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
    loop {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Outcome::Reset,
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
            Err(e) => return classify(e),
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
        match attempt(addr, source, request) {
            Outcome::Ok(d) => {
                st.ok += 1;
                st.latencies.push(d);
            }
            Outcome::Refused => {
                st.refused += 1;
                // A refusal is instant: do not spin on a port that is not there.
                std::thread::sleep(Duration::from_millis(1));
            }
            Outcome::Reset => st.reset += 1,
            Outcome::Timeout => st.timeout += 1,
            Outcome::Other(e) => {
                st.other += 1;
                st.first_other.get_or_insert(e);
                std::thread::sleep(Duration::from_millis(1));
            }
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
}
