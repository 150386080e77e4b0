//! How the bench sees workers become ready under any master: each minimal C worker started
//! with `-r PATH` sends its pid as one datagram to a UNIX socket the bench listens on.
//!
//! The bench reads the socket only when it chooses to (see `scale`'s tick) and keeps the
//! count of pids that reported since a mark as it reads them, so that checking progress
//! costs the same with 100 workers as with 20,000.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The bench's end of the workers' readiness reports.
pub struct Ready {
    socket: UnixDatagram,
    path: PathBuf,
    /// Each pid that reported, with when the bench read its report (the latest, should a
    /// pid be reused).
    seen: HashMap<i32, Instant>,
    /// Reports read at or after this instant count as fresh.
    mark: Instant,
    /// Pids whose latest report was read at or after `mark`.
    fresh: usize,
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
            mark: Instant::now(),
            fresh: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read every report waiting, without waiting for more.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 16];
        while let Ok(n) = self.socket.recv(&mut buf) {
            if n >= 4 {
                let pid = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                self.note(pid, Instant::now());
            }
        }
    }

    /// One report of `pid`, read at `at`.
    fn note(&mut self, pid: i32, at: Instant) {
        let before = self.seen.insert(pid, at);
        let was_fresh = before.is_some_and(|t| t >= self.mark);
        if at >= self.mark && !was_fresh {
            self.fresh += 1;
        }
    }

    /// Count from now on only reports read at or after `since` (one pass over the pids
    /// seen; every later count is kept as reports are read).
    pub fn mark(&mut self, since: Instant) {
        self.mark = since;
        self.fresh = self.seen.values().filter(|&&t| t >= since).count();
    }

    /// Pids that reported at or after the mark.
    pub fn fresh(&self) -> usize {
        self.fresh
    }

    /// Whether `pid` reported at or after the mark.
    pub fn is_fresh(&self, pid: i32) -> bool {
        self.seen.get(&pid).is_some_and(|&t| t >= self.mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ready() -> (PathBuf, Ready) {
        let dir = std::env::temp_dir().join(format!(
            "ringmaster-bench-ready-test.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let ready = Ready::bind(&dir).unwrap();
        (dir, ready)
    }

    #[test]
    fn counts_fresh_reports_once_each() {
        let (dir, mut ready) = ready();
        let start = Instant::now();
        ready.mark(start);
        ready.note(1, start);
        ready.note(2, start);
        ready.note(2, start + Duration::from_millis(1));
        assert_eq!(ready.fresh(), 2);
        // A recycle: what came before the mark is old, a pid reporting again is fresh.
        let hup = start + Duration::from_millis(2);
        ready.mark(hup);
        assert_eq!(ready.fresh(), 0);
        ready.note(3, hup);
        ready.note(1, hup + Duration::from_millis(1));
        ready.note(1, hup + Duration::from_millis(2));
        assert_eq!(ready.fresh(), 2);
        assert!(ready.is_fresh(1) && ready.is_fresh(3) && !ready.is_fresh(2));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn drains_what_the_workers_sent() {
        let (dir, mut ready) = ready();
        ready.mark(Instant::now());
        let sender = UnixDatagram::unbound().unwrap();
        for pid in [7i32, 8, 7] {
            sender.send_to(&pid.to_ne_bytes(), ready.path()).unwrap();
        }
        ready.drain();
        assert_eq!(ready.fresh(), 2);
        let _ = fs::remove_dir_all(&dir);
    }
}
