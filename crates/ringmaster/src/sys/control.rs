//! The control socket's syscalls: creating the unix socket 0600 (replacing a stale one,
//! refusing a live one), nonblocking accept with the peer's credentials (SO_PEERCRED),
//! nonblocking reads and writes that never raise SIGPIPE, and removing the socket at exit.

use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, send, sockopt::PeerCredentials, MsgFlags};
use socket2::{Domain, SockAddr, Socket, Type};

/// Pending connections the kernel queues before the loop accepts them.
const BACKLOG: i32 = 16;

/// Who is at the other end of a connection, as the kernel says (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Why the control socket could not be created.
#[derive(Debug)]
pub enum BindError {
    /// A master answers on it already.
    InUse(PathBuf),
    /// Something that is not a socket is in the way: never removed.
    NotASocket(PathBuf),
    Io(PathBuf, io::Error),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::InUse(p) => write!(
                f,
                "control socket {}: another master is running and answers on it",
                p.display()
            ),
            BindError::NotASocket(p) => write!(
                f,
                "control socket {}: the path exists and is not a socket; not touched",
                p.display()
            ),
            BindError::Io(p, e) => write!(f, "control socket {}: {e}", p.display()),
        }
    }
}

/// The master's listening control socket; removed from the file system when dropped, if
/// the path still names it.
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created.
    identity: (u64, u64),
}

impl ControlListener {
    /// Creates the socket at `path`, mode 0600 (the directory is created 0700 if missing). A
    /// socket file nobody answers on (a dead master's) is replaced.
    pub fn bind(path: &Path) -> Result<ControlListener, BindError> {
        let err = |e: io::Error| BindError::Io(path.to_path_buf(), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(err)?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let socket =
            Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None).map_err(err)?;
        socket
            .bind(&SockAddr::unix(path).map_err(err)?)
            .map_err(err)?;
        // Before listen(): until then nobody can connect, so no one gets in before the mode
        // is right, whatever the umask was.
        let made = (|| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            socket.listen(BACKLOG)?;
            std::fs::metadata(path)
        })();
        let meta = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(err(e));
            }
        };
        Ok(ControlListener {
            listener: UnixListener::from(std::os::fd::OwnedFd::from(socket)),
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// A listener handed over by the previous image of this master (a binary upgrade): the
    /// socket file at `path` is still the one it listens on.
    pub fn adopt(fd: std::os::fd::OwnedFd, path: &Path) -> io::Result<ControlListener> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(ControlListener {
            listener: UnixListener::from(fd),
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next pending connection, nonblocking and close-on-exec, with its peer; None when
    /// none is pending. Err only when accepting itself fails (out of descriptors): a
    /// connection whose peer cannot be told is closed and the next one taken.
    pub fn accept(&self) -> io::Result<Option<(UnixStream, Peer)>> {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let Ok(cred) = getsockopt(&stream, PeerCredentials) else {
                continue;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let peer = Peer {
                pid: cred.pid(),
                uid: cred.uid(),
                gid: cred.gid(),
            };
            return Ok(Some((stream, peer)));
        }
    }
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        // Only our own socket: a master started after us may have replaced it.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What a nonblocking read brought.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The peer closed its end.
    Eof,
}

/// Reads what is there, at most `limit` bytes, appending to `buf`.
pub fn read_some(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<ReadOutcome> {
    let mut chunk = [0u8; 4096];
    let want = limit.min(chunk.len());
    if want == 0 {
        return Ok(ReadOutcome::Data(0));
    }
    match stream.read(&mut chunk[..want]) {
        Ok(0) => Ok(ReadOutcome::Eof),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(ReadOutcome::Data(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(ReadOutcome::WouldBlock),
        Err(e) => Err(e),
    }
}

/// Writes what the socket takes now without blocking (0 when it takes nothing); a peer that
/// went away is an error (EPIPE), never a signal.
pub fn write_some(stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    match send(
        std::os::fd::AsRawFd::as_raw_fd(stream),
        bytes,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    ) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The master's effective uid: it and root may use the control socket.
pub fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{in_forked_child, TempDir};
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn the_socket_is_0600_refuses_a_second_master_and_replaces_a_stale_file() {
        let dir = TempDir::new("control-bind");
        let path = dir.path().join("sub/control.sock");
        let first = ControlListener::bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert!(matches!(
            ControlListener::bind(&path),
            Err(BindError::InUse(_))
        ));

        // The second master's probe was a connection; the first one sees it end at once.
        let (mut probe, _) = first.accept().expect("accept").expect("the probe");
        assert_eq!(
            read_some(&mut probe, &mut Vec::new(), 10).unwrap(),
            ReadOutcome::Eof
        );
        let mut client = UnixStream::connect(&path).expect("connect");
        let (mut conn, peer) = first.accept().expect("accept").expect("pending");
        assert_eq!(peer.uid, own_uid());
        assert_eq!(peer.pid, std::process::id() as i32);
        client.write_all(b"hi\n").unwrap();
        let mut got = Vec::new();
        // A unix socket's bytes are there as soon as write returns.
        assert_eq!(
            read_some(&mut conn, &mut got, 100).unwrap(),
            ReadOutcome::Data(3)
        );
        assert_eq!(got, b"hi\n");
        assert_eq!(first.accept().unwrap().map(|_| ()), None);
        drop(client);
        assert_eq!(
            read_some(&mut conn, &mut got, 100).unwrap(),
            ReadOutcome::Eof
        );
        assert!(write_some(&conn, b"x").is_err(), "EPIPE, not SIGPIPE");

        drop(conn);
        drop(first);
        assert!(!path.exists(), "removed at exit");

        // A stale file: a socket bound and closed without unlinking (a master that died).
        // Bound in a child of its own: a listener of this process could be inherited by
        // another test's fork at that moment and stay open.
        let dead_master = || {
            Socket::new(Domain::UNIX, Type::STREAM, None)
                .and_then(|s| s.bind(&SockAddr::unix(&path)?).and_then(|()| s.listen(1)))
                .is_ok()
        };
        assert!(in_forked_child(Duration::from_secs(10), dead_master));
        assert!(UnixStream::connect(&path).is_err(), "stale");
        let second = ControlListener::bind(&path).expect("rebind over a stale socket");
        assert!(UnixStream::connect(&path).is_ok(), "live again");
        drop(second);

        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(
            ControlListener::bind(&path),
            Err(BindError::NotASocket(_))
        ));
        assert!(path.exists());
    }
}
