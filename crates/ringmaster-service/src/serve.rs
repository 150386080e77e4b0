//! The accept loops: wait idle on (listener, SIGHUP), take a client, note it, serve it, repeat.
//!
//! Idle, the worker sleeps in `epoll_wait` on the listener (registered `EPOLLEXCLUSIVE`, so a
//! connection wakes one worker, not the whole pool) and the SIGHUP signalfd. When the listener
//! is readable it calls `accept(2)` under a short one-shot timer: if a sibling took the
//! connection first, the timer's SIGALRM interrupts the blocked accept and we wait again, so a
//! SIGHUP is never left unseen for longer than [`ACCEPT_GRACE`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    accept4, getsockname, getsockopt, recvfrom, sendto, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockType, SockaddrLike, SockaddrStorage,
};

use crate::lifecycle::{Lifecycle, Next, Stop};
use crate::signals::Signals;
use crate::stream::Stream;
use crate::{Options, Worker};

/// How long a blocked `accept`/`recvfrom` may wait for a connection a sibling already took.
pub const ACCEPT_GRACE: Duration = Duration::from_millis(100);

/// The largest datagram [`Worker::serve_datagrams`] receives.
pub const MAX_DATAGRAM: usize = 65536;

const LISTENER: u64 = 0;
const HANGUP: u64 = 1;

/// Errors a listener returns for one failed client, after which it is still good (Cyrus's list).
fn transient(e: Errno) -> bool {
    matches!(
        e,
        Errno::EINTR
            | Errno::EAGAIN
            | Errno::ECONNABORTED
            | Errno::EPROTO
            | Errno::ENETDOWN
            | Errno::ENOPROTOOPT
            | Errno::EHOSTDOWN
            | Errno::ENONET
            | Errno::EHOSTUNREACH
            | Errno::EOPNOTSUPP
            | Errno::ENETUNREACH
    )
}

/// The running loop's state: the lifecycle, signals and the idle wait set.
struct Loop<'w> {
    worker: &'w Worker,
    listener: RawFd,
    life: Lifecycle,
    signals: Signals,
    epoll: Epoll,
}

impl<'w> Loop<'w> {
    fn new(worker: &'w Worker, options: &Options) -> io::Result<Loop<'w>> {
        let Some(listener) = worker.listener.as_ref() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no listening socket on fd 4",
            ));
        };
        let signals = Signals::install(
            options.on_hangup,
            options.on_terminate,
            worker.status.as_fd(),
            worker.exit_notes,
        )?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            listener.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, LISTENER),
        )?;
        if let Some(fd) = signals.hangup_fd() {
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, HANGUP))?;
        }
        Ok(Loop {
            worker,
            listener: listener.as_raw_fd(),
            life: Lifecycle::new(options.max_uses),
            signals,
            epoll,
        })
    }

    /// Carry out a decision: send its note, or report the stop.
    fn next(&self, next: Next) -> Option<Stop> {
        match next {
            Next::Wait(note) => {
                if let Some(m) = note {
                    self.note(m);
                }
                None
            }
            Next::Stop(stop) => Some(stop),
        }
    }

    fn note(&self, m: crate::Message) {
        if let Err(e) = self.worker.note(m) {
            eprintln!(
                "{}[{}]: cannot send {m:?} to the master: {e}",
                self.worker.service, self.worker.pid
            );
        }
    }

    /// Wait idle until `take` gets a client from the listener, or a stop.
    fn idle<T>(
        &mut self,
        mut take: impl FnMut(RawFd) -> nix::Result<T>,
    ) -> io::Result<Result<T, Stop>> {
        let mut events = [EpollEvent::empty(); 2];
        loop {
            if self.signals.take_hangup()? {
                if let Some(stop) = self.life.hangup(false) {
                    return Ok(Err(stop));
                }
            }
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if !events[..n].iter().any(|e| e.data() == LISTENER) {
                continue; // the signalfd: checked at the top
            }
            self.signals.accept_deadline(Some(ACCEPT_GRACE))?;
            let got = take(self.listener);
            self.signals.accept_deadline(None)?;
            match got {
                Ok(client) => return Ok(Ok(client)),
                Err(e) if transient(e) => continue,
                // Linux's answer on a listener shut down by the master (see Stop).
                Err(Errno::EINVAL) => return Ok(Err(Stop::ListenerClosed)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After a client: note a SIGHUP that came meanwhile, then announce or stop.
    fn finished(&mut self) -> io::Result<Option<Stop>> {
        if self.signals.take_hangup()? {
            self.life.hangup(true);
        }
        Ok(self.next(self.life.finished()))
    }
}

impl Worker {
    /// Serve stream clients (TCP or unix) on the listener until a stop, which is returned.
    ///
    /// Blocks SIGHUP (read through a signalfd) and installs SIGTERM and SIGALRM handlers; call
    /// it before starting threads. Errors of one client (from `handler`, or a failed accept
    /// that leaves the listener usable) are logged to stderr and the loop goes on.
    pub fn serve<F>(&self, options: Options, mut handler: F) -> io::Result<Stop>
    where
        F: FnMut(&mut Stream) -> io::Result<()>,
    {
        let mut lp = Loop::new(self, &options)?;
        let unix = matches!(
            getsockname::<SockaddrStorage>(lp.listener).map(|a| a.family()),
            Ok(Some(AddressFamily::Unix))
        );
        if let Some(stop) = lp.next(lp.life.start(options.announce)) {
            return Ok(stop);
        }
        loop {
            let fd = match lp.idle(|l| accept4(l, SockFlag::SOCK_CLOEXEC))? {
                Ok(fd) => fd,
                Err(stop) => return Ok(stop),
            };
            // SAFETY: accept4 just returned this fd; nothing else owns it.
            let mut stream = Stream::new(unsafe { OwnedFd::from_raw_fd(fd) }, unix);
            let note = lp.life.accepted();
            lp.note(note);
            if let Err(e) = handler(&mut stream) {
                eprintln!(
                    "{}[{}]: client {}: {e}",
                    self.service,
                    self.pid,
                    stream.peer()
                );
            }
            drop(stream);
            if let Some(stop) = lp.finished()? {
                return Ok(stop);
            }
        }
    }

    /// Serve a datagram listener (UDP): each datagram is one use; the handler's answer, if
    /// any, goes back to the sender.
    pub fn serve_datagrams<F>(&self, options: Options, mut handler: F) -> io::Result<Stop>
    where
        F: FnMut(&[u8], &SockaddrStorage) -> Option<Vec<u8>>,
    {
        let mut lp = Loop::new(self, &options)?;
        if let Some(stop) = lp.next(lp.life.start(options.announce)) {
            return Ok(stop);
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let got = lp.idle(|l| recvfrom::<SockaddrStorage>(l, &mut buf))?;
            let (len, from) = match got {
                Ok(v) => v,
                Err(stop) => return Ok(stop),
            };
            let note = lp.life.accepted();
            lp.note(note);
            if let Some(from) = from {
                if let Some(reply) = handler(&buf[..len], &from) {
                    if let Err(e) = sendto(lp.listener, &reply, &from, MsgFlags::empty()) {
                        eprintln!("{}[{}]: reply to {from}: {e}", self.service, self.pid);
                    }
                }
            }
            if let Some(stop) = lp.finished()? {
                return Ok(stop);
            }
        }
    }

    /// Whether the listener is a datagram socket (serve it with [`Worker::serve_datagrams`]).
    pub fn is_datagram(&self) -> io::Result<bool> {
        let Some(l) = &self.listener else {
            return Ok(false);
        };
        Ok(getsockopt(l, sockopt::SockType)? == SockType::Datagram)
    }
}
