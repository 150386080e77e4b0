//! Readiness of the master's descriptors: a thin level-triggered epoll wrapper that maps each
//! descriptor to a caller-chosen token.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// How many events one `wait` collects at most; more stay ready for the next call.
const EVENTS_PER_WAIT: usize = 64;

/// A close-on-exec epoll instance watching descriptors for readability, level-triggered (a
/// listener with a pending connection keeps waking the loop until something takes it).
#[derive(Debug)]
pub struct Poller {
    epoll: Epoll,
    events: Vec<EpollEvent>,
}

impl Poller {
    /// A new, empty poller.
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            events: vec![EpollEvent::empty(); EVENTS_PER_WAIT],
        })
    }

    /// Watch `fd` for readability (and hang-up/error, which epoll always reports); `wait`
    /// yields `token` while it is ready. A descriptor can be added once; delete it first to
    /// change its token.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let event = EpollEvent::new(EpollFlags::EPOLLIN, token);
        self.epoll.add(fd, event)?;
        Ok(())
    }

    /// Watch `fd`, already added, for writability instead of readability (`writable`), or
    /// for readability again: a reply that did not fit in the socket's buffer waits for room
    /// (the control socket's and the metrics endpoint's connections). A peer that hangs up
    /// still wakes us (EPOLLHUP/EPOLLERR are always reported); one that sends while not
    /// reading does not, so it cannot spin the loop.
    pub fn set_writable(&self, fd: BorrowedFd<'_>, token: u64, writable: bool) -> io::Result<()> {
        let flags = if writable {
            EpollFlags::EPOLLOUT
        } else {
            EpollFlags::EPOLLIN
        };
        let mut event = EpollEvent::new(flags, token);
        self.epoll.modify(fd, &mut event)?;
        Ok(())
    }

    /// Stop watching `fd`. Close the descriptor only after this (epoll tracks the open file
    /// description, which a dup elsewhere, e.g. in a worker, may keep alive).
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll.delete(fd)?;
        Ok(())
    }

    /// Wait until something is ready or `timeout` passes (None: no limit) and put the ready
    /// tokens in `out` (cleared first). The timeout is rounded up to whole milliseconds, so a
    /// deadline 0.3 ms away sleeps 1 ms rather than spinning; an interrupted wait returns Ok
    /// with `out` empty.
    pub fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<u64>) -> io::Result<()> {
        out.clear();
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            Some(t) => EpollTimeout::try_from(ceil_millis(t)).unwrap_or(EpollTimeout::MAX),
        };
        match self.epoll.wait(&mut self.events, timeout) {
            Ok(n) => {
                out.extend(self.events.iter().take(n).map(|e| e.data()));
                Ok(())
            }
            Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

/// Milliseconds in `t`, rounded up, capped at `i32::MAX`.
fn ceil_millis(t: Duration) -> i32 {
    let millis = t.as_nanos().div_ceil(1_000_000);
    i32::try_from(millis).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(ceil_millis(Duration::from_micros(1)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(1000)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(1001)), 2);
        assert_eq!(ceil_millis(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    #[test]
    fn readiness_is_level_triggered_and_tokens_come_back() {
        let mut poller = Poller::new().expect("epoll");
        let (r1, w1) = nix::unistd::pipe().expect("pipe");
        let (r2, _w2) = nix::unistd::pipe().expect("pipe");
        poller.add(r1.as_fd(), 7).expect("add");
        poller.add(r2.as_fd(), 9).expect("add");
        let mut out = vec![123];

        let start = Instant::now();
        poller
            .wait(Some(Duration::from_micros(1500)), &mut out)
            .expect("wait");
        assert!(out.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(2), "rounded up");

        nix::unistd::write(&w1, b"x").expect("write");
        for _ in 0..2 {
            // Not read: still ready the second time.
            poller
                .wait(Some(Duration::from_secs(5)), &mut out)
                .expect("wait");
            assert_eq!(out, vec![7]);
        }
        poller.delete(r1.as_fd()).expect("delete");
        poller.wait(Some(Duration::ZERO), &mut out).expect("wait");
        assert!(out.is_empty());
    }
}
