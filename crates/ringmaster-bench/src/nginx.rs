//! nginx's binary upgrade, for `ringmaster-bench upgrade` to compare with: an nginx serving a
//! fixed HTTP answer on a loopback port, upgraded the documented way (SIGUSR2 starts a new
//! master from the binary beside the old one; SIGQUIT ends the old one gracefully). Run only
//! when nginx is installed; every process is found and stopped by its pid file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const NGINX: &str = "/usr/sbin/nginx";
/// What each client sends: nginx speaks second.
pub const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n";

pub struct Nginx {
    pub addr: std::net::SocketAddr,
    dir: PathBuf,
    pidfile: PathBuf,
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Running, and not a zombie (an exited master whose parent has not reaped it yet).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

impl Nginx {
    /// Starts nginx (daemonized, 2 workers) in a new temp dir on `port`.
    pub fn start(port: u16) -> Result<Nginx, String> {
        let dir = std::env::temp_dir().join(format!(
            "ringmaster-bench-nginx.{}.{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
        let pidfile = dir.join("nginx.pid");
        let conf = format!(
            "worker_processes 2;\npid {pid};\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n    \
             location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            pid = pidfile.display(),
            dir = dir.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let out = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .output()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nginx did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let nginx = Nginx {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            pidfile,
        };
        if !wait_for(Duration::from_secs(5), || nginx.master().is_some()) {
            return Err("nginx wrote no pid file".into());
        }
        Ok(nginx)
    }

    fn master(&self) -> Option<i32> {
        read_pid(&self.pidfile).filter(|&p| alive(p))
    }

    /// One binary upgrade: USR2 to the master, wait for the new one's pid file, QUIT to the
    /// old one, wait until it is gone.
    pub fn upgrade(&self) -> Result<(), String> {
        let old = self.master().ok_or("no nginx master")?;
        kill(Pid::from_raw(old), Signal::SIGUSR2).map_err(|e| e.to_string())?;
        let started = wait_for(Duration::from_secs(10), || {
            read_pid(&self.pidfile).is_some_and(|p| p != old && alive(p))
        });
        if !started {
            return Err("the new nginx master did not start".into());
        }
        kill(Pid::from_raw(old), Signal::SIGQUIT).map_err(|e| e.to_string())?;
        if !wait_for(Duration::from_secs(30), || !alive(old)) {
            return Err(format!("the old nginx master {old} did not exit"));
        }
        Ok(())
    }

    /// Stops the master of the pid file (and so its workers), then removes the directory.
    pub fn stop(self) {
        if let Some(pid) = self.master() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            wait_for(Duration::from_secs(10), || !alive(pid));
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
