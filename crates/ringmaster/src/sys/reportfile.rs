//! Writing a report file the way Cyrus's master writes its Prometheus report: opened (created
//! 0600) read-write, a non-blocking POSIX write lock (skip this turn if a reader holds it),
//! the text written from the start, the file cut to its length, the lock dropped on close.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg};

/// Who should own what is created, when the master runs as root and its children do not.
pub type Owner = Option<(libc::uid_t, libc::gid_t)>;

/// Creates `dir` and its missing parents 0755, owned by `owner` (as Cyrus's `cyrus_mkdir`,
/// run by a master that is already the cyrus user).
pub fn make_dirs(dir: &Path, owner: Owner) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent, owner)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Replaces the contents of `path` with `text` under a write lock. Ok(false): another process
/// holds a lock on it; nothing was written.
pub fn write_locked(path: &Path, text: &[u8], owner: Owner) -> io::Result<bool> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    if !lock(&file)? {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(0))?;
    file.write_all(text)?;
    file.set_len(text.len() as u64)?;
    // Closing the file releases the lock.
    Ok(true)
}

fn lock(file: &File) -> io::Result<bool> {
    let request = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(file.as_raw_fd(), FcntlArg::F_SETLK(&request)) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_report_replaces_the_old_one_and_is_private() {
        let dir = TempDir::new("reportfile");
        let stats = dir.path().join("a/stats");
        make_dirs(&stats, None).unwrap();
        let path = stats.join("master.txt");
        assert!(write_locked(&path, b"a longer first report\n", None).unwrap());
        assert!(write_locked(&path, b"short\n", None).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(&stats).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
