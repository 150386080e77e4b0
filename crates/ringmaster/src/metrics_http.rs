//! `--metrics-listen`: GET /metrics over HTTP/1.1, served from the master's own loop.
//!
//! Nonblocking throughout, so a slow or hostile client never holds the master: a request is
//! at most [`MAX_REQUEST`] bytes, a connection lives at most [`TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] are open (the listener is not watched while they are: more wait in
//! its backlog), and a reply is written as the socket takes it. Every connection gets one
//! answer; then the server shuts its side and reads what the client still sends until it
//! closes (bounded), so that closing never resets the connection before the client has read
//! the answer.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::sys::poller::Poller;

/// Open connections at most; Prometheus scrapes with one.
pub const MAX_CONNECTIONS: usize = 16;
/// The longest request (line and headers) read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a connection may take to send its request and read the reply.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections accepted per wake-up at most, so a flood cannot starve the rest of the loop.
const ACCEPTS_PER_WAKE: usize = 64;
/// Bytes read and dropped after the answer, at most, waiting for the client to close.
const MAX_LINGER: usize = 64 * 1024;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a connection is.
enum Phase {
    /// Reading the request.
    Request(Vec<u8>),
    /// Writing the answer; `sent` bytes of it are written.
    Reply { bytes: Vec<u8>, sent: usize },
    /// Answered and shut for writing; reading (and dropping) until the client closes.
    Linger { dropped: usize },
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    deadline: Instant,
}

/// What to do with a connection after a wake-up.
enum Next {
    Keep,
    /// The reply did not fit: wait until the socket takes more.
    WaitWritable,
    /// Answered: wait for the client to close.
    Linger,
    Close,
}

/// The listener and its connections.
pub struct MetricsServer {
    listener: TcpListener,
    listener_token: u64,
    /// The listener is in the poller (not while [`MAX_CONNECTIONS`] are open).
    listening: bool,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    /// Or-ed with a connection's id to make its poller token.
    token_base: u64,
}

impl MetricsServer {
    /// Binds `addr` (close-on-exec, nonblocking) and watches it with `listener_token`;
    /// connections' tokens are `token_base | id`, ids below 2^32.
    pub fn bind(
        addr: SocketAddr,
        poller: &Poller,
        listener_token: u64,
        token_base: u64,
    ) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        poller.add(listener.as_fd(), listener_token)?;
        info!(
            "serving metrics on http://{}/metrics",
            listener.local_addr()?
        );
        Ok(MetricsServer {
            listener,
            listener_token,
            listening: true,
            conns: HashMap::new(),
            next_id: 0,
            token_base,
        })
    }

    /// The earliest connection deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// The listener is readable: accept what waits, up to the cap.
    pub fn accept(&mut self, poller: &Poller, now: Instant) {
        for _ in 0..ACCEPTS_PER_WAKE {
            if self.conns.len() >= MAX_CONNECTIONS {
                debug!("metrics: {MAX_CONNECTIONS} connections open; the rest wait");
                self.set_listening(poller, false);
                return;
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the connection stays queued; say so and go on.
                    warn!("metrics: accept failed: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.next_id;
            self.next_id = (self.next_id + 1) & 0xffff_ffff;
            if let Err(e) = poller.add(stream.as_fd(), self.token_base | id) {
                warn!("metrics: cannot watch a connection: {e}");
                continue;
            }
            let conn = Conn {
                stream,
                phase: Phase::Request(Vec::new()),
                deadline: now + TIMEOUT,
            };
            self.conns.insert(id, conn);
        }
    }

    /// A connection is readable (or writable, while its reply waits for room).
    pub fn ready(&mut self, token: u64, poller: &Poller, render: &mut dyn FnMut() -> String) {
        let id = token & 0xffff_ffff;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let next = match step(conn, render) {
            Ok(next) => next,
            Err(e) => {
                debug!("metrics: {e}");
                Next::Close
            }
        };
        let fd = conn.stream.as_fd();
        let watched = match next {
            Next::Keep => Ok(()),
            Next::WaitWritable => poller.set_writable(fd, token, true),
            Next::Linger => poller.set_writable(fd, token, false),
            Next::Close => Err(io::ErrorKind::Other.into()),
        };
        if watched.is_err() {
            self.close(id, poller);
        }
    }

    /// Closes connections past their deadline.
    pub fn expire(&mut self, now: Instant, poller: &Poller) {
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            debug!("metrics: a connection timed out");
            self.close(id, poller);
        }
    }

    fn close(&mut self, id: u64, poller: &Poller) {
        if let Some(conn) = self.conns.remove(&id) {
            let _ = poller.delete(conn.stream.as_fd());
        }
        if self.conns.len() < MAX_CONNECTIONS {
            self.set_listening(poller, true);
        }
    }

    fn set_listening(&mut self, poller: &Poller, on: bool) {
        if self.listening == on {
            return;
        }
        let fd = self.listener.as_fd();
        let done = if on {
            poller.add(fd, self.listener_token)
        } else {
            poller.delete(fd)
        };
        match done {
            Ok(()) => self.listening = on,
            Err(e) => warn!("metrics: cannot (un)watch the listener: {e}"),
        }
    }
}

/// Moves a connection on as far as its socket allows.
fn step(conn: &mut Conn, render: &mut dyn FnMut() -> String) -> io::Result<Next> {
    if let Phase::Request(request) = &mut conn.phase {
        match read_request(&mut conn.stream, request, render)? {
            Some(bytes) => conn.phase = Phase::Reply { bytes, sent: 0 },
            None => return Ok(Next::Keep),
        }
    }
    if let Phase::Reply { bytes, sent } = &mut conn.phase {
        if !write_reply(&mut conn.stream, bytes, sent)? {
            return Ok(Next::WaitWritable);
        }
        conn.stream.shutdown(Shutdown::Write)?;
        conn.phase = Phase::Linger { dropped: 0 };
        return Ok(Next::Linger);
    }
    if let Phase::Linger { dropped } = &mut conn.phase {
        let mut chunk = [0u8; 4096];
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => {
                    *dropped += n;
                    if *dropped > MAX_LINGER {
                        return Ok(Next::Close);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Keep),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Next::Keep)
}

/// Reads what the client sent; the answer once the request is whole (or broken).
fn read_request(
    stream: &mut TcpStream,
    request: &mut Vec<u8>,
    render: &mut dyn FnMut() -> String,
) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let room = MAX_REQUEST + 1 - request.len();
                request.extend_from_slice(&chunk[..n.min(room)]);
                if let Some(answer) = answer(request, render) {
                    return Ok(Some(answer));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// True once the whole reply is written.
fn write_reply(stream: &mut TcpStream, bytes: &[u8], sent: &mut usize) -> io::Result<bool> {
    while *sent < bytes.len() {
        match stream.write(&bytes[*sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The reply to `request`, or None while it is incomplete (and within [`MAX_REQUEST`]).
pub fn answer(request: &[u8], render: &mut dyn FnMut() -> String) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(request) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if request.len() <= MAX_REQUEST => return None,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Some(reply(
                431,
                "Request Header Fields Too Large",
                "",
                b"too large\n",
            ))
        }
        Err(_) => return Some(reply(400, "Bad Request", "", b"bad request\n")),
    }
    let method = parsed.method.unwrap_or("");
    let path = parsed.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return Some(reply(
            405,
            "Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            b"method not allowed\n",
        ));
    }
    if path != "/metrics" {
        return Some(reply(404, "Not Found", "", b"not found: try /metrics\n"));
    }
    let body = render();
    let mut out = reply(200, "OK", "", body.as_bytes());
    if method == "HEAD" {
        out.truncate(out.len() - body.len());
    }
    Some(out)
}

fn reply(code: u16, reason: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(request: &[u8]) -> Option<String> {
        answer(request, &mut || "m 1\n".to_string()).map(|r| String::from_utf8(r).unwrap())
    }

    #[test]
    fn get_metrics_is_answered_and_the_rest_refused() {
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nm 1\n"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        let head = ask(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"));
        assert!(ask(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap()
            .starts_with("HTTP/1.1 404"));
        let post = ask(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
        assert!(ask(b"\x16\x03\x01junk\r\n\r\n")
            .unwrap()
            .starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn a_request_is_read_until_whole_but_not_past_the_limit() {
        assert_eq!(ask(b"GET /metrics HTTP/1.1\r\nHost:"), None);
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST + 1, b'a');
        assert!(ask(&long).unwrap().starts_with("HTTP/1.1 431"));
    }
}
