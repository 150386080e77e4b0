//! Tests of spawning: descriptors, signal state, credentials, limits and exec failures of real children.

use super::*;
use crate::sys::testutil::{skip_unless, wait_for, TempDir};
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::WaitStatus;
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// A spec running `/bin/sh -c script sh out`, with a small fixed environment.
fn sh(script: &str, out: &Path) -> ExecSpec {
    ExecSpec {
        program: cstr("/bin/sh"),
        argv: vec![
            cstr("sh"),
            cstr("-c"),
            cstr(script),
            cstr("sh"),
            CString::new(out.as_os_str().as_bytes()).expect("no NUL"),
        ],
        env: vec![cstr("PATH=/usr/bin:/bin"), cstr("RM_TEST=yes")],
        status_fd: None,
        listen_fd: None,
        nofile_limit: None,
        credentials: None,
        parent_death_signal: false,
        cwd: None,
        nice: None,
        own_process_group: false,
    }
}

fn run(spec: &ExecSpec) -> WaitStatus {
    let pid = spawn(spec).expect("spawn");
    wait_for(pid, Duration::from_secs(10))
}

/// fd numbers listed by `ls /proc/$$/fd` (the shell's own table).
fn fd_numbers(listing: &str) -> Vec<i32> {
    let mut fds: Vec<i32> = listing
        .lines()
        .filter(|line| line.contains(" -> "))
        .filter_map(|line| {
            let name = line.split(" -> ").next()?.split_whitespace().last()?;
            name.parse().ok()
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// /dev/null, read-only, with or without CLOEXEC.
fn dev_null(cloexec: bool) -> nix::Result<OwnedFd> {
    let flags = if cloexec {
        OFlag::O_RDONLY | OFlag::O_CLOEXEC
    } else {
        OFlag::O_RDONLY
    };
    let fd = nix::fcntl::open("/dev/null", flags, nix::sys::stat::Mode::empty())?;
    // SAFETY: open just returned this descriptor; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn link_of(fd: &impl AsFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .expect("readlink")
        .to_string_lossy()
        .into_owned()
}

/// `exec >file` redirects the shell itself without saving fd 1 elsewhere (a plain `cmd >file`
/// makes dash park the old stdout on fd 10 while it runs). The status lines are read with
/// builtins before anything is forked: dash blocks every signal around its vfork, so a
/// `grep` of the shell's status would catch that transient mask.
const FD_SCRIPT: &str = r#"exec >"$1"
while read -r line; do case $line in Sig*|Uid*|Gid*|Groups*) echo "$line";; esac; done </proc/$$/status
echo "env=$RM_TEST"
ulimit -n
ls -l /proc/$$/fd"#;

#[test]
fn child_gets_exactly_fds_0_to_4_a_clean_signal_state_and_its_env() {
    let dir = TempDir::new("spawn-fds");
    let out = dir.path().join("out");
    let (status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // A descriptor without CLOEXEC must not leak into the child.
    let leaky = dev_null(false).expect("open");
    let mut spec = sh(FD_SCRIPT, &out);
    spec.status_fd = Some(status_w.as_raw_fd());
    spec.listen_fd = Some(listener.as_raw_fd());
    spec.nofile_limit = Some((200, 200));

    // The child must start with an empty mask even though this thread blocks signals.
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGUSR2);
    blocked.add(Signal::SIGHUP);
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old))
        .expect("sigmask");
    let status = run(&spec);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).expect("sigmask");
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");

    let report = std::fs::read_to_string(&out).expect("child output");
    assert_eq!(fd_numbers(&report), vec![0, 1, 2, 3, 4], "{report}");
    let line = |fd: i32| {
        report
            .lines()
            .find(|l| l.contains(&format!(" {fd} -> ")))
            .map(|l| l.split(" -> ").nth(1).unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    assert_eq!(line(3), link_of(&status_w), "{report}");
    assert_eq!(line(4), link_of(&listener), "{report}");
    assert!(report.contains("SigBlk:\t0000000000000000"), "{report}");
    // Rust ignores SIGPIPE in this process; the child must not inherit that.
    assert!(report.contains("SigIgn:\t0000000000000000"), "{report}");
    assert!(report.contains("env=yes"), "{report}");
    assert!(report.lines().any(|l| l == "200"), "{report}");
    drop((status_r, leaky));
}

#[test]
fn sources_already_on_4_and_3_are_swapped_into_place() {
    let dir = TempDir::new("spawn-swap");
    let out = dir.path().join("out");
    // In a single-threaded copy, so this test may own fds 3 and 4 of its process.
    let ok = crate::sys::testutil::in_forked_child(Duration::from_secs(10), || {
        let Ok((r, w)) = nix::unistd::pipe2(OFlag::O_CLOEXEC) else {
            return false;
        };
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return false;
        };
        // Keep high copies (the originals may themselves be 3 or 4), then put the pipe on 4
        // and the listener on 3, both CLOEXEC, as a master's own descriptors would be.
        let high = |fd: RawFd| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(20)).map(|fd| {
                // SAFETY: fcntl just returned this new descriptor; we are its only owner.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            })
        };
        let (Ok(w), Ok(listener)) = (high(w.as_raw_fd()), high(listener.as_raw_fd())) else {
            return false;
        };
        drop(r);
        // SAFETY: dup3 onto 3 and 4, which this forked copy is free to take over.
        let placed = unsafe {
            libc::dup3(w.as_raw_fd(), 4, libc::O_CLOEXEC) == 4
                && libc::dup3(listener.as_raw_fd(), 3, libc::O_CLOEXEC) == 3
        };
        let mut spec = sh(FD_SCRIPT, &out);
        spec.status_fd = Some(4);
        spec.listen_fd = Some(3);
        let Ok(pid) = spawn(&spec) else { return false };
        let exited = matches!(
            wait_for(pid, Duration::from_secs(10)),
            WaitStatus::Exited(_, 0)
        );
        let report = std::fs::read_to_string(&out).unwrap_or_default();
        let target = |fd: i32| {
            report
                .lines()
                .find(|l| l.contains(&format!(" {fd} -> ")))
                .and_then(|l| l.split(" -> ").nth(1))
                .map(str::to_owned)
        };
        placed
            && exited
            && fd_numbers(&report) == vec![0, 1, 2, 3, 4]
            && target(3) == Some(link_of(&w))
            && target(4) == Some(link_of(&listener))
    });
    assert!(ok);
}

#[test]
fn the_child_gets_sigterm_when_the_master_dies() {
    let dir = TempDir::new("spawn-pdeath");
    let pid_path = dir.path().join("pid");
    // A forked copy plays the master: it spawns a long sleep, notes its pid and exits.
    let pid_path2 = pid_path.clone();
    assert!(crate::sys::testutil::in_forked_child(
        Duration::from_secs(10),
        move || {
            let spec = ExecSpec {
                program: cstr("/bin/sleep"),
                argv: vec![cstr("sleep"), cstr("30")],
                env: vec![],
                status_fd: None,
                listen_fd: None,
                nofile_limit: None,
                credentials: None,
                parent_death_signal: true,
                cwd: None,
                nice: None,
                own_process_group: false,
            };
            match spawn(&spec) {
                Ok(pid) => std::fs::write(&pid_path2, pid.to_string()).is_ok(),
                Err(_) => false,
            }
        }
    ));
    let pid: i32 = std::fs::read_to_string(&pid_path)
        .expect("pid")
        .parse()
        .expect("number");
    // The orphan belongs to init (or a subreaper) now: watch /proc until it is dead.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let dead = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X')),
    };
    while !dead() {
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            panic!("child {pid} outlived its master");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn fds_3_and_4_are_closed_when_not_given() {
    let dir = TempDir::new("spawn-nofds");
    let out = dir.path().join("out");
    let status = run(&sh(FD_SCRIPT, &out));
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let report = std::fs::read_to_string(&out).expect("child output");
    assert_eq!(fd_numbers(&report), vec![0, 1, 2], "{report}");
}

/// `fd`'s FD_CLOEXEC flag, or None when it is not open.
fn cloexec(fd: RawFd) -> Option<bool> {
    // SAFETY: F_GETFD on a number; a closed one fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    (flags >= 0).then_some(flags & libc::FD_CLOEXEC != 0)
}

#[test]
fn a_child_of_a_crowded_table_copies_only_its_lowest_entries() {
    let dir = TempDir::new("spawn-crowded");
    let out = dir.path().join("out");
    // In a forked copy: its own descriptor limit, and no other thread forks meanwhile.
    let ok = crate::sys::testutil::in_forked_child(Duration::from_secs(20), || {
        // Slots first, as the master takes them, then the crowd above them: 900 descriptors
        // (under the usual soft limit of 1024), every tenth without CLOEXEC.
        let Some(kept) = reserve_descriptor_slots() else {
            return false;
        };
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return false;
        };
        let mut crowd: Vec<(OwnedFd, bool)> = Vec::new();
        for i in 0..900 {
            let cloexec = i % 10 != 0;
            let Ok(fd) = dev_null(cloexec) else {
                return false;
            };
            crowd.push((fd, cloexec));
        }
        let mut spec = sh(FD_SCRIPT, &out);
        spec.listen_fd = Some(listener.as_raw_fd());
        let Ok(pid) = spawn(&spec) else { return false };
        let exited = matches!(
            wait_for(pid, Duration::from_secs(10)),
            WaitStatus::Exited(_, 0)
        );
        let report = std::fs::read_to_string(&out).unwrap_or_default();
        // The master's own table is as it was: every descriptor open, its flag unchanged.
        let untouched = crowd
            .iter()
            .all(|(fd, flag)| cloexec(fd.as_raw_fd()) == Some(*flag));
        exited
            && kept <= 128
            && untouched
            && fd_numbers(&report) == vec![0, 1, 2, 4]
            && report.contains(&link_of(&listener))
    });
    assert!(ok, "see the conditions at the end of the forked body");
}

#[test]
fn without_slots_a_child_still_gets_exactly_its_descriptors() {
    // The path of a thread whose slots could not be had: the child copies the whole table.
    crate::sys::spawn::go_without_descriptor_slots();
    let dir = TempDir::new("spawn-noslots");
    let out = dir.path().join("out");
    let (_status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let leaky = dev_null(false).expect("open");
    let mut spec = sh(FD_SCRIPT, &out);
    spec.status_fd = Some(status_w.as_raw_fd());
    spec.listen_fd = Some(listener.as_raw_fd());
    let status = run(&spec);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let report = std::fs::read_to_string(&out).expect("child output");
    assert_eq!(fd_numbers(&report), vec![0, 1, 2, 3, 4], "{report}");
    assert!(report.contains(&link_of(&status_w)), "{report}");
    assert!(report.contains(&link_of(&listener)), "{report}");
    assert_eq!(
        cloexec(leaky.as_raw_fd()),
        Some(false),
        "the master's flag is kept"
    );
}

#[test]
fn a_listener_handed_to_a_child_closes_with_its_last_owner() {
    // The master's copy staged for the child must be gone once spawn returns: a listener the
    // master closes after its worker exited refuses connections at once. In a forked copy,
    // so that no other test's fork holds a copy of it meanwhile.
    let ok = crate::sys::testutil::in_forked_child(Duration::from_secs(20), || {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return false;
        };
        let Ok(addr) = listener.local_addr() else {
            return false;
        };
        let mut spec = sh("exit 0", Path::new("/dev/null"));
        spec.listen_fd = Some(listener.as_raw_fd());
        let Ok(pid) = spawn(&spec) else { return false };
        let exited = matches!(
            wait_for(pid, Duration::from_secs(10)),
            WaitStatus::Exited(_, 0)
        );
        drop(listener);
        let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| e.kind());
        exited && refused.err() == Some(std::io::ErrorKind::ConnectionRefused)
    });
    assert!(
        ok,
        "the listener outlived its last owner (or the child failed)"
    );
}

#[test]
fn a_child_may_get_a_process_group_of_its_own() {
    let dir = TempDir::new("spawn-pgrp");
    for own in [false, true] {
        let out = dir.path().join(format!("out-{own}"));
        // Field 5 of /proc/<pid>/stat is the process group (the name has no space here).
        let mut spec = sh(
            r#"read -r _ _ _ _ pgrp _ </proc/$$/stat; echo "$$ $pgrp" >"$1""#,
            &out,
        );
        spec.own_process_group = own;
        let status = run(&spec);
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
        let report = std::fs::read_to_string(&out).expect("child output");
        let ids: Vec<i32> = report
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let leader = ids.len() == 2 && ids[0] == ids[1];
        assert_eq!(leader, own, "{report}");
        if !own {
            assert_eq!(ids.get(1).copied(), Some(nix::unistd::getpgrp().as_raw()));
        }
    }
}

#[test]
fn exec_of_a_missing_program_is_enoent_in_the_parent() {
    let mut spec = sh("true", Path::new("/dev/null"));
    spec.program = cstr("/nonexistent/ringmaster-no-such-program");
    let err = spawn(&spec).expect_err("must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
}

#[test]
fn a_failing_setup_step_is_reported_with_its_name() {
    let mut spec = sh("true", Path::new("/dev/null"));
    spec.cwd = Some(cstr("/nonexistent/ringmaster-no-such-dir"));
    let err = spawn(&spec).expect_err("must fail");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("chdir"), "{err}");
}

#[test]
fn relative_program_and_empty_argv_are_refused() {
    let mut spec = sh("true", Path::new("/dev/null"));
    spec.program = cstr("sh");
    assert_eq!(
        spawn(&spec).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    let mut spec = sh("true", Path::new("/dev/null"));
    spec.argv.clear();
    assert_eq!(
        spawn(&spec).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
}

#[test]
fn credentials_are_applied_in_the_child() {
    if skip_unless(
        nix::unistd::geteuid().is_root(),
        "root (to change credentials)",
    ) {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
    if skip_unless(nobody.is_some(), "the user nobody") {
        return;
    }
    let Some(nobody) = nobody else { return };
    let dir = TempDir::new("spawn-creds");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let out = dir.path().join("out");
    let mut spec = sh(FD_SCRIPT, &out);
    spec.credentials = Some(Credentials {
        uid: nobody.uid.as_raw(),
        gid: nobody.gid.as_raw(),
        groups: vec![nobody.gid.as_raw(), 4242],
    });
    spec.parent_death_signal = true;
    spec.cwd = Some(cstr("/"));
    let status = run(&spec);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let report = std::fs::read_to_string(&out).expect("child output");
    let uid = nobody.uid.as_raw();
    let gid = nobody.gid.as_raw();
    assert!(
        report.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("Gid:\t{gid}\t{gid}\t{gid}\t{gid}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("Groups:\t{gid} 4242"))
            || report.contains(&format!("Groups:\t4242 {gid}")),
        "{report}"
    );
    assert!(report.contains("SigBlk:\t0000000000000000"), "{report}");
}

#[test]
fn an_unprivileged_identity_change_fails_in_the_parent() {
    if skip_unless(
        nix::unistd::geteuid().is_root(),
        "root (to drop to nobody first)",
    ) {
        return;
    }
    // As nobody, asking for root must fail with EPERM from setgroups.
    let ok = crate::sys::testutil::in_forked_child(Duration::from_secs(10), || {
        if nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_err()
            || nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).is_err()
        {
            return false;
        }
        let mut spec = sh("true", Path::new("/dev/null"));
        spec.credentials = Some(Credentials {
            uid: 0,
            gid: 0,
            groups: vec![0],
        });
        match spawn(&spec) {
            Err(e) => {
                e.kind() == io::ErrorKind::PermissionDenied && e.to_string().contains("setgroups")
            }
            Ok(_) => false,
        }
    });
    assert!(ok);
}
