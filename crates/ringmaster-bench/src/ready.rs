//! How the bench sees workers become ready under any master: each minimal C worker started
//! with `-r PATH` sends its pid as one datagram to a UNIX socket the bench listens on.

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The bench's end of the workers' readiness reports.
pub struct Ready {
    socket: UnixDatagram,
    path: PathBuf,
    /// Each pid that reported, with when the bench read its report (the latest, should a
    /// pid be reused).
    pub seen: HashMap<i32, Instant>,
}

impl Ready {
    /// Bind `dir/ready.sock`, writable by the workers' user.
    pub fn bind(dir: &Path) -> Result<Ready, String> {
        let path = dir.join("ready.sock");
        let socket = UnixDatagram::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
        Ok(Ready {
            socket,
            path,
            seen: HashMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait up to `limit` for reports, then read all there are.
    pub fn wait(&mut self, limit: Duration) {
        let ms = limit.as_millis().min(1000) as u16;
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let mut buf = [0u8; 16];
        while let Ok(n) = self.socket.recv(&mut buf) {
            if n >= 4 {
                let pid = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                self.seen.insert(pid, Instant::now());
            }
        }
    }

    /// Pids that reported at or after `since`.
    pub fn count_since(&self, since: Instant) -> usize {
        self.seen.values().filter(|&&t| t >= since).count()
    }

    pub fn reported_since(&self, pid: i32, since: Instant) -> bool {
        self.seen.get(&pid).is_some_and(|&t| t >= since)
    }
}
