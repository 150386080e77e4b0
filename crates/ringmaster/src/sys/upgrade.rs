//! The syscalls of a binary upgrade: the state in a sealed memfd, descriptors kept open
//! across `execve`, the running binary kept open for a rollback, and the exec itself.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::stat::Mode;

/// The largest state read back: far above any real one, well below what could hurt.
const STATE_MAX: u64 = 256 << 20;

/// `bytes` in a memfd that no one can change any more (sealed against writes, growing and
/// shrinking), close-on-exec until [`inherit`] says otherwise.
pub fn sealed_state(bytes: &[u8]) -> io::Result<OwnedFd> {
    let name = c"ringmaster-upgrade";
    let fd = memfd_create(
        name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(OwnedFd::from(file))
}

/// Takes over descriptor `raw`, inherited across exec: checks that it is open, and makes it
/// close-on-exec again (children must not inherit it).
pub fn adopt_fd(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {raw} is not one to adopt"),
        ));
    }
    fcntl(raw, FcntlArg::F_GETFD)?;
    // SAFETY: `raw` is open (F_GETFD succeeded) and was handed to this image for it to own;
    // nothing else in this process refers to it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    inherit(fd.as_raw_fd(), false)?;
    Ok(fd)
}

/// Reads a state written by [`sealed_state`]: refuses a descriptor that is not sealed
/// against writes (not ours, or changeable under us).
pub fn read_sealed(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let seals = fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS)?;
    if seals & SealFlag::F_SEAL_WRITE.bits() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the state descriptor is not sealed",
        ));
    }
    let file = File::from(fd.try_clone_to_owned()?);
    let len = file.metadata()?.len();
    if len > STATE_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the state is too large ({len} bytes)"),
        ));
    }
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// [`read_sealed`] on a descriptor inherited across exec, which stays open.
pub fn read_inherited(raw: RawFd) -> io::Result<Vec<u8>> {
    fcntl(raw, FcntlArg::F_GETFD)?;
    // SAFETY: `raw` is open (F_GETFD succeeded) and is only borrowed for this call; nothing
    // closes it meanwhile (single-threaded).
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    read_sealed(fd)
}

/// [`exec_fd`] of a binary open as a descriptor inherited across exec.
pub fn exec_inherited(raw: RawFd, argv: &[OsString], env: &[(OsString, OsString)]) -> io::Error {
    if let Err(err) = fcntl(raw, FcntlArg::F_GETFD) {
        return err.into();
    }
    // SAFETY: `raw` is open (F_GETFD succeeded) and is only borrowed for the exec.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    exec_fd(fd, argv, env)
}

/// Whether `fd` survives the next exec.
pub fn inherit(fd: RawFd, keep: bool) -> io::Result<()> {
    let flags = if keep {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Whether descriptor `raw` is open.
pub fn is_open(raw: RawFd) -> bool {
    raw >= 0 && fcntl(raw, FcntlArg::F_GETFD).is_ok()
}

/// The running binary, open for reading (close-on-exec), to run again by descriptor if the
/// new one fails: the file at its path may have been replaced by then.
pub fn open_running_binary() -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        "/proc/self/exe",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `open` just returned this descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `path` is a regular file this process may execute.
pub fn executable(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)?;
    Ok(())
}

fn cstrings<'a>(items: impl Iterator<Item = &'a OsStr>) -> io::Result<Vec<CString>> {
    items
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        })
        .collect()
}

fn env_strings(env: &[(OsString, OsString)]) -> io::Result<Vec<CString>> {
    let joined: Vec<OsString> = env
        .iter()
        .map(|(k, v)| {
            let mut s = k.clone();
            s.push("=");
            s.push(v);
            s
        })
        .collect();
    cstrings(joined.iter().map(OsString::as_os_str))
}

/// Replaces this process's image with `path`; returns only on failure.
pub fn exec_path(path: &Path, argv: &[OsString], env: &[(OsString, OsString)]) -> io::Error {
    let run = || -> io::Result<()> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let argv = cstrings(argv.iter().map(OsString::as_os_str))?;
        let env = env_strings(env)?;
        nix::unistd::execve(&path, &argv, &env)?;
        Ok(())
    };
    match run() {
        Ok(()) => io::Error::other("execve returned"),
        Err(err) => err,
    }
}

/// Replaces this process's image with the binary open as `fd`; returns only on failure.
pub fn exec_fd(fd: BorrowedFd<'_>, argv: &[OsString], env: &[(OsString, OsString)]) -> io::Error {
    let run = || -> io::Result<()> {
        let argv = cstrings(argv.iter().map(OsString::as_os_str))?;
        let env = env_strings(env)?;
        nix::unistd::fexecve(fd.as_raw_fd(), &argv, &env)?;
        Ok(())
    };
    match run() {
        Ok(()) => io::Error::other("fexecve returned"),
        Err(err) => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_sealed_state_reads_back_and_cannot_be_changed() {
        let fd = sealed_state(b"hello").unwrap();
        assert_eq!(read_sealed(fd.as_fd()).unwrap(), b"hello");
        let file = File::from(fd);
        assert!(file.write_at(b"x", 0).is_err());
        assert!(file.set_len(1).is_err());
    }

    #[test]
    fn an_unsealed_descriptor_is_refused() {
        let file = File::open("/proc/self/exe").unwrap();
        assert!(read_sealed(file.as_fd()).is_err());
    }

    #[test]
    fn a_missing_or_plain_file_is_not_executable() {
        assert!(executable(Path::new("/nonexistent/ringmaster")).is_err());
        assert!(executable(Path::new("/bin/sh")).is_ok());
    }
}
