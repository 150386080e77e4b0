//! Wire facts shared by the master and its workers: fd numbers, status notes, environment names.
//!
//! These are the facts of Cyrus IMAP's master/service protocol (`master/service.h` upstream),
//! plus the one extension ringmaster adds: an exit note, sent only when the master says it
//! understands it through [`ENV_EXIT_NOTES`].
#![forbid(unsafe_code)]

/// The write end of the service's status pipe, as the worker sees it.
pub const STATUS_FD: i32 = 3;
/// The listening socket (bound, listening, blocking), as the worker sees it.
pub const LISTEN_FD: i32 = 4;

/// Name of the cyrus.conf entry the worker serves.
pub const ENV_SERVICE: &str = "CYRUS_SERVICE";
/// 0 for the first address family of the entry, 1 for a second.
pub const ENV_ID: &str = "CYRUS_ID";
/// Set to "1" for DAEMON entries.
pub const ENV_ISDAEMON: &str = "CYRUS_ISDAEMON";
/// Set to "1" by ringmaster: the master understands [`Note::Exiting`].
pub const ENV_EXIT_NOTES: &str = "RINGMASTER_EXIT_NOTES";

/// What a `wait=y` daemon writes on fd 3 once it is ready.
pub const DAEMON_READY: &[u8] = b"ok\r\n";

/// Size of one status note on the wire.
pub const NOTE_LEN: usize = 8;

/// The message a status note carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    /// The worker is ready for a connection (busy -> ready).
    Available,
    /// The worker is busy (ready -> busy).
    Unavailable,
    /// Count a connection; a ready worker becomes busy.
    Connection,
    /// Count a connection; the worker stays ready.
    ConnectionMulti,
    /// ringmaster extension: the worker is about to exit (it will accept nothing more).
    Exiting,
}

impl Message {
    /// The code on the wire.
    pub const fn code(self) -> i32 {
        match self {
            Message::Available => 1,
            Message::Unavailable => 2,
            Message::Connection => 3,
            Message::ConnectionMulti => 4,
            Message::Exiting => 0x52_4d_58, // "RMX": far from Cyrus's small codes
        }
    }

    /// The message of a wire code, if it is one we know.
    pub const fn from_code(code: i32) -> Option<Message> {
        match code {
            1 => Some(Message::Available),
            2 => Some(Message::Unavailable),
            3 => Some(Message::Connection),
            4 => Some(Message::ConnectionMulti),
            0x52_4d_58 => Some(Message::Exiting),
            _ => None,
        }
    }
}

/// A status note as it travels on the pipe: `{ i32 message, i32 pid }`, native endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawNote {
    pub code: i32,
    pub pid: i32,
}

impl RawNote {
    pub fn new(message: Message, pid: i32) -> RawNote {
        RawNote {
            code: message.code(),
            pid,
        }
    }

    pub fn encode(self) -> [u8; NOTE_LEN] {
        let mut out = [0u8; NOTE_LEN];
        out[..4].copy_from_slice(&self.code.to_ne_bytes());
        out[4..].copy_from_slice(&self.pid.to_ne_bytes());
        out
    }

    pub fn decode(bytes: [u8; NOTE_LEN]) -> RawNote {
        let [a, b, c, d, e, f, g, h] = bytes;
        RawNote {
            code: i32::from_ne_bytes([a, b, c, d]),
            pid: i32::from_ne_bytes([e, f, g, h]),
        }
    }

    pub fn message(self) -> Option<Message> {
        Message::from_code(self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip() {
        for m in [
            Message::Available,
            Message::Unavailable,
            Message::Connection,
            Message::ConnectionMulti,
            Message::Exiting,
        ] {
            let note = RawNote::new(m, 4242);
            assert_eq!(RawNote::decode(note.encode()), note);
            assert_eq!(note.message(), Some(m));
        }
    }

    #[test]
    fn cyrus_codes_are_cyrus_codes() {
        assert_eq!(Message::Available.code(), 1);
        assert_eq!(Message::Unavailable.code(), 2);
        assert_eq!(Message::Connection.code(), 3);
        assert_eq!(Message::ConnectionMulti.code(), 4);
        assert_eq!(Message::from_code(0), None);
        assert_eq!(Message::from_code(-1), None);
    }
}
