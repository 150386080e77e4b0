//! The accept loop end to end: the `echo` example run as a master would run it, fds and all.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringmaster_proto::{Message, RawNote, ENV_EXIT_NOTES, ENV_ID, ENV_SERVICE, NOTE_LEN};

fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/echo")
}

struct Run {
    child: Child,
    notes: std::fs::File,
    port: u16,
}

fn start(args: &[&str], exit_notes: bool) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (lfd, wfd) = (listener.as_raw_fd(), w.as_raw_fd());
    let mut cmd = Command::new(example());
    cmd.args(args).env(ENV_SERVICE, "echo").env(ENV_ID, "0");
    if exit_notes {
        cmd.env(ENV_EXIT_NOTES, "1");
    }
    // SAFETY: only fcntl and dup2 (async-signal-safe) run between fork and exec. Both fds are
    // first moved above 4, so placing one cannot clobber the other; dup2 clears CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            let w = libc::fcntl(wfd, libc::F_DUPFD_CLOEXEC, 10);
            let l = libc::fcntl(lfd, libc::F_DUPFD_CLOEXEC, 10);
            if w < 0 || l < 0 || libc::dup2(w, 3) < 0 || libc::dup2(l, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    Run {
        child,
        notes: std::fs::File::from(r),
        port,
    }
}

impl Run {
    fn note(&mut self) -> Message {
        let mut buf = [0u8; NOTE_LEN];
        self.notes.read_exact(&mut buf).unwrap();
        let note = RawNote::decode(buf);
        assert_eq!(note.pid, self.child.id() as i32);
        note.message().unwrap()
    }

    fn connect(&self) -> (BufReader<TcpStream>, TcpStream) {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut banner = String::new();
        r.read_line(&mut banner).unwrap();
        assert_eq!(banner, format!("* OK {}\r\n", self.child.id()));
        (r, s)
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child.kill().unwrap();
        panic!("worker did not exit within 5 s");
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A failed test must not leave its worker behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn serves_max_uses_then_exits_zero() {
    let mut w = start(&["2"], false);
    assert_eq!(w.note(), Message::Available);
    for round in 0..2 {
        let (mut r, mut s) = w.connect();
        assert_eq!(w.note(), Message::Connection);
        s.write_all(b"hello\r\nQUIT\r\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "hello\r\n");
        if round == 0 {
            assert_eq!(w.note(), Message::Available);
        }
    }
    assert_eq!(w.wait().code(), Some(0));
    // The last client gets no AVAILABLE: the worker is leaving.
    let mut rest = Vec::new();
    w.notes.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "notes after the last client: {rest:?}");
}

#[test]
fn hangup_when_idle_exits_at_once_with_exit_note() {
    let mut w = start(&[], true);
    assert_eq!(w.note(), Message::Available);
    w.signal(Signal::SIGHUP);
    assert_eq!(w.note(), Message::Exiting);
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn hangup_when_busy_finishes_the_client() {
    let mut w = start(&[], false);
    assert_eq!(w.note(), Message::Available);
    let (mut r, mut s) = w.connect();
    assert_eq!(w.note(), Message::Connection);
    w.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(100));
    assert!(w.child.try_wait().unwrap().is_none(), "exited while busy");
    s.write_all(b"still here\r\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\r\n");
    drop((r, s));
    assert_eq!(w.wait().code(), Some(0));
}

#[test]
fn terminate_exits_75_even_when_busy() {
    let mut w = start(&[], true);
    assert_eq!(w.note(), Message::Available);
    let (_r, _s) = w.connect();
    assert_eq!(w.note(), Message::Connection);
    w.signal(Signal::SIGTERM);
    assert_eq!(w.note(), Message::Exiting);
    assert_eq!(w.wait().code(), Some(75));
}

#[test]
fn missing_environment_exits_70() {
    let st = Command::new(example())
        .env_remove(ENV_SERVICE)
        .env_remove(ENV_ID)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(70));
}
