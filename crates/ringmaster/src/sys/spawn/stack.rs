//! The stack a cloned child runs on until it execs: mapped once per thread and kept, with a
//! guard page below it.
//!
//! Mapping and unmapping it for every spawn cost two syscalls and a TLB flush each time; kept,
//! it costs the few pages the child touches (a handful of frames of syscalls) in the master's
//! resident set. One per thread, because only the thread inside `clone` is suspended while its
//! child runs (the master has one thread; tests spawn from several).

use std::cell::Cell;
use std::io;
use std::ptr;

/// Usable bytes of the stack.
const STACK_BYTES: usize = 64 * 1024;
/// The guard below it: an overflow faults instead of writing into whatever is mapped there.
const GUARD_BYTES: usize = 4096;

/// A thread's stack: its lowest address (the guard's), null until mapped.
struct Stack(Cell<*mut libc::c_void>);

impl Drop for Stack {
    fn drop(&mut self) {
        let base = self.0.get();
        if !base.is_null() {
            // SAFETY: the mapping made by `map` for this thread, which is ending: no spawn of
            // its own can be running, so no child is on it.
            unsafe { libc::munmap(base, GUARD_BYTES + STACK_BYTES) };
        }
    }
}

thread_local! {
    static STACK: Stack = const { Stack(Cell::new(ptr::null_mut())) };
}

/// The (page-aligned, so 16-byte aligned) top of this thread's child stack, mapped at the
/// first call and kept until the thread ends.
pub(super) fn top() -> io::Result<*mut libc::c_void> {
    STACK.with(|stack| {
        if stack.0.get().is_null() {
            stack.0.set(map()?);
        }
        Ok(stack.0.get().wrapping_byte_add(GUARD_BYTES + STACK_BYTES))
    })
}

fn map() -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            GUARD_BYTES + STACK_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first page of the mapping just made, which nothing uses yet.
    if unsafe { libc::mprotect(base, GUARD_BYTES, libc::PROT_NONE) } != 0 {
        let err = io::Error::last_os_error();
        // SAFETY: the mapping just made, unused.
        unsafe { libc::munmap(base, GUARD_BYTES + STACK_BYTES) };
        return Err(err);
    }
    Ok(base)
}
