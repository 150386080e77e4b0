//! The worker's lifecycle as plain data: what to do after each event, with no syscalls.
//!
//! The accept loop in `serve.rs` feeds events in and carries the decisions out, so the rules
//! (when to announce, when to stop, with which exit status) read, and are tested, in one place.

use ringmaster_proto::Message;

/// Cyrus's default for `-U`: connections a worker serves before it exits.
pub const DEFAULT_MAX_USES: u32 = 250;

/// `EX_TEMPFAIL`: the exit status of a worker told to terminate.
pub const EXIT_TERMINATED: i32 = 75;
/// `EX_SOFTWARE`: the exit status of a worker started without its environment.
pub const EXIT_NO_ENV: i32 = 70;

/// Why the accept loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The worker served its `max_uses` connections.
    MaxUses,
    /// The master asked for a recycle (SIGHUP), idle or after the client finished.
    Hangup,
    /// The master shut the listener down (accept fails with EINVAL): a reload closed or
    /// paused this service's socket. Nothing more will come, so the worker leaves cleanly.
    ListenerClosed,
}

impl Stop {
    /// The exit status Cyrus's services use for this stop: 0 for all.
    pub const fn exit_code(self) -> i32 {
        0
    }
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send this note (if any), then wait for the next client.
    Wait(Option<Message>),
    /// Stop serving.
    Stop(Stop),
}

/// The counting state of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    max_uses: u32,
    uses: u32,
    hangup: bool,
}

impl Lifecycle {
    /// A fresh worker that stops after `max_uses` connections (0 means no limit).
    pub fn new(max_uses: u32) -> Lifecycle {
        Lifecycle {
            max_uses,
            uses: 0,
            hangup: false,
        }
    }

    /// Connections served so far.
    pub fn uses(&self) -> u32 {
        self.uses
    }

    /// The loop starts: announce readiness only when asked to (Cyrus's services do not).
    pub fn start(&self, announce: bool) -> Next {
        if self.hangup {
            return Next::Stop(Stop::Hangup);
        }
        Next::Wait(announce.then_some(Message::Available))
    }

    /// SIGHUP arrived. Idle: stop at once. Busy: remember it for [`Lifecycle::finished`].
    pub fn hangup(&mut self, busy: bool) -> Option<Stop> {
        self.hangup = true;
        (!busy).then_some(Stop::Hangup)
    }

    /// A client arrived: the note that counts it (ready -> busy).
    pub fn accepted(&mut self) -> Message {
        self.uses = self.uses.saturating_add(1);
        Message::Connection
    }

    /// The client is done: stop, or announce readiness again and wait.
    pub fn finished(&self) -> Next {
        if self.hangup {
            Next::Stop(Stop::Hangup)
        } else if self.max_uses != 0 && self.uses >= self.max_uses {
            Next::Stop(Stop::MaxUses)
        } else {
            Next::Wait(Some(Message::Available))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_only_when_asked() {
        let l = Lifecycle::new(3);
        assert_eq!(l.start(true), Next::Wait(Some(Message::Available)));
        assert_eq!(l.start(false), Next::Wait(None));
    }

    #[test]
    fn stops_after_max_uses_without_announcing() {
        let mut l = Lifecycle::new(2);
        assert_eq!(l.accepted(), Message::Connection);
        assert_eq!(l.finished(), Next::Wait(Some(Message::Available)));
        assert_eq!(l.accepted(), Message::Connection);
        assert_eq!(l.finished(), Next::Stop(Stop::MaxUses));
        assert_eq!(l.uses(), 2);
    }

    #[test]
    fn one_use_worker_stops_after_first_client() {
        let mut l = Lifecycle::new(1);
        l.accepted();
        assert_eq!(l.finished(), Next::Stop(Stop::MaxUses));
    }

    #[test]
    fn zero_means_unlimited() {
        let mut l = Lifecycle::new(0);
        for _ in 0..1000 {
            l.accepted();
            assert_eq!(l.finished(), Next::Wait(Some(Message::Available)));
        }
    }

    #[test]
    fn hangup_while_idle_stops_at_once() {
        let mut l = Lifecycle::new(5);
        assert_eq!(l.hangup(false), Some(Stop::Hangup));
    }

    #[test]
    fn hangup_while_busy_finishes_the_client_first() {
        let mut l = Lifecycle::new(5);
        l.accepted();
        assert_eq!(l.hangup(true), None);
        assert_eq!(l.finished(), Next::Stop(Stop::Hangup));
        assert_eq!(Stop::Hangup.exit_code(), 0);
    }

    #[test]
    fn hangup_before_start_never_announces() {
        let mut l = Lifecycle::new(5);
        l.hangup(true);
        assert_eq!(l.start(true), Next::Stop(Stop::Hangup));
    }
}
