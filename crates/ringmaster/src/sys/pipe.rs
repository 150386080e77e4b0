//! The per-service status pipe: created here, and drained here into a byte buffer that the
//! runtime splits into 8-byte notes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// The most one [`read_notes`] call takes, so one chatty service cannot starve the loop
/// (the descriptor stays readable and epoll wakes us again).
pub const MAX_READ_PER_CALL: usize = 64 * 1024;
/// Bytes asked of one `read`: a whole number of notes (see [`read_notes`]).
const READ_CHUNK: usize = 512 * ringmaster_proto::NOTE_LEN;

/// A status pipe: (read end: nonblocking, close-on-exec; write end: blocking, close-on-exec).
/// The master keeps the write end open for as long as the service exists, so the read end
/// never sees end-of-file while workers come and go; [`crate::sys::spawn`] puts a copy of the
/// write end on fd 3 of each worker.
pub fn status_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let flags = OFlag::from_bits_truncate(fcntl(read.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        read.as_raw_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    Ok((read, write))
}

/// What one [`read_notes`] call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Bytes appended to the buffer.
    pub bytes: usize,
    /// Every write end is closed: nothing more will ever come.
    pub eof: bool,
}

/// Append everything readable now from the nonblocking `fd` to `buf` (up to
/// [`MAX_READ_PER_CALL`]), stopping at EAGAIN or end-of-file.
///
/// A note is one 8-byte `write`, which a pipe keeps whole (it is below PIPE_BUF), and every
/// read asks for a whole number of notes, so as long as the writers follow the protocol the
/// bytes appended end on a note boundary, cap or not. A remainder therefore means a broken
/// writer: the runtime drops it (and says so) rather than keep it, which would misalign every
/// note after it.
pub fn read_notes(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<ReadOutcome> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut outcome = ReadOutcome {
        bytes: 0,
        eof: false,
    };
    while outcome.bytes < MAX_READ_PER_CALL {
        match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            Ok(0) => {
                outcome.eof = true;
                break;
            }
            Ok(n) => {
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                outcome.bytes += n;
            }
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn is_cloexec(fd: &OwnedFd) -> bool {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFD).expect("getfd");
        flags & libc::FD_CLOEXEC != 0
    }

    fn is_nonblocking(fd: &OwnedFd) -> bool {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).expect("getfl");
        OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK)
    }

    #[test]
    fn flags_are_as_documented() {
        let (r, w) = status_pipe().expect("pipe");
        assert!(is_cloexec(&r) && is_cloexec(&w));
        assert!(is_nonblocking(&r));
        assert!(!is_nonblocking(&w));
    }

    #[test]
    fn reads_everything_available_then_reports_eof() {
        let (r, w) = status_pipe().expect("pipe");
        let mut buf = vec![0xAA];
        assert_eq!(
            read_notes(r.as_fd(), &mut buf).expect("read"),
            ReadOutcome {
                bytes: 0,
                eof: false
            }
        );
        for i in 0..1000u32 {
            nix::unistd::write(&w, &[i.to_ne_bytes(), (i + 1).to_ne_bytes()].concat())
                .expect("write");
        }
        nix::unistd::write(&w, b"abc").expect("write");
        let outcome = read_notes(r.as_fd(), &mut buf).expect("read");
        assert_eq!(
            outcome,
            ReadOutcome {
                bytes: 8003,
                eof: false
            }
        );
        assert_eq!(buf.len(), 8004);
        assert_eq!(buf.get(1..5), Some(&0u32.to_ne_bytes()[..]));
        drop(w);
        assert_eq!(
            read_notes(r.as_fd(), &mut buf).expect("read"),
            ReadOutcome {
                bytes: 0,
                eof: true
            }
        );
    }

    #[test]
    fn the_size_cap_ends_on_a_note_boundary() {
        let (r, w) = status_pipe().expect("pipe");
        fcntl(w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(256 * 1024)).expect("grow the pipe");
        let notes = MAX_READ_PER_CALL / 8 + 1000;
        for i in 0..notes {
            let i = u32::try_from(i).expect("small");
            nix::unistd::write(&w, &[i.to_ne_bytes(), i.to_ne_bytes()].concat()).expect("write");
        }
        let mut buf = Vec::new();
        let first = read_notes(r.as_fd(), &mut buf).expect("read");
        assert!(first.bytes >= MAX_READ_PER_CALL && first.bytes < notes * 8);
        assert_eq!(first.bytes % 8, 0);
        let second = read_notes(r.as_fd(), &mut buf).expect("read");
        assert_eq!(first.bytes + second.bytes, notes * 8);
    }
}
