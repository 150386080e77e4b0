//! Signal plumbing for workers, with the crate's `unsafe` signal code (the crate's other
//! `unsafe` blocks take ownership of fds 3 and 4 and of accepted sockets; see the crate doc).
//!
//! - SIGHUP (recycle) is blocked and read from a signalfd: the idle loop waits on it beside the
//!   listener, and the loop checks it between clients. No handler runs.
//! - SIGTERM runs a handler that only calls `write(2)` (the exit note, when the master wants
//!   one) and `_exit(2)`, both async-signal-safe; so the worker exits 75 promptly even in the
//!   middle of a client, whatever the handler code is doing.
//! - SIGALRM runs an empty handler installed without `SA_RESTART`: a one-shot timer armed
//!   around `accept(2)` interrupts it when another worker took the connection we were woken
//!   for, so the loop goes back to waiting on the signalfd within a bounded time.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::{
    pthread_sigmask, sigaction, SaFlags, SigAction, SigEvent, SigHandler, SigSet, SigevNotify,
    SigmaskHow, Signal,
};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
use nix::time::ClockId;
use ringmaster_proto::{Message, RawNote};

use crate::lifecycle::EXIT_TERMINATED;

/// What the worker does on SIGHUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHangup {
    /// Cyrus's behaviour: exit at once when idle, after the client when busy.
    Recycle,
    /// Ignore it (for tests of a master's drain deadline).
    Ignore,
}

/// What the worker does on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTerminate {
    /// Cyrus's behaviour: exit 75 (`EX_TEMPFAIL`) at once.
    Exit,
    /// Ignore it (for tests of a master's TERM -> KILL escalation).
    Ignore,
}

// Read by the SIGTERM handler; written before the handler is installed.
static TERM_STATUS_FD: AtomicI32 = AtomicI32::new(-1);
static TERM_PID: AtomicI32 = AtomicI32::new(0);
static TERM_NOTE: AtomicBool = AtomicBool::new(false);

extern "C" fn terminate_handler(_: libc::c_int) {
    // Only async-signal-safe work here: atomics, arithmetic on the stack, write(2), _exit(2).
    if TERM_NOTE.load(Ordering::Relaxed) {
        let fd = TERM_STATUS_FD.load(Ordering::Relaxed);
        let note = RawNote::new(Message::Exiting, TERM_PID.load(Ordering::Relaxed)).encode();
        // SAFETY: write(2) is async-signal-safe; `note` is a live stack buffer of its length.
        // A failure is of no use to anyone now: we are exiting.
        unsafe { libc::write(fd, note.as_ptr().cast(), note.len()) };
    }
    // SAFETY: _exit(2) is async-signal-safe and never returns; it runs no Rust code.
    unsafe { libc::_exit(EXIT_TERMINATED) }
}

extern "C" fn on_alarm(_: libc::c_int) {
    // Nothing: the point is the EINTR of the call it interrupts.
}

fn install(signal: Signal, handler: SigHandler, flags: SaFlags) -> io::Result<()> {
    let action = SigAction::new(handler, flags, SigSet::all());
    // SAFETY: the handlers we pass are `terminate_handler` and `on_alarm`, which do only
    // async-signal-safe work, or SIG_IGN / SIG_DFL. We drop the previous action.
    unsafe { sigaction(signal, &action) }?;
    Ok(())
}

/// The signal state of a serving worker: the SIGHUP signalfd and the accept timer.
pub(crate) struct Signals {
    hangup: Option<SignalFd>,
    accept_timer: Timer,
}

impl Signals {
    /// Set the dispositions. Blocks SIGHUP in the calling thread: call this before any thread
    /// is started (threads inherit the mask), and know that children inherit it too.
    pub(crate) fn install(
        on_hangup: OnHangup,
        on_terminate: OnTerminate,
        status_fd: BorrowedFd<'_>,
        exit_notes: bool,
    ) -> io::Result<Signals> {
        match on_terminate {
            OnTerminate::Exit => {
                TERM_STATUS_FD.store(status_fd.as_raw_fd(), Ordering::Relaxed);
                TERM_PID.store(std::process::id() as i32, Ordering::Relaxed);
                TERM_NOTE.store(exit_notes, Ordering::Relaxed);
                install(
                    Signal::SIGTERM,
                    SigHandler::Handler(terminate_handler),
                    SaFlags::empty(),
                )?;
            }
            OnTerminate::Ignore => install(Signal::SIGTERM, SigHandler::SigIgn, SaFlags::empty())?,
        }
        let mut term = SigSet::empty();
        term.add(Signal::SIGTERM);
        term.add(Signal::SIGALRM);
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&term), None)?;

        let hangup = match on_hangup {
            OnHangup::Recycle => {
                // An inherited SIG_IGN would survive exec; make the disposition ours.
                install(Signal::SIGHUP, SigHandler::SigDfl, SaFlags::empty())?;
                let mut set = SigSet::empty();
                set.add(Signal::SIGHUP);
                pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
                Some(SignalFd::with_flags(
                    &set,
                    SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
                )?)
            }
            OnHangup::Ignore => {
                install(Signal::SIGHUP, SigHandler::SigIgn, SaFlags::empty())?;
                None
            }
        };

        install(
            Signal::SIGALRM,
            SigHandler::Handler(on_alarm),
            SaFlags::empty(),
        )?;
        let accept_timer = Timer::new(
            ClockId::CLOCK_MONOTONIC,
            SigEvent::new(SigevNotify::SigevSignal {
                signal: Signal::SIGALRM,
                si_value: 0,
            }),
        )?;
        Ok(Signals {
            hangup,
            accept_timer,
        })
    }

    /// The fd to wait on for SIGHUP, if SIGHUP is not ignored.
    pub(crate) fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        self.hangup.as_ref().map(|fd| fd.as_fd())
    }

    /// Whether a SIGHUP arrived since the last call (drains the signalfd).
    pub(crate) fn take_hangup(&self) -> io::Result<bool> {
        let Some(fd) = &self.hangup else {
            return Ok(false);
        };
        let mut seen = false;
        while fd.read_signal()?.is_some() {
            seen = true;
        }
        Ok(seen)
    }

    /// Arm (Some) or disarm (None) the timer that interrupts a blocked accept.
    pub(crate) fn accept_deadline(&mut self, after: Option<Duration>) -> io::Result<()> {
        match after {
            Some(d) => self.accept_timer.set(
                Expiration::OneShot(TimeSpec::from_duration(d)),
                TimerSetTimeFlags::empty(),
            )?,
            None => self.accept_timer.set(
                Expiration::OneShot(TimeSpec::from_duration(Duration::ZERO)),
                TimerSetTimeFlags::empty(),
            )?,
        }
        Ok(())
    }
}
