//! The control socket's connections, served from the master's loop without ever blocking:
//! a cap on connections, a bounded request line with a time limit, nonblocking writes with a
//! time limit, and connections that wait (for a reload's report, or for the master's exit).
//! What a request does is the runtime's business (runtime/control.rs); this file only moves
//! bytes and keeps time.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringmaster_core::{RateLimiter, Verdict};
use tracing::{debug, warn};

use super::proto::{parse_request, Answer, Request};
use crate::sys::control::{read_some, write_some, ControlListener, Peer, ReadOutcome};
use crate::sys::poller::Poller;

/// Connections served at once; more are told "busy" and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// The longest request line.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Time to send the request line.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Time for a client to take an answer.
pub const WRITE_TIME: Duration = Duration::from_secs(10);
/// The longest a `reload` waits for its report (one always comes within seconds).
pub const RELOAD_WAIT: Duration = Duration::from_secs(600);
/// After a failed accept (out of descriptors): the listener is not watched for this long,
/// since the pending connection would wake the level-triggered loop at once, for ever.
pub const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    /// Waiting for the report of this reload.
    AwaitReload(u64),
    /// Held open until the master exits (`stop`).
    AwaitExit,
    /// Sending its last answer, then closed.
    Closing,
}

struct Conn {
    stream: UnixStream,
    peer: Peer,
    input: Vec<u8>,
    output: Vec<u8>,
    phase: Phase,
    /// Dropped when this passes (None: never; a `stop` waits for the exit).
    deadline: Option<Instant>,
    writable_watched: bool,
}

/// A request read whole, for the runtime to act on.
#[derive(Debug)]
pub struct Incoming {
    pub conn: u64,
    pub peer: Peer,
    pub request: Request,
}

/// The listening socket and its connections. Tokens: `base | 0` the listener, `base | id`
/// a connection.
pub struct Server {
    listener: ControlListener,
    base: u64,
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    own_uid: u32,
    /// Refusals and busy answers are logged, a storm of them counted.
    log_limit: RateLimiter<&'static str>,
    /// The listener is unwatched until then, after a failed accept.
    accept_paused_until: Option<Instant>,
}

impl Server {
    pub fn new(listener: ControlListener, base: u64, poller: &Poller) -> io::Result<Server> {
        poller.add(listener.as_fd(), base)?;
        Ok(Server {
            listener,
            base,
            conns: BTreeMap::new(),
            next_id: 1,
            own_uid: crate::sys::control::own_uid(),
            log_limit: RateLimiter::default(),
            accept_paused_until: None,
        })
    }

    /// The listening socket (handed over by a binary upgrade).
    pub fn listener_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.listener)
    }

    pub fn path(&self) -> &std::path::Path {
        self.listener.path()
    }

    /// Something is ready on `token`: new connections, or bytes of one. Returns the
    /// requests read whole.
    pub fn ready(&mut self, token: u64, poller: &Poller, now: Instant) -> Vec<Incoming> {
        let id = token & !self.base;
        if id == 0 {
            self.accept_all(poller, now);
            return Vec::new();
        }
        self.service(id, poller, now).into_iter().collect()
    }

    fn accept_all(&mut self, poller: &Poller, now: Instant) {
        // Bounded per wake-up, so a flood of connections cannot starve the rest of the loop.
        for _ in 0..MAX_CONNECTIONS {
            let (stream, peer) = match self.listener.accept() {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(err) => {
                    self.log(
                        "accept",
                        || format!("control socket: accept failed: {err}; pausing 1 s"),
                        now,
                    );
                    if poller.delete(self.listener.as_fd()).is_ok() {
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    }
                    return;
                }
            };
            let own = self.own_uid;
            if peer.uid != 0 && peer.uid != own {
                let line = Answer::error(
                    "permission denied: only root and the master's user may use the control socket",
                )
                .line();
                let _ = write_some(&stream, line.as_bytes());
                self.log(
                    "refused",
                    || {
                        format!(
                            "control socket: refused uid {} (pid {}): only root and uid {} may use it",
                            peer.uid, peer.pid, own
                        )
                    },
                    now,
                );
                continue;
            }
            if self.conns.len() >= MAX_CONNECTIONS {
                let line = Answer::error("busy: too many control connections").line();
                let _ = write_some(&stream, line.as_bytes());
                self.log(
                    "busy",
                    || "control socket: too many connections; one refused as busy".to_string(),
                    now,
                );
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if let Err(err) = poller.add(stream.as_fd(), self.base | id) {
                warn!("control socket: cannot watch a connection: {err}");
                continue;
            }
            debug!(
                "control: connection {id} from uid {} pid {}",
                peer.uid, peer.pid
            );
            self.conns.insert(
                id,
                Conn {
                    stream,
                    peer,
                    input: Vec::new(),
                    output: Vec::new(),
                    phase: Phase::Reading,
                    deadline: Some(now + REQUEST_TIME),
                    writable_watched: false,
                },
            );
        }
    }

    fn log(&mut self, source: &'static str, text: impl FnOnce() -> String, now: Instant) {
        if let Verdict::Log { suppressed } = self.log_limit.check(&source, now) {
            if suppressed > 0 {
                warn!("control socket: suppressed {suppressed} similar messages ({source})");
            }
            warn!("{}", text());
        }
    }

    /// Reads and writes what a connection allows; a whole request line is returned.
    fn service(&mut self, id: u64, poller: &Poller, now: Instant) -> Option<Incoming> {
        let conn = self.conns.get_mut(&id)?;
        if !conn.output.is_empty() && !self.flush(id, poller) {
            return None;
        }
        let conn = self.conns.get_mut(&id)?;
        let room = match conn.phase {
            Phase::Reading => MAX_REQUEST + 1 - conn.input.len(),
            // Nothing more is expected: a byte is read only to see the client hang up.
            _ => 1,
        };
        let mut extra = Vec::new();
        let buf = if conn.phase == Phase::Reading {
            &mut conn.input
        } else {
            &mut extra
        };
        match read_some(&mut conn.stream, buf, room) {
            Ok(ReadOutcome::WouldBlock) => None,
            Ok(ReadOutcome::Eof) | Err(_) => {
                self.close(id, poller);
                None
            }
            Ok(ReadOutcome::Data(_)) if conn.phase != Phase::Reading => {
                if conn.phase == Phase::Closing {
                    // Sending more while not taking its answer: not worth another wake-up.
                    self.close(id, poller);
                    return None;
                }
                self.fail(id, "one request per connection", poller, now);
                None
            }
            Ok(ReadOutcome::Data(_)) => self.take_request(id, poller, now),
        }
    }

    fn take_request(&mut self, id: u64, poller: &Poller, now: Instant) -> Option<Incoming> {
        let conn = self.conns.get_mut(&id)?;
        let Some(end) = conn.input.iter().position(|&b| b == b'\n') else {
            if conn.input.len() > MAX_REQUEST {
                self.fail(id, "request too long (64 KiB at most)", poller, now);
            }
            return None;
        };
        let line = conn.input[..end]
            .strip_suffix(b"\r")
            .unwrap_or(&conn.input[..end]);
        match parse_request(line) {
            Ok(request) => {
                conn.deadline = None;
                conn.phase = Phase::Closing;
                Some(Incoming {
                    conn: id,
                    peer: conn.peer,
                    request,
                })
            }
            Err(error) => {
                self.fail(id, &error, poller, now);
                None
            }
        }
    }

    fn fail(&mut self, id: u64, error: &str, poller: &Poller, now: Instant) {
        self.answer(id, &Answer::error(error), poller, now);
    }

    /// Sends a final answer; the connection closes once it is out.
    pub fn answer(&mut self, id: u64, answer: &Answer, poller: &Poller, now: Instant) {
        self.send(id, answer, Phase::Closing, poller, now);
    }

    /// Sends an answer and keeps the connection open until the reload `reload` reports.
    pub fn await_reload(
        &mut self,
        id: u64,
        answer: &Answer,
        reload: u64,
        poller: &Poller,
        now: Instant,
    ) {
        self.send(id, answer, Phase::AwaitReload(reload), poller, now);
    }

    /// Sends an answer and keeps the connection open until the master exits.
    pub fn await_exit(&mut self, id: u64, answer: &Answer, poller: &Poller, now: Instant) {
        self.send(id, answer, Phase::AwaitExit, poller, now);
    }

    fn send(&mut self, id: u64, answer: &Answer, phase: Phase, poller: &Poller, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.output.extend_from_slice(answer.line().as_bytes());
        conn.phase = phase;
        conn.deadline = match phase {
            Phase::AwaitReload(_) => Some(now + RELOAD_WAIT),
            Phase::AwaitExit => None,
            Phase::Reading | Phase::Closing => Some(now + WRITE_TIME),
        };
        self.flush(id, poller);
    }

    /// Writes what the socket takes; false when the connection was closed.
    fn flush(&mut self, id: u64, poller: &Poller) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        while !conn.output.is_empty() {
            match write_some(&conn.stream, &conn.output) {
                Ok(0) => break,
                Ok(n) => {
                    conn.output.drain(..n);
                }
                Err(_) => {
                    self.close(id, poller);
                    return false;
                }
            }
        }
        let want = !conn.output.is_empty();
        if want != conn.writable_watched {
            conn.writable_watched = want;
            let _ = poller.set_writable(conn.stream.as_fd(), self.base | id, want);
        }
        if !want && conn.phase == Phase::Closing {
            self.close(id, poller);
            return false;
        }
        true
    }

    fn close(&mut self, id: u64, poller: &Poller) {
        if let Some(conn) = self.conns.remove(&id) {
            let _ = poller.delete(conn.stream.as_fd());
        }
    }

    /// The connections waiting for reload `id`.
    pub fn awaiting_reload(&self, id: u64) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::AwaitReload(id))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Drops connections whose time ran out (a request line never finished, an answer
    /// never taken); logs rate-limited refusals' counts.
    pub fn tick(&mut self, poller: &Poller, now: Instant) {
        let late: Vec<(u64, Phase)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| now >= d))
            .map(|(k, c)| (*k, c.phase))
            .collect();
        for (id, phase) in late {
            match phase {
                Phase::Reading => self.fail(id, "timed out waiting for the request", poller, now),
                Phase::AwaitReload(_) => {
                    self.fail(id, "timed out waiting for the reload", poller, now)
                }
                _ => self.close(id, poller),
            }
        }
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            match poller.add(self.listener.as_fd(), self.base) {
                Ok(()) => self.accept_paused_until = None,
                Err(_) => self.accept_paused_until = Some(now + ACCEPT_PAUSE),
            }
        }
        for (source, count) in self.log_limit.expired(now) {
            warn!("control socket: suppressed {count} similar messages ({source})");
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self
            .conns
            .values()
            .filter_map(|c| c.deadline)
            .chain(self.accept_paused_until)
            .min();
        match (conns, self.log_limit.next_report()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::TempDir;
    use std::io::Write;

    const BASE: u64 = 5 << 56;

    fn setup(tag: &str) -> (TempDir, Poller, Server, std::path::PathBuf) {
        let dir = TempDir::new(tag);
        let path = dir.path().join("c.sock");
        let poller = Poller::new().unwrap();
        let server = Server::new(ControlListener::bind(&path).unwrap(), BASE, &poller).unwrap();
        (dir, poller, server, path)
    }

    /// Accepts pending connections, then serves whatever each connection has.
    fn turn(server: &mut Server, poller: &Poller, now: Instant) -> Vec<Incoming> {
        server.ready(BASE, poller, now);
        let ids: Vec<u64> = server.conns.keys().copied().collect();
        ids.into_iter()
            .flat_map(|id| server.ready(BASE | id, poller, now))
            .collect()
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_without_blocking_the_loop() {
        let (_dir, poller, mut server, path) = setup("ctl-srv-write");
        let mut client = UnixStream::connect(&path).unwrap();
        client
            .write_all(b"{\"version\":1,\"request\":\"metrics\"}\n")
            .unwrap();
        let now = Instant::now();
        let got = turn(&mut server, &poller, now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].request, Request::Metrics);
        // Far more than a socket buffer holds: the send returns at once with the rest kept.
        let mut answer = Answer::ok();
        answer.metrics = Some("x".repeat(8 << 20));
        let start = Instant::now();
        server.answer(got[0].conn, &answer, &poller, now);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(server.conns.len(), 1);
        assert!(server.conns.values().all(|c| c.writable_watched));
        assert_eq!(server.next_deadline(), Some(now + WRITE_TIME));
        server.tick(&poller, now + WRITE_TIME);
        assert!(server.conns.is_empty(), "dropped once its time ran out");
    }

    #[test]
    fn limits_on_connections_request_size_and_time() {
        let (_dir, poller, mut server, path) = setup("ctl-srv-limits");
        let now = Instant::now();
        // Accepted one by one: a blocking connect waits while the backlog is full.
        let mut clients: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let c = UnixStream::connect(&path).unwrap();
                server.ready(BASE, &poller, now);
                c
            })
            .collect();
        let busy = UnixStream::connect(&path).unwrap();
        assert!(turn(&mut server, &poller, now).is_empty());
        assert_eq!(server.conns.len(), MAX_CONNECTIONS);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&busy), &mut line).unwrap();
        assert!(line.contains("busy"), "{line}");

        // Too long a request: an error, then closed.
        let big = vec![b'x'; MAX_REQUEST + 10];
        clients[0].set_nonblocking(true).unwrap();
        let _ = clients[0].write(&big);
        for _ in 0..40 {
            turn(&mut server, &poller, now);
        }
        assert_eq!(server.conns.len(), MAX_CONNECTIONS - 1);
        // Bad JSON: the error says why.
        clients[1].write_all(b"status\n").unwrap();
        turn(&mut server, &poller, now);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&clients[1]), &mut line).unwrap();
        assert!(line.contains("not a JSON request"), "{line}");
        // The rest said nothing in time.
        server.tick(&poller, now + REQUEST_TIME);
        assert!(server.conns.is_empty());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&clients[2]), &mut line).unwrap();
        assert!(line.contains("timed out"), "{line}");
    }

    #[test]
    fn out_of_descriptors_the_listener_is_paused_rather_than_spun_on() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let ok = crate::sys::testutil::in_forked_child(Duration::from_secs(10), || {
            let (_dir, mut poller, mut server, path) = setup("ctl-srv-emfile");
            let _client = UnixStream::connect(&path).unwrap();
            let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
            // Every descriptor below a low limit taken: the next accept finds none free.
            let highest = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap();
            setrlimit(Resource::RLIMIT_NOFILE, highest + 1, hard).unwrap();
            let mut filler = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                filler.push(f);
            }
            let now = Instant::now();
            server.ready(BASE, &poller, now);
            let mut tokens = Vec::new();
            poller.wait(Some(Duration::ZERO), &mut tokens).unwrap();
            let paused = tokens.is_empty() && server.next_deadline() == Some(now + ACCEPT_PAUSE);
            drop(filler);
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
            server.tick(&poller, now + ACCEPT_PAUSE);
            poller.wait(Some(Duration::ZERO), &mut tokens).unwrap();
            let resumed = tokens == vec![BASE];
            server.ready(BASE, &poller, now);
            paused && resumed && server.conns.len() == 1
        });
        assert!(ok);
    }
}
