//! Tests of binding, pausing and identifying listening sockets, on loopback.

use super::*;
use crate::sys::testutil::TempDir;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn inet(host: &str, port: u16) -> Listen {
    Listen::Inet {
        host: Some(host.to_owned()),
        port,
    }
}

fn accept_one(fd: &OwnedFd) -> io::Result<TcpStream> {
    let sock = SockRef::from(fd);
    let (conn, _) = sock.accept()?;
    Ok(TcpStream::from(conn))
}

fn has_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A port that was free a moment ago (pause needs a configured, non-zero port).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe port")
}

#[test]
fn tcp4_literal_binds_one_blocking_cloexec_listener() {
    let got = bind_listeners(&inet("127.0.0.1", 0), Proto::Tcp4, 16).expect("bind");
    assert_eq!(got.len(), 1);
    let l = got.first().expect("one");
    assert_eq!(l.family_index, 0);
    assert!(l.local.starts_with("127.0.0.1:"), "{}", l.local);
    let fd = l.fd.as_raw_fd();
    let fdflags = fcntl(fd, FcntlArg::F_GETFD).expect("getfd");
    assert!(fdflags & libc::FD_CLOEXEC != 0);
    let flflags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).expect("getfl"));
    assert!(!flflags.contains(OFlag::O_NONBLOCK));
    assert!(SockRef::from(&l.fd).reuse_address().expect("opt"));

    let mut client = TcpStream::connect(&l.local).expect("connect");
    let mut server = accept_one(&l.fd).expect("accept");
    client.write_all(b"hi").expect("write");
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"hi");
}

#[test]
fn tcp6_literal_is_v6_only() {
    if crate::sys::testutil::skip_unless(has_ipv6_loopback(), "an IPv6 loopback (::1)") {
        return;
    }
    let got = bind_listeners(&inet("::1", 0), Proto::Tcp, 16).expect("bind");
    assert_eq!(got.len(), 1);
    let l = got.first().expect("one");
    assert!(l.local.starts_with("[::1]:"), "{}", l.local);
    assert!(SockRef::from(&l.fd).only_v6().expect("opt"));
    TcpStream::connect(&l.local).expect("connect");
}

#[test]
fn a_family_the_host_name_lacks_is_refused_clearly() {
    assert_eq!(
        bind_listeners(&inet("127.0.0.1", 0), Proto::Tcp6, 16)
            .map(|_| ())
            .map_err(|e| e.kind()),
        Err(io::ErrorKind::NotFound)
    );
}

#[test]
fn wildcard_plans_v4_then_v6_as_cyrus_ids_0_and_1() {
    let all = |proto| {
        planned_identities(
            &Listen::Inet {
                host: None,
                port: 143,
            },
            proto,
        )
        .expect("plan")
        .into_iter()
        .map(|i| (i.kind, i.address.to_string()))
        .collect::<Vec<_>>()
    };
    assert_eq!(
        all(Proto::Tcp),
        vec![
            (SocketKind::Stream, "0.0.0.0:143".to_owned()),
            (SocketKind::Stream, "[::]:143".to_owned())
        ]
    );
    assert_eq!(
        all(Proto::Udp4),
        vec![(SocketKind::Datagram, "0.0.0.0:143".to_owned())]
    );
    assert_eq!(
        all(Proto::Tcp6),
        vec![(SocketKind::Stream, "[::]:143".to_owned())]
    );
}

#[test]
fn a_host_name_binds_one_address_per_family() {
    let got = bind_listeners(&inet("localhost", 0), Proto::Tcp, 16).expect("bind");
    assert!(!got.is_empty() && got.len() <= 2);
    for (i, l) in got.iter().enumerate() {
        assert_eq!(usize::from(l.family_index), i);
        TcpStream::connect(&l.local).expect("connect");
    }
}

#[test]
fn a_second_bind_of_the_same_address_fails_with_addrinuse() {
    let port = free_port();
    let _first = bind_listeners(&inet("127.0.0.1", port), Proto::Tcp4, 16).expect("bind");
    let err = bind_listeners(&inet("127.0.0.1", port), Proto::Tcp4, 16).expect_err("second bind");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
}

#[test]
fn udp_is_bound_not_listening() {
    let got = bind_listeners(&inet("127.0.0.1", 0), Proto::Udp4, 16).expect("bind");
    let l = got.first().expect("one");
    let id = socket_identity(l.fd.as_fd()).expect("identity");
    assert_eq!(id.kind, SocketKind::Datagram);
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    client.send_to(b"ping", &l.local).expect("send");
    let sock = SockRef::from(&l.fd);
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [std::mem::MaybeUninit::new(0u8); 8];
    let (n, _) = sock.recv_from(&mut buf).expect("recv");
    assert_eq!(n, 4);
    assert!(!pause_listener(l.fd.as_fd()).expect("pause"));
}

#[test]
fn identity_of_a_bound_socket_matches_its_plan() {
    let port = free_port();
    let listen = inet("127.0.0.1", port);
    let got = bind_listeners(&listen, Proto::Tcp4, 16).expect("bind");
    let fd = &got.first().expect("one").fd;
    assert_eq!(
        vec![socket_identity(fd.as_fd()).expect("identity")],
        planned_identities(&listen, Proto::Tcp4).expect("plan")
    );
    assert_ne!(
        vec![socket_identity(fd.as_fd()).expect("identity")],
        planned_identities(&listen, Proto::Udp4).expect("plan")
    );
}

#[test]
fn pause_refuses_connections_and_resume_accepts_again_on_the_same_port() {
    let port = free_port();
    let got = bind_listeners(&inet("127.0.0.1", port), Proto::Tcp4, 16).expect("bind");
    let l = got.first().expect("one");
    let before = socket_identity(l.fd.as_fd()).expect("identity");

    TcpStream::connect(("127.0.0.1", port)).expect("connect while listening");
    accept_one(&l.fd).expect("accept");
    // One left waiting in the queue: pausing resets it.
    let mut queued = TcpStream::connect(("127.0.0.1", port)).expect("connect");

    assert!(pause_listener(l.fd.as_fd()).expect("pause"));
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("refused while paused");
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    queued
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    assert!(
        matches!(queued.read(&mut buf), Ok(0) | Err(_)),
        "a queued connection must not survive the pause"
    );
    // The port stays bound: a socket without SO_REUSEADDR cannot take it meanwhile.
    let intruder = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let taken = intruder.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], port))));
    assert_eq!(taken.map_err(|e| e.kind()), Err(io::ErrorKind::AddrInUse));
    drop(intruder);

    resume_listener(l.fd.as_fd(), 16).expect("resume");
    assert_eq!(socket_identity(l.fd.as_fd()).expect("identity"), before);
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect after resume");
    let mut server = accept_one(&l.fd).expect("accept after resume");
    client.write_all(b"k").expect("write");
    server.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"k");
}

#[test]
fn pausing_wakes_a_blocked_accept_with_einval() {
    // A thread stands in for a worker blocked in accept(4) (threads are fine in tests).
    let port = free_port();
    let got = bind_listeners(&inet("127.0.0.1", port), Proto::Tcp4, 16).expect("bind");
    let l = got.first().expect("one");
    let worker_fd = l.fd.try_clone().expect("dup");
    // Bounded: accept honours SO_RCVTIMEO, so a missing wake-up fails instead of hanging.
    SockRef::from(&worker_fd)
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tid_tx.send(nix::unistd::gettid().as_raw());
        accept_one(&worker_fd).map(|_| ())
    });
    // Wait (bounded) until the thread sleeps in the kernel, i.e. is blocked in accept.
    let tid = tid_rx.recv().expect("tid");
    let asleep = || {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .ok()
            .and_then(|st| {
                st.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('S'))
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !asleep() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(pause_listener(l.fd.as_fd()).expect("pause"));
    let result = worker.join().expect("join");
    assert_eq!(
        result.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EINVAL))
    );
}

#[test]
fn unix_socket_replaces_a_stale_socket_and_is_world_connectable() {
    let dir = TempDir::new("net-unix");
    let path = dir.path().join("lmtp.sock");
    let listen = Listen::Unix(path.clone());
    let first = bind_listeners(&listen, Proto::Tcp, 16).expect("bind");
    drop(first); // leaves a stale socket node behind
    assert!(path.exists());
    let got = bind_listeners(&listen, Proto::Tcp, 16).expect("rebind over stale");
    let l = got.first().expect("one");
    assert_eq!(l.local, path.display().to_string());
    let meta = std::fs::symlink_metadata(&path).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o777);
    assert_eq!(
        socket_identity(l.fd.as_fd()).expect("identity"),
        SocketIdentity {
            kind: SocketKind::Stream,
            address: SocketAddress::Unix(path.clone())
        }
    );
    UnixStream::connect(&path).expect("connect");
    assert!(!pause_listener(l.fd.as_fd()).expect("pause"));
}

#[test]
fn unix_socket_never_unlinks_a_regular_file() {
    let dir = TempDir::new("net-unix-file");
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"precious").expect("write");
    let err = bind_listeners(&Listen::Unix(path.clone()), Proto::Tcp, 16).expect_err("must refuse");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
}
