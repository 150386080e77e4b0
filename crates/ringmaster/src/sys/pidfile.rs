//! The master's pidfile: one file, created if missing, locked for the master's whole life so a
//! second master refuses to start, holding our pid, removed at exit.
//!
//! Cyrus's master opens the pidfile (and, with `-d`, a `<pidfile>.lock` held by the parent
//! while the child starts) and takes a POSIX write lock on it. ringmaster keeps a single file
//! and takes an open-file-description lock (F_OFD_SETLK): it conflicts with Cyrus's POSIX lock,
//! so the two masters also exclude each other, but unlike a POSIX lock it is not dropped when
//! some unrelated descriptor of the same file is closed, and it conflicts within one process
//! too. The descriptor is close-on-exec, so no worker holds the lock.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the pidfile could not be taken.
#[derive(Debug)]
pub enum PidFileError {
    /// The path is a symbolic link (ELOOP from O_NOFOLLOW).
    Symlink(PathBuf),
    /// Another process holds the lock: a master is already running.
    Locked {
        /// The pidfile.
        path: PathBuf,
        /// The pid written in it, when it could be read.
        pid: Option<i32>,
    },
    /// Any other failure.
    Io {
        /// The pidfile.
        path: PathBuf,
        /// What was being done: "open", "lock", "write".
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for PidFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidFileError::Symlink(path) => write!(
                f,
                "can't open pidfile {}: it is a symbolic link (refusing to follow symlink)",
                path.display()
            ),
            PidFileError::Locked {
                path,
                pid: Some(pid),
            } => write!(
                f,
                "pidfile {} is locked: a master is already running with pid {pid}",
                path.display()
            ),
            PidFileError::Locked { path, pid: None } => write!(
                f,
                "pidfile {} is locked: another master is already running",
                path.display()
            ),
            PidFileError::Io {
                path,
                action,
                source,
            } => write!(f, "can't {action} pidfile {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PidFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PidFileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A locked pidfile holding our pid. Dropping it releases the lock but leaves the file;
/// [`PidFile::remove`] unlinks it.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

impl PidFile {
    /// Open (creating, mode 0644, never following a symlink) and lock `path`, then replace
    /// its content with `"<our pid>\n"`. Take it after daemonizing: the pid is the daemon's.
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        let io_err = |action, source| PidFileError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => PidFileError::Symlink(path.to_path_buf()),
                _ => io_err("open", e),
            })?;
        match lock(&file) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                return Err(PidFileError::Locked {
                    path: path.to_path_buf(),
                    pid: read_pid(&file),
                })
            }
            Err(e) => return Err(io_err("lock", e)),
        }
        let content = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(content.as_bytes(), 0))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err("write", e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Unlink the pidfile (only if the path still names our file), then release the lock.
    pub fn remove(self) -> io::Result<()> {
        let ours = self.file.metadata()?;
        match std::fs::symlink_metadata(&self.path) {
            Ok(there) if there.dev() == ours.dev() && there.ino() == ours.ino() => {
                std::fs::remove_file(&self.path)
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A non-blocking exclusive lock on the whole file, owned by the open file description.
fn lock(file: &File) -> io::Result<()> {
    let mut request = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: fcntl with a valid descriptor and a pointer to a live, initialised flock.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut request) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    // Kernels before 3.15 lack OFD locks: fall back to the POSIX lock Cyrus takes.
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut request) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn read_pid(mut file: &File) -> Option<i32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn acquire_writes_our_pid_and_a_second_acquire_names_it() {
        let dir = TempDir::new("pidfile");
        let path = dir.path().join("master.pid");
        std::fs::write(&path, b"99999999\nstale junk\n").expect("stale");
        let held = PidFile::acquire(&path).expect("acquire");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("{}\n", std::process::id()));
        // The stale file existed: its mode is kept; a new file is 0644 less the umask.
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o022, 0, "{mode:o}");

        let err = PidFile::acquire(&path).expect_err("second master");
        let pid = i32::try_from(std::process::id()).expect("pid");
        assert!(matches!(err, PidFileError::Locked { pid: Some(p), .. } if p == pid));
        assert!(
            err.to_string()
                .contains(&format!("already running with pid {pid}")),
            "{err}"
        );

        held.remove().expect("remove");
        assert!(!path.exists());
        // Released: it can be taken again.
        PidFile::acquire(&path)
            .expect("reacquire")
            .remove()
            .expect("remove");
    }

    #[test]
    fn a_symlink_is_refused() {
        let dir = TempDir::new("pidfile-link");
        let target = dir.path().join("elsewhere");
        let path = dir.path().join("master.pid");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let err = PidFile::acquire(&path).expect_err("symlink");
        assert!(matches!(err, PidFileError::Symlink(_)), "{err:?}");
        assert!(
            err.to_string().contains("refusing to follow symlink"),
            "{err}"
        );
        assert!(!target.exists());
    }

    #[test]
    fn a_missing_directory_is_an_open_error() {
        let err =
            PidFile::acquire(Path::new("/nonexistent/ringmaster/master.pid")).expect_err("no dir");
        assert!(
            matches!(err, PidFileError::Io { action: "open", .. }),
            "{err:?}"
        );
    }
}
