//! Which signal dispositions a child must set back to SIG_DFL before exec, and the reset.
//!
//! A disposition of SIG_IGN survives exec, and a handler run between clone and exec would run
//! in the master's memory, so the child resets every signal the master does not leave at
//! SIG_DFL. The master changes few of them (Rust's SIGPIPE and stack-overflow handlers, the
//! glibc-internal signals [`super::super::signals`] ignores), all at start-up: resetting only
//! those, rather than all 64, saves some 60 syscalls per spawn. They are found once, by asking
//! the kernel; a disposition changed later must be reported with [`disposition_changed`].

use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Highest signal number on Linux (`_NSIG - 1`).
const MAX_SIGNAL: libc::c_int = 64;

/// Signals found not at SIG_DFL when first asked.
static FOUND: OnceLock<u64> = OnceLock::new();
/// Signals changed since ([`disposition_changed`]).
static CHANGED: AtomicU64 = AtomicU64::new(0);

fn bit(signal: libc::c_int) -> u64 {
    1u64 << (signal - 1)
}

/// Say that this process changed the disposition of `signal` (after start-up, say): from now
/// on children reset it too.
pub fn disposition_changed(signal: libc::c_int) {
    if (1..=MAX_SIGNAL).contains(&signal) {
        CHANGED.fetch_or(bit(signal), Ordering::Relaxed);
    }
}

/// The signals a child resets (bit n-1 for signal n): those not at SIG_DFL in this process.
pub(super) fn to_reset() -> u64 {
    *FOUND.get_or_init(not_default) | CHANGED.load(Ordering::Relaxed)
}

/// Ask the kernel for each disposition (once per process). SIGKILL and SIGSTOP cannot change.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
fn not_default() -> u64 {
    let mut mask = 0;
    for signal in 1..=MAX_SIGNAL {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction with no new action writes the current one into `old`, a
        // kernel-layout struct in our frame; 8 is the kernel's sigset size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                std::mem::size_of::<u64>(),
            )
        };
        // A signal the kernel would not describe is reset anyway.
        if rc != 0 || old.handler != libc::SIG_DFL as libc::c_ulong {
            mask |= bit(signal);
        }
    }
    mask
}

/// Without the raw layout, every signal is reset (glibc refuses its internal ones).
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
fn not_default() -> u64 {
    (1..=MAX_SIGNAL)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
        .fold(0, |mask, s| mask | bit(s))
}

/// Set every signal of `mask` to SIG_DFL.
///
/// # Safety
///
/// Only in the cloned child (see `run_child` in [`super`]): async-signal-safe.
pub(super) unsafe fn reset(mask: u64) {
    for signal in 1..=MAX_SIGNAL {
        if mask & bit(signal) != 0 {
            // SAFETY: as this function's contract.
            unsafe { reset_disposition(signal) };
        }
    }
}

/// The kernel's `struct sigaction` on architectures with the generic layout.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
#[repr(C)]
pub(in crate::sys) struct KernelSigaction {
    pub(in crate::sys) handler: libc::c_ulong,
    pub(in crate::sys) flags: libc::c_ulong,
    pub(in crate::sys) restorer: libc::c_ulong,
    pub(in crate::sys) mask: u64,
}

/// Set `signal` to SIG_DFL with the raw syscall: glibc's `sigaction` refuses its internal
/// signals 32 and 33, yet a disposition of theirs (ignored, say) would survive exec.
///
/// # Safety
///
/// Only in the cloned child: async-signal-safe.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
unsafe fn reset_disposition(signal: libc::c_int) {
    let default = KernelSigaction {
        handler: libc::SIG_DFL as libc::c_ulong,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: rt_sigaction reads a valid kernel-layout struct from our frame; the old action is
    // not requested; the last argument is the kernel's sigset size (8 bytes).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            &default as *const KernelSigaction,
            ptr::null_mut::<KernelSigaction>(),
            std::mem::size_of::<u64>(),
        );
    }
}

/// Set `signal` to SIG_DFL through libc (its internal signals stay as they are).
///
/// # Safety
///
/// Only in the cloned child: async-signal-safe.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
unsafe fn reset_disposition(signal: libc::c_int) {
    // SAFETY: sigaction with a zeroed (SIG_DFL, empty mask) action from our frame.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(signal, &default, ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rusts_sigpipe_is_found_and_a_later_change_is_kept() {
        // Rust's runtime ignores SIGPIPE in every test process.
        assert_ne!(to_reset() & bit(libc::SIGPIPE), 0);
        assert_eq!(to_reset() & (bit(libc::SIGKILL) | bit(libc::SIGSTOP)), 0);
        disposition_changed(libc::SIGRTMAX());
        assert_ne!(to_reset() & bit(libc::SIGRTMAX()), 0);
    }
}
