//! Debian's real Cyrus IMAP 3.6.1 under ringmaster: a complete instance in a temp dir (imapd,
//! pop3d, lmtpd, timsieved, notifyd, ctl_cyrusdb as START and EVENT), real sessions over IMAP,
//! LMTP, POP3 and ManageSieve, a SIGHUP reload of imapd.conf under an open session with no
//! connection failing, and crashed workers reaped, replaced and cleaned up after.
//!
//! Needs root and Debian's cyrus-common, cyrus-imapd, cyrus-pop3d and sasl2-bin: skipped with a
//! reason without them, except under CI=true, where they must run. Everything listens on
//! 127.0.0.1 or on unix sockets in the temp dir. Set `RINGMASTER_INTEROP_MASTER` to another
//! master taking Cyrus's flags (e.g. `/usr/lib/cyrus/bin/master`) to run the same scenarios
//! under it, for comparison: Debian's 3.6.1 master is expected to fail the crash clean-up.

mod common;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const CYRUS_BIN: &str = "/usr/lib/cyrus/bin";
const SASLPASSWD2: &str = "/usr/sbin/saslpasswd2";
const CYRUS_CONF: &str = include_str!("data/cyrus/cyrus.conf");
const IMAPD_CONF: &str = include_str!("data/cyrus/imapd.conf");
const START_PROBE: &str = include_str!("data/cyrus/start-probe.sh");

/// The servername before and after the reload: Cyrus puts it in every greeting.
const BEFORE: &str = "before.example.org";
const AFTER: &str = "after.example.org";

/// Users, created in the SASL realm of both servernames (a plain login is looked up as
/// user@servername, so the reload would otherwise lock everyone out).
const ADMIN: (&str, &str) = ("admin", "admin-secret");
const ALICE: (&str, &str) = ("alice", "alice-secret");

const SUBJECT: &str = "ringmaster interop hello";

/// True when the tests can run here; prints why not (or panics under CI=true).
fn cyrus_available() -> bool {
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
fn master_program() -> (String, bool) {
    match std::env::var("RINGMASTER_INTEROP_MASTER") {
        Ok(p) if !p.is_empty() && p != MASTER => (p, true),
        _ => (MASTER.to_string(), false),
    }
}

/// A complete Cyrus instance in a temp dir, run by the master under test.
struct Cyrus {
    // Declared first so that it is dropped (stopped) before the directory is removed.
    master: Master,
    dir: TestDir,
    imap: u16,
    pop3: u16,
    sieve: u16,
    /// Running a reference master (Cyrus's own), not ringmaster.
    reference: bool,
}

impl Cyrus {
    /// Builds the instance and starts the master; waits until IMAP answers.
    fn start(tag: &str) -> Cyrus {
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    /// Where Cyrus 3.6.1 keeps a process's proc file: `<proc_path>/<pid>`.
    fn proc_file(&self, pid: i32) -> PathBuf {
        self.path("run/proc").join(pid.to_string())
    }

    /// Where Cyrus 3.6.1 writes a proc file before renaming it into place.
    fn proc_file_new(&self, pid: i32) -> PathBuf {
        self.path("run/proc").join(format!("{pid}.new"))
    }

    /// Where a Cyrus 3.6.1 service keeps its idle socket: `<configdirectory>/socket/idle.<pid>`
    /// (not beside imapd.conf's `idlesocket`, which is idled's own).
    fn idle_socket(&self, pid: i32) -> PathBuf {
        self.path("socket").join(format!("idle.{pid}"))
    }

    /// The one worker whose proc file says it serves `user` (Cyrus may update the file just
    /// after it answers, so wait for it).
    fn session_pid(&mut self, user: &str) -> i32 {
        let mut pids = vec![];
        let found = wait_until(WAIT, || {
            pids = self.proc_pids_of(user);
            pids.len() == 1
        });
        assert!(found, "{user}'s worker: {pids:?}\n{}", self.diagnostics());
        pids[0]
    }

    /// The pids whose proc file says they serve `user`.
    fn proc_pids_of(&self, user: &str) -> Vec<i32> {
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
    fn workers(&mut self, name: &str) -> Vec<i32> {
        self.master
            .children()
            .into_iter()
            .filter(|&pid| argv0_of(pid).as_deref() == Some(name))
            .collect()
    }

    /// Rewrites imapd.conf with another servername (atomically).
    fn set_servername(&self, name: &str) {
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
    fn create_alice(&self) {
        let mut admin = Imap::connect(self.imap).expect("admin connects");
        admin.login(ADMIN).expect("admin logs in");
        admin
            .ok(&format!("CREATE user.{}", ALICE.0))
            .expect("admin creates user.alice");
        admin.logout().expect("admin logs out");
    }

    /// Delivers one message to alice over LMTP on the unix socket.
    fn deliver_to_alice(&self) {
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
    fn diagnostics(&mut self) -> String {
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

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}: {status}");
}

/// `echo password | saslpasswd2 -p -c -f sasldb -u realm user`
fn saslpasswd2(sasldb: &Path, realm: &str, user: &str, password: &str) {
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
struct Lines {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
}

impl Lines {
    fn tcp(port: u16) -> io::Result<Lines> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        Ok(Lines {
            writer: Box::new(stream.try_clone()?),
            reader: BufReader::new(Box::new(stream)),
        })
    }

    fn unix(path: &Path) -> io::Result<Lines> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        Ok(Lines {
            writer: Box::new(stream.try_clone()?),
            reader: BufReader::new(Box::new(stream)),
        })
    }

    /// The next line, without its line end; end of stream is an error.
    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn send(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(format!("{text}\r\n").as_bytes())?;
        self.writer.flush()
    }

    /// Sends a command and reads an SMTP-style reply (`250-` continues); the last line.
    fn reply(&mut self, text: &str) -> io::Result<String> {
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
struct Imap {
    lines: Lines,
    greeting: String,
    tag: u32,
}

impl Imap {
    /// Connects and reads the greeting, which must be `* OK`.
    fn connect(port: u16) -> Result<Imap, String> {
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
    fn command(&mut self, text: &str) -> Result<Vec<String>, String> {
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
    fn ok(&mut self, text: &str) -> Result<Vec<String>, String> {
        let lines = self.command(text)?;
        let status = lines.last().map(String::as_str).unwrap_or_default();
        if status.split_whitespace().nth(1) == Some("OK") {
            Ok(lines)
        } else {
            Err(format!("{text}: {lines:?}"))
        }
    }

    fn login(&mut self, (user, password): (&str, &str)) -> Result<(), String> {
        self.ok(&format!("LOGIN {user} \"{password}\"")).map(drop)
    }

    /// LOGOUT, which must say BYE and OK.
    fn logout(&mut self) -> Result<(), String> {
        let lines = self.ok("LOGOUT")?;
        if lines.iter().any(|l| l.starts_with("* BYE")) {
            Ok(())
        } else {
            Err(format!("LOGOUT without BYE: {lines:?}"))
        }
    }
}

/// Sets up an instance, or says why the test is skipped.
fn instance(tag: &str) -> Option<Cyrus> {
    cyrus_available().then(|| Cyrus::start(tag))
}

#[test]
fn debian_cyrus_serves_imap_lmtp_pop3_and_sieve() {
    let Some(mut cyrus) = instance("cyrus-serve") else {
        return;
    };

    // START ran, to the end, before any service listened.
    let probe = read_to_string(&cyrus.path("start-probe.out"));
    assert_eq!(probe.trim(), "before-services", "{}", cyrus.diagnostics());
    // The checkpoint EVENT ran once at start-up: ctl_cyrusdb -c archives into db.backup1.
    assert!(
        wait_until(WAIT, || cyrus.path("db.backup1").is_dir()),
        "the checkpoint event did not run at start-up\n{}",
        cyrus.diagnostics()
    );

    // Every worker runs as cyrus; notifyd waits on its unix datagram socket.
    let cyrus_uid = nix::unistd::User::from_name("cyrus")
        .ok()
        .flatten()
        .expect("user cyrus")
        .uid
        .as_raw();
    let mut notifyd = vec![];
    assert!(
        wait_until(WAIT, || {
            notifyd = cyrus.workers("notifyd");
            notifyd.len() == 1
        }),
        "notifyd not running\n{}",
        cyrus.diagnostics()
    );
    let imapd = cyrus.workers("imapd");
    assert!(
        !imapd.is_empty(),
        "no preforked imapd\n{}",
        cyrus.diagnostics()
    );
    for pid in imapd.iter().chain(&notifyd) {
        assert_eq!(uid_of(*pid), Some(cyrus_uid), "worker {pid} is not cyrus");
    }
    assert!(cyrus.path("socket/notify").exists());

    // The greeting names the servername of imapd.conf.
    let first = Imap::connect(cyrus.imap).expect("connect");
    assert!(first.greeting.contains(BEFORE), "{}", first.greeting);
    drop(first);

    cyrus.create_alice();
    cyrus.deliver_to_alice();

    // alice reads it over IMAP...
    let mut imap = Imap::connect(cyrus.imap).expect("alice connects");
    imap.login(ALICE).expect("alice logs in");
    let select = imap.ok("SELECT INBOX").expect("SELECT INBOX");
    assert!(select.iter().any(|l| l == "* 1 EXISTS"), "{select:?}");
    let fetch = imap
        .ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .expect("FETCH");
    assert!(
        fetch.iter().any(|l| l == &format!("Subject: {SUBJECT}")),
        "{fetch:?}"
    );
    imap.logout().expect("alice logs out");

    // ...and over POP3.
    let mut pop = Lines::tcp(cyrus.pop3).expect("connect to POP3");
    let greeting = pop.line().expect("POP3 greeting");
    assert!(
        greeting.starts_with("+OK") && greeting.contains(BEFORE),
        "{greeting}"
    );
    for command in [format!("USER {}", ALICE.0), format!("PASS {}", ALICE.1)] {
        pop.send(&command).expect("send");
        let reply = pop.line().expect("POP3 reply");
        assert!(reply.starts_with("+OK"), "POP3 {command}: {reply}");
    }
    pop.send("STAT").expect("send");
    let stat = pop.line().expect("STAT");
    assert!(stat.starts_with("+OK 1 "), "STAT: {stat}");
    pop.send("RETR 1").expect("send");
    let mut message = vec![pop.line().expect("RETR")];
    assert!(message[0].starts_with("+OK"), "RETR: {message:?}");
    loop {
        let line = pop.line().expect("message line");
        if line == "." {
            break;
        }
        message.push(line);
    }
    assert!(
        message.contains(&format!("Subject: {SUBJECT}")) && message.contains(&"body line".into()),
        "{message:?}"
    );
    pop.send("QUIT").expect("send");
    assert!(pop.line().expect("QUIT").starts_with("+OK"));

    // timsieved answers with its capabilities, then OK.
    let mut sieve = Lines::tcp(cyrus.sieve).expect("connect to sieve");
    let banner = sieve.line().expect("sieve banner");
    assert!(banner.starts_with("\"IMPLEMENTATION\""), "{banner}");
    let mut last = banner;
    for _ in 0..50 {
        if last.starts_with("OK") {
            break;
        }
        last = sieve.line().expect("sieve capability");
    }
    assert!(last.starts_with("OK"), "sieve: {last}");
    drop(sieve);

    assert!(
        cyrus.master.stop().is_some(),
        "master did not stop\n{}",
        cyrus.master.log_text()
    );
}

/// What the connection loop saw across the reload.
#[derive(Default, Debug)]
struct LoopReport {
    ok_before: u32,
    ok_after: u32,
    failures: Vec<String>,
}

/// Connects again and again until `stop`: greeting, LOGOUT; counts what it saw.
fn connection_loop(port: u16, stop: Arc<AtomicBool>) -> LoopReport {
    let mut report = LoopReport::default();
    while !stop.load(Ordering::SeqCst) {
        let result = Imap::connect(port).and_then(|mut imap| {
            imap.logout()?;
            Ok(imap.greeting)
        });
        match result {
            Ok(greeting) if greeting.contains(AFTER) => report.ok_after += 1,
            Ok(_) => report.ok_before += 1,
            Err(e) => report.failures.push(e),
        }
        thread::sleep(Duration::from_millis(5));
    }
    report
}

#[test]
fn sighup_reload_reaches_new_sessions_and_drops_nothing() {
    let Some(mut cyrus) = instance("cyrus-reload") else {
        return;
    };
    cyrus.create_alice();

    // An open, logged-in, idle session on the old configuration.
    let mut old = Imap::connect(cyrus.imap).expect("connect");
    assert!(old.greeting.contains(BEFORE), "{}", old.greeting);
    old.login(ALICE).expect("login");
    old.ok("SELECT INBOX").expect("SELECT");
    let old_pid = cyrus.session_pid(ALICE.0);

    // Clients connect in loops, three at a time, all through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let loopers: Vec<_> = (0..3)
        .map(|_| {
            let (port, stop) = (cyrus.imap, stop.clone());
            thread::spawn(move || connection_loop(port, stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(300));

    cyrus.set_servername(AFTER);
    cyrus.master.signal(Signal::SIGHUP);

    // New sessions show the new servername, soon...
    let mut last = String::new();
    let reloaded = wait_until(WAIT, || {
        last = Imap::connect(cyrus.imap)
            .map(|i| i.greeting)
            .unwrap_or_else(|e| e);
        last.contains(AFTER)
    });
    assert!(
        reloaded,
        "never saw {AFTER}: {last}\n{}",
        cyrus.diagnostics()
    );
    // ...and from then on, every one of them, and they work.
    for _ in 0..10 {
        let mut fresh = Imap::connect(cyrus.imap).expect("connect after reload");
        assert!(fresh.greeting.contains(AFTER), "{}", fresh.greeting);
        fresh.login(ALICE).expect("login after reload");
        fresh.logout().expect("logout after reload");
    }

    // The old session kept its worker and still works, until LOGOUT.
    old.ok("NOOP")
        .expect("NOOP on the old session after the reload");
    old.ok("SELECT INBOX")
        .expect("SELECT on the old session after the reload");
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut report = LoopReport::default();
    for looper in loopers {
        let one = looper.join().expect("connection loop");
        report.ok_before += one.ok_before;
        report.ok_after += one.ok_after;
        report.failures.extend(one.failures);
    }

    old.logout().expect("LOGOUT on the old session");
    drop(old);
    // Its worker, told to recycle, exits once its client has gone.
    assert!(
        wait_until(WAIT, || state_of(old_pid).is_none()),
        "old imapd {old_pid} still alive after its client left\n{}",
        cyrus.diagnostics()
    );

    eprintln!("connection loop across the reload: {report:?}");
    assert!(
        report.failures.is_empty(),
        "{} connections failed across the reload: {:?}\n{}",
        report.failures.len(),
        report.failures,
        cyrus.diagnostics()
    );
    assert!(
        report.ok_before > 0 && report.ok_after > 0,
        "the loop did not run on both sides of the reload: {report:?}"
    );
    cyrus.master.stop();
}

#[test]
fn crashed_imapd_is_reaped_replaced_and_cleaned_up() {
    let Some(mut cyrus) = instance("cyrus-crash") else {
        return;
    };
    cyrus.create_alice();

    // A logged-in worker...
    let mut session = Imap::connect(cyrus.imap).expect("connect");
    session.login(ALICE).expect("login");
    session.ok("SELECT INBOX").expect("SELECT");
    let busy = cyrus.session_pid(ALICE.0);
    // ...and an idle one (prefork=1 replaces the one that took the session).
    let mut idle = 0;
    let found = wait_until(WAIT, || {
        idle = cyrus
            .workers("imapd")
            .into_iter()
            .find(|&p| p != busy && cyrus.idle_socket(p).exists())
            .unwrap_or(0);
        idle != 0
    });
    assert!(found, "no idle imapd\n{}", cyrus.diagnostics());
    assert!(cyrus.proc_file(busy).exists());
    assert!(cyrus.idle_socket(busy).exists());

    kill(busy, Signal::SIGSEGV);
    kill(idle, Signal::SIGSEGV);

    // Both are reaped (no zombie left)...
    for pid in [busy, idle] {
        assert!(
            wait_until(WAIT, || state_of(pid).is_none()),
            "crashed imapd {pid} not reaped\n{}",
            cyrus.diagnostics()
        );
    }
    // ...their per-process files are removed...
    for path in [
        cyrus.proc_file(busy),
        cyrus.idle_socket(busy),
        cyrus.idle_socket(idle),
    ] {
        assert!(
            wait_until(WAIT, || !path.exists()),
            "{} left behind by a crashed imapd\n{}",
            path.display(),
            cyrus.diagnostics()
        );
    }
    // ...and the crashes are logged (Cyrus's own master logs to syslog instead).
    if !cyrus.reference {
        for pid in [busy, idle] {
            assert!(
                cyrus.master.wait_log(&format!("worker {pid}")),
                "crash of {pid} not logged\n{}",
                cyrus.master.log_text()
            );
        }
    }

    // The client of the crashed worker sees its connection end.
    assert!(session.command("NOOP").is_err());
    // A worker is ready again, and new sessions work.
    assert!(
        wait_until(WAIT, || cyrus
            .workers("imapd")
            .iter()
            .any(|&p| p != busy && p != idle)),
        "crashed imapd not replaced\n{}",
        cyrus.diagnostics()
    );
    let mut fresh = Imap::connect(cyrus.imap).expect("connect after the crash");
    fresh.login(ALICE).expect("login after the crash");
    fresh.ok("SELECT INBOX").expect("SELECT after the crash");
    fresh.logout().expect("logout after the crash");
    cyrus.master.stop();
}

#[test]
fn crash_cleanup_removes_a_half_written_proc_file() {
    let Some(mut cyrus) = instance("cyrus-procnew") else {
        return;
    };
    cyrus.create_alice();
    let mut session = Imap::connect(cyrus.imap).expect("connect");
    session.login(ALICE).expect("login");
    let busy = cyrus.session_pid(ALICE.0);
    // Cyrus 3.6.1 (imap/proc.c) writes `<proc_path>/<pid>.new`, then renames it to
    // `<proc_path>/<pid>`: a crash between the two leaves the .new file. Stand one in.
    let new = cyrus.proc_file_new(busy);
    fs::write(&new, "imap\tlocalhost [127.0.0.1]\talice\t\t\n").expect("write .new");
    kill(busy, Signal::SIGSEGV);
    assert!(
        wait_until(WAIT, || state_of(busy).is_none()),
        "crashed imapd {busy} not reaped\n{}",
        cyrus.diagnostics()
    );
    for path in [cyrus.proc_file(busy), new] {
        assert!(
            wait_until(WAIT, || !path.exists()),
            "{} left behind by a crashed imapd\n{}",
            path.display(),
            cyrus.diagnostics()
        );
    }
    drop(session);
    cyrus.master.stop();
}
