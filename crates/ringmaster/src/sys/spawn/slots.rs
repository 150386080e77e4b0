//! Two descriptor numbers kept low in the master's table, where a child's status pipe and
//! listener are staged before it is cloned, so that the child can share the table (CLONE_FILES)
//! and copy only its first few entries when it unshares it.
//!
//! Why: a cloned child that does not share the table gets a copy of all of it, and its exec
//! then closes every copied entry again. With 5,000 services the master holds 15,000
//! descriptors, and that copy and close cost about 1.7 ms per spawn, four times the rest of
//! it. `close_range(first, ~0, CLOSE_RANGE_UNSHARE)` (Linux 5.9) copies only the descriptors
//! below `first`: with the child's two descriptors staged on numbers just above 4, that is
//! a handful, whatever the size of the configuration.
//!
//! Between spawns each slot holds a close-on-exec copy of /dev/null, so that nothing else
//! takes its number and no staged listener outlives the spawn it was staged for.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use ringmaster_proto::LISTEN_FD;

/// The lowest number a slot may have: above the child's fds 3 and 4, so that staging never
/// touches a descriptor the child keeps, and never 0-2, which the child inherits as they are.
const LOWEST_SLOT: RawFd = LISTEN_FD + 1;
/// The kernel copies a table in steps of 64 entries (one word of its bitmaps), so the child
/// keeps whole steps: the few extra entries are closed at exec like every other.
const TABLE_STEP: RawFd = 64;

/// A thread's two slots, and what fills them between spawns.
struct Slots {
    filler: OwnedFd,
    status: OwnedFd,
    listen: OwnedFd,
}

thread_local! {
    /// None until the thread first asks; then the slots, or None when they could not be had
    /// (no /dev/null, or no descriptor free), in which case children copy the whole table.
    static SLOTS: RefCell<Option<Option<Slots>>> = const { RefCell::new(None) };
}

/// Take this thread's slots now, while the lowest numbers are still free, and say from which
/// number a child may drop the master's descriptors (None: it copies the whole table). The
/// master calls it first thing; anything else gets its slots at its first spawn.
pub fn reserve() -> Option<RawFd> {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let slots = slots.get_or_insert_with(|| open().ok());
        slots.as_ref().map(Slots::unshare_from)
    })
}

/// For tests: this thread's children copy the whole table, as without slots.
#[cfg(test)]
pub fn go_without() {
    SLOTS.with(|slots| *slots.borrow_mut() = Some(None));
}

fn open() -> io::Result<Slots> {
    let null = OwnedFd::from(File::open("/dev/null")?);
    let low_copy = |fd: &OwnedFd| -> io::Result<OwnedFd> {
        // SAFETY: fcntl on a descriptor we own; F_DUPFD_CLOEXEC passes no memory.
        let raw = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, LOWEST_SLOT) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl just returned this new descriptor, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    };
    // The filler is moved up as well: with stdio closed, /dev/null may have opened as 0-2,
    // which the master may later redirect.
    Ok(Slots {
        filler: low_copy(&null)?,
        status: low_copy(&null)?,
        listen: low_copy(&null)?,
    })
}

impl Slots {
    fn unshare_from(&self) -> RawFd {
        let highest = self.status.as_raw_fd().max(self.listen.as_raw_fd());
        (highest / TABLE_STEP + 1) * TABLE_STEP
    }
}

/// The child's descriptors, staged on the slots for the time of one spawn; dropping it puts
/// the filler back, so the master's table is as before.
pub struct Staged {
    /// Where the status pipe is now, if there is one.
    pub status_fd: Option<RawFd>,
    /// Where the listener is now, if there is one.
    pub listen_fd: Option<RawFd>,
    /// The child may drop every descriptor from here up when it unshares the table.
    pub unshare_from: RawFd,
    filler: RawFd,
    slots: [RawFd; 2],
}

/// Stage `status_fd` and `listen_fd` on this thread's slots, or None when the thread has none
/// (the child then gets a copy of the whole table, as with fork).
pub fn stage(status_fd: Option<RawFd>, listen_fd: Option<RawFd>) -> io::Result<Option<Staged>> {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let Some(slots) = slots.get_or_insert_with(|| open().ok()) else {
            return Ok(None);
        };
        let status_slot = slots.status.as_raw_fd();
        let listen_slot = slots.listen.as_raw_fd();
        let mut staged = Staged {
            status_fd: None,
            listen_fd: None,
            unshare_from: slots.unshare_from(),
            filler: slots.filler.as_raw_fd(),
            slots: [status_slot, listen_slot],
        };
        // With CLOEXEC, as the originals: a process that another thread execs meanwhile must
        // not keep a copy. The child's dup2 onto 3 and 4 clears the flag on those.
        let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        if let Some(fd) = status_fd {
            dup_onto(fd, status_slot, libc::O_CLOEXEC)
                .map_err(|e| context("staging the status pipe", e))?;
            staged.status_fd = Some(status_slot);
        }
        if let Some(fd) = listen_fd {
            dup_onto(fd, listen_slot, libc::O_CLOEXEC)
                .map_err(|e| context("staging the listener", e))?;
            staged.listen_fd = Some(listen_slot);
        }
        Ok(Some(staged))
    })
}

impl Drop for Staged {
    fn drop(&mut self) {
        for slot in self.slots {
            // Only fails for a bad descriptor, and both are ours and open: nothing to do then.
            let _ = dup_onto(self.filler, slot, libc::O_CLOEXEC);
        }
    }
}

/// dup3(`fd`, `slot`, `flags`), retried on EINTR.
fn dup_onto(fd: RawFd, slot: RawFd, flags: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: dup3 onto a slot this thread owns (it holds a filler or a staged copy, which
        // dup3 replaces atomically); `fd` is only read, and a bad one fails with EBADF.
        if unsafe { libc::dup3(fd, slot, flags) } >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
