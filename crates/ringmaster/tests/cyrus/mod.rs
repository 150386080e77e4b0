//! The Cyrus instance the interop tests run (a temp dir with imapd.conf, cyrus.conf, a SASL
//! database and every directory Cyrus wants, started under the master under test), and small
//! line-protocol clients (IMAP, and plain lines for LMTP, POP3 and ManageSieve).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

pub const CYRUS_BIN: &str = "/usr/lib/cyrus/bin";
pub const SASLPASSWD2: &str = "/usr/sbin/saslpasswd2";
pub const CYRUS_CONF: &str = include_str!("../data/cyrus/cyrus.conf");
pub const IMAPD_CONF: &str = include_str!("../data/cyrus/imapd.conf");
pub const START_PROBE: &str = include_str!("../data/cyrus/start-probe.sh");

/// The servername before and after the reload: Cyrus puts it in every greeting.
pub const BEFORE: &str = "before.example.org";
pub const AFTER: &str = "after.example.org";

/// Users, created in the SASL realm of both servernames (a plain login is looked up as
/// user@servername, so the reload would otherwise lock everyone out).
pub const ADMIN: (&str, &str) = ("admin", "admin-secret");
pub const ALICE: (&str, &str) = ("alice", "alice-secret");

pub const SUBJECT: &str = "ringmaster interop hello";

/// True when the tests can run here; prints why not (or panics under CI=true).
pub fn cyrus_available() -> bool {
    !skip_unless(is_root(), "root (Cyrus's services run as user cyrus)")
        && !skip_unless(
            Path::new(CYRUS_BIN).join("imapd").exists(),
            "Debian's Cyrus IMAP (/usr/lib/cyrus/bin/imapd: apt-get install cyrus-imapd)",
        )
        && !skip_unless(
            Path::new(CYRUS_BIN).join("pop3d").exists(),
            "Debian's Cyrus POP3 (/usr/lib/cyrus/bin/pop3d: apt-get install cyrus-pop3d)",
        )
        && !skip_unless(
            Path::new(SASLPASSWD2).exists(),
            "saslpasswd2 (apt-get install sasl2-bin)",
        )
        && !skip_unless(
            nix::unistd::User::from_name("cyrus")
                .ok()
                .flatten()
                .is_some(),
            "the user cyrus (created by cyrus-common)",
        )
}

/// The master under test: ringmaster, unless RINGMASTER_INTEROP_MASTER names another.
pub fn master_program() -> (String, bool) {
    match std::env::var("RINGMASTER_INTEROP_MASTER") {
        Ok(p) if !p.is_empty() && p != MASTER => (p, true),
        _ => (MASTER.to_string(), false),
    }
}

/// A complete Cyrus instance in a temp dir, run by the master under test.
pub struct Cyrus {
    // Declared first so that it is dropped (stopped) before the directory is removed.
    pub master: Master,
    pub dir: TestDir,
    pub imap: u16,
    pub pop3: u16,
    pub sieve: u16,
    /// Running a reference master (Cyrus's own), not ringmaster.
    pub reference: bool,
}

impl Cyrus {
    /// Builds the instance and starts the master; waits until IMAP answers.
    pub fn start(tag: &str) -> Cyrus {
        let dir = TestDir::new(tag);
        let (imap, pop3, sieve) = (free_port(), free_port(), free_port());
        for sub in [
            "db",
            "log",
            "msg",
            "proc",
            "quota",
            "sieve",
            "socket",
            "spool",
            "user",
            "run/proc",
            "run/lock",
            "run/socket",
        ] {
            fs::create_dir_all(dir.0.join(sub)).expect("mkdir");
        }
        let fill = |template: &str| {
            template
                .replace("@DIR@", &dir.0.display().to_string())
                .replace(
                    "@IMAPD_CONF@",
                    &dir.path("imapd.conf").display().to_string(),
                )
                .replace("@IMAP_PORT@", &imap.to_string())
                .replace("@POP3_PORT@", &pop3.to_string())
                .replace("@SIEVE_PORT@", &sieve.to_string())
                .replace("@SERVERNAME@", BEFORE)
        };
        fs::write(dir.path("cyrus.conf"), fill(CYRUS_CONF)).expect("cyrus.conf");
        fs::write(dir.path("imapd.conf"), fill(IMAPD_CONF)).expect("imapd.conf");
        fs::write(dir.path("start-probe.sh"), START_PROBE).expect("start probe");
        let sasldb = dir.path("sasldb2");
        for realm in [BEFORE, AFTER] {
            for (user, password) in [ADMIN, ALICE] {
                saslpasswd2(&sasldb, realm, user, password);
            }
        }
        // Everything belongs to cyrus, as `cyrus makedirs` leaves it.
        run(Command::new("chown").arg("-R").arg("cyrus:").arg(&dir.0));
        run(Command::new("chmod").arg("0640").arg(&sasldb));

        let (program, reference) = master_program();
        let ready = dir.path("master.ready").display().to_string();
        let extra: Vec<&str> = if reference {
            vec![]
        } else {
            vec!["-r", &ready, "-v"]
        };
        let mut master = spawn_master_program(&program, &dir, &extra);
        if !reference {
            master.wait_ready();
        }
        let mut cyrus = Cyrus {
            master,
            dir,
            imap,
            pop3,
            sieve,
            reference,
        };
        let answered = wait_until(WAIT, || {
            cyrus.master.exited().is_none() && Imap::connect(cyrus.imap).is_ok()
        });
        assert!(answered, "IMAP never answered\n{}", cyrus.diagnostics());
        cyrus
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    /// Where Cyrus 3.6.1 keeps a process's proc file: `<proc_path>/<pid>`.
    pub fn proc_file(&self, pid: i32) -> PathBuf {
        self.path("run/proc").join(pid.to_string())
    }

    /// Where Cyrus 3.6.1 writes a proc file before renaming it into place.
    pub fn proc_file_new(&self, pid: i32) -> PathBuf {
        self.path("run/proc").join(format!("{pid}.new"))
    }

    /// Where a Cyrus 3.6.1 service keeps its idle socket: `<configdirectory>/socket/idle.<pid>`
    /// (not beside imapd.conf's `idlesocket`, which is idled's own).
    pub fn idle_socket(&self, pid: i32) -> PathBuf {
        self.path("socket").join(format!("idle.{pid}"))
    }

    /// The one worker whose proc file says it serves `user` (Cyrus may update the file just
    /// after it answers, so wait for it).
    pub fn session_pid(&mut self, user: &str) -> i32 {
        let mut pids = vec![];
        let found = wait_until(WAIT, || {
            pids = self.proc_pids_of(user);
            pids.len() == 1
        });
        assert!(found, "{user}'s worker: {pids:?}\n{}", self.diagnostics());
        pids[0]
    }

    /// The pids whose proc file says they serve `user`.
    pub fn proc_pids_of(&self, user: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.path("run/proc"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            if text.split('\t').nth(2) == Some(user) {
                out.push(pid);
            }
        }
        out
    }

    /// The master's live children whose argv[0] is `name`.
    pub fn workers(&mut self, name: &str) -> Vec<i32> {
        self.master
            .children()
            .into_iter()
            .filter(|&pid| argv0_of(pid).as_deref() == Some(name))
            .collect()
    }

    /// Rewrites imapd.conf with another servername (atomically).
    pub fn set_servername(&self, name: &str) {
        let path = self.path("imapd.conf");
        let text = fs::read_to_string(&path).expect("read imapd.conf");
        let text = text.replace(
            &format!("servername: {BEFORE}"),
            &format!("servername: {name}"),
        );
        let tmp = self.path("imapd.conf.new");
        fs::write(&tmp, text).expect("write imapd.conf");
        fs::rename(&tmp, &path).expect("rename imapd.conf");
    }

    /// The admin creates alice's mailbox.
    pub fn create_alice(&self) {
        let mut admin = Imap::connect(self.imap).expect("admin connects");
        admin.login(ADMIN).expect("admin logs in");
        admin
            .ok(&format!("CREATE user.{}", ALICE.0))
            .expect("admin creates user.alice");
        admin.logout().expect("admin logs out");
    }

    /// Delivers one message to alice over LMTP on the unix socket.
    pub fn deliver_to_alice(&self) {
        let mut lmtp = Lines::unix(&self.path("socket/lmtp")).expect("connect to LMTP");
        let greeting = lmtp.line().expect("LMTP greeting");
        assert!(greeting.starts_with("220 "), "LMTP greeting: {greeting}");
        for (command, code) in [
            ("LHLO ringmaster.test".to_string(), "250"),
            ("MAIL FROM:<bob@example.org>".to_string(), "250"),
            (format!("RCPT TO:<{}>", ALICE.0), "250"),
            ("DATA".to_string(), "354"),
        ] {
            let reply = lmtp.reply(&command).expect("LMTP reply");
            assert!(reply.starts_with(code), "LMTP {command}: {reply}");
        }
        let message = format!(
            "From: bob@example.org\r\nTo: {}\r\nSubject: {SUBJECT}\r\n\r\nbody line\r\n.",
            ALICE.0
        );
        let reply = lmtp.reply(&message).expect("LMTP delivery");
        assert!(reply.starts_with("250"), "LMTP delivery: {reply}");
        let reply = lmtp.reply("QUIT").expect("LMTP QUIT");
        assert!(reply.starts_with("221"), "LMTP QUIT: {reply}");
    }

    /// Everything useful when a test fails: the master's log, process tree and dirs.
    pub fn diagnostics(&mut self) -> String {
        let kids: Vec<String> = self
            .master
            .children()
            .into_iter()
            .map(|pid| format!("{pid}:{}", argv0_of(pid).unwrap_or_default()))
            .collect();
        let list = |sub: &str| {
            let mut names: Vec<String> = fs::read_dir(self.path(sub))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.join(" ")
        };
        format!(
            "master {} children [{}]\nsocket/: {}\nrun/proc/: {}\nmaster log:\n{}",
            self.master.pid,
            kids.join(" "),
            list("socket"),
            list("run/proc"),
            self.master.log_text()
        )
    }
}

pub fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}: {status}");
}

/// `echo password | saslpasswd2 -p -c -f sasldb -u realm user`
pub fn saslpasswd2(sasldb: &Path, realm: &str, user: &str, password: &str) {
    let mut child = Command::new(SASLPASSWD2)
        .arg("-p")
        .arg("-c")
        .arg("-f")
        .arg(sasldb)
        .arg("-u")
        .arg(realm)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run saslpasswd2");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password to saslpasswd2");
    let ok = wait_until(WAIT, || child.try_wait().ok().flatten().is_some());
    if !ok {
        let _ = child.kill();
    }
    let status = child.wait().expect("saslpasswd2");
    assert!(
        ok && status.success(),
        "saslpasswd2 {user}@{realm}: {status}"
    );
}

/// A line-oriented client connection (CRLF), every read bounded by WAIT.
pub struct Lines {
    pub reader: BufReader<Box<dyn Read + Send>>,
    pub writer: Box<dyn Write + Send>,
}

impl Lines {
    pub fn tcp(port: u16) -> io::Result<Lines> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        Ok(Lines {
            writer: Box::new(stream.try_clone()?),
            reader: BufReader::new(Box::new(stream)),
        })
    }

    pub fn unix(path: &Path) -> io::Result<Lines> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        Ok(Lines {
            writer: Box::new(stream.try_clone()?),
            reader: BufReader::new(Box::new(stream)),
        })
    }

    /// The next line, without its line end; end of stream is an error.
    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    pub fn send(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(format!("{text}\r\n").as_bytes())?;
        self.writer.flush()
    }

    /// Sends a command and reads an SMTP-style reply (`250-` continues); the last line.
    pub fn reply(&mut self, text: &str) -> io::Result<String> {
        self.send(text)?;
        loop {
            let line = self.line()?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line);
            }
        }
    }
}

/// An IMAP client: tagged commands, untagged lines collected.
pub struct Imap {
    pub lines: Lines,
    pub greeting: String,
    pub tag: u32,
}

impl Imap {
    /// Connects and reads the greeting, which must be `* OK`.
    pub fn connect(port: u16) -> Result<Imap, String> {
        let mut lines = Lines::tcp(port).map_err(|e| format!("connect: {e}"))?;
        let greeting = lines.line().map_err(|e| format!("greeting: {e}"))?;
        if !greeting.starts_with("* OK") {
            return Err(format!("greeting: {greeting}"));
        }
        Ok(Imap {
            lines,
            greeting,
            tag: 0,
        })
    }

    /// Runs a command; every line of the answer, the tagged status last.
    pub fn command(&mut self, text: &str) -> Result<Vec<String>, String> {
        self.tag += 1;
        let tag = format!("rm{}", self.tag);
        self.lines
            .send(&format!("{tag} {text}"))
            .map_err(|e| format!("{text}: {e}"))?;
        let mut out = Vec::new();
        loop {
            let line = self.lines.line().map_err(|e| format!("{text}: {e}"))?;
            let done = line.starts_with(&format!("{tag} "));
            out.push(line);
            if done {
                return Ok(out);
            }
        }
    }

    /// Runs a command that must answer OK; every line of the answer.
    pub fn ok(&mut self, text: &str) -> Result<Vec<String>, String> {
        let lines = self.command(text)?;
        let status = lines.last().map(String::as_str).unwrap_or_default();
        if status.split_whitespace().nth(1) == Some("OK") {
            Ok(lines)
        } else {
            Err(format!("{text}: {lines:?}"))
        }
    }

    pub fn login(&mut self, (user, password): (&str, &str)) -> Result<(), String> {
        self.ok(&format!("LOGIN {user} \"{password}\"")).map(drop)
    }

    /// LOGOUT, which must say BYE and OK.
    pub fn logout(&mut self) -> Result<(), String> {
        let lines = self.ok("LOGOUT")?;
        if lines.iter().any(|l| l.starts_with("* BYE")) {
            Ok(())
        } else {
            Err(format!("LOGOUT without BYE: {lines:?}"))
        }
    }
}

/// Sets up an instance, or says why the test is skipped.
pub fn instance(tag: &str) -> Option<Cyrus> {
    cyrus_available().then(|| Cyrus::start(tag))
}
