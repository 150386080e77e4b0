//! Listening sockets: binding a service's `listen=`/`proto=` the way Cyrus does (one socket per
//! address family), pausing and resuming a TCP listener without giving up its port, and socket
//! identities (kind and bound address). The runtime records the [`socket_identity`] of every
//! socket it binds; on reload, [`bind_listeners_reusing`] asks it, address by address, for an
//! open socket with the same identity (kept instead of bound again) and whether a new socket
//! overlaps one already open (then both get SO_REUSEPORT); the core's `handover` answers.
//!
//! Every socket is close-on-exec and blocking: the open file description is shared with the
//! workers, which expect a blocking `accept` on fd 4.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::sys::stat::{umask, Mode};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use ringmaster_core::{Listen, Proto};

/// One bound (and, for streams, listening) socket of a service.
#[derive(Debug)]
pub struct BoundListener {
    /// The socket: blocking, close-on-exec.
    pub fd: OwnedFd,
    /// 0 for the first socket of the entry, 1 for a second (the other address family): the
    /// worker's `CYRUS_ID`.
    pub family_index: u8,
    /// The bound address, printable: `127.0.0.1:143`, `[::]:143` or a unix path.
    pub local: String,
}

// Identities are plain data, and what they mean for a reload is decided in the core.
pub use ringmaster_core::handover::{SocketAddress, SocketIdentity, SocketKind};

/// Bind the sockets of one service entry, in CYRUS_ID order.
///
/// - `Listen::Inet` without a host: `tcp`/`udp` bind `0.0.0.0` then `[::]` (IPV6_V6ONLY, so
///   the two do not clash); `tcp4`/`udp4` only the first, `tcp6`/`udp6` only the second.
/// - With a host (name or literal): resolved with getaddrinfo; the first address of each
///   allowed family is bound, in resolution order.
/// - A family the host lacks (EAFNOSUPPORT, EPROTONOSUPPORT, or EADDRNOTAVAIL for IPv6 when
///   the address was not written as a literal) is skipped; if nothing is left, that error is
///   returned. Any other failure (EADDRINUSE, EACCES, ...) fails the whole entry and closes
///   what was bound: unlike Cyrus, a half-bound entry is never reported as a success.
/// - TCP sockets get SO_REUSEADDR and `listen(backlog)`; UDP sockets are only bound.
/// - `Listen::Unix(path)`: a stale socket at `path` is removed first (anything else there is
///   an error, never unlinked); the node is created world-connectable (mode 0777, as Cyrus,
///   through a zero umask around `bind`: the master is single-threaded, so the umask change
///   affects nothing else), owned by the master (as Cyrus's); a stream socket unless `proto`
///   is a udp one.
///
/// `reuse(identity)` is asked first for each address: a socket it returns (one the master
/// already has open for exactly that address) is used instead of binding; `share_port`
/// says whether a new inet socket must be bound with SO_REUSEPORT because another socket of
/// the master overlaps it (a wildcard and a specific address on one port).
pub fn bind_listeners_reusing(
    listen: &Listen,
    proto: Proto,
    backlog: i32,
    mut reuse: impl FnMut(&SocketIdentity) -> Option<Reused>,
    mut share_port: impl FnMut(&SocketIdentity) -> bool,
) -> io::Result<Vec<Planned>> {
    let literal = match listen {
        Listen::Inet { host, .. } => host.as_deref().is_some_and(|h| h.parse::<IpAddr>().is_ok()),
        Listen::Unix(_) => true,
    };
    let mut out = Vec::new();
    let mut skipped = None;
    for identity in planned_identities(listen, proto)? {
        let family_index = u8::try_from(out.len()).unwrap_or(u8::MAX);
        if let Some(reused) = reuse(&identity) {
            out.push(Planned::Reused {
                reused,
                family_index,
            });
            continue;
        }
        let bound = match &identity.address {
            SocketAddress::Unix(path) => bind_unix(path, !proto.is_udp(), backlog),
            SocketAddress::Inet(addr) => {
                let shared = share_port(&identity);
                match bind_inet(*addr, proto, backlog, shared) {
                    Err(e) if family_missing(&e, *addr, literal) => {
                        skipped.get_or_insert(e);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 => {
                        Err(io::Error::new(
                            e.kind(),
                            format!(
                                "{addr}: {e}: a port below 1024 needs a master started as root \
                                 or with CAP_NET_BIND_SERVICE"
                            ),
                        ))
                    }
                    Err(e) => Err(io::Error::new(e.kind(), format!("{addr}: {e}"))),
                    Ok(fd) => Ok(fd),
                }
            }
        };
        let fd = bound?;
        let local = match &identity.address {
            SocketAddress::Unix(path) => path.display().to_string(),
            SocketAddress::Inet(addr) => SockRef::from(&fd)
                .local_addr()?
                .as_socket()
                .map_or_else(|| addr.to_string(), |a| a.to_string()),
        };
        out.push(Planned::Bound(BoundListener {
            fd,
            family_index,
            local,
        }));
    }
    if out.is_empty() {
        return Err(skipped
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to bind")));
    }
    Ok(out)
}

/// A socket the master already has, chosen by the caller of [`bind_listeners_reusing`].
pub type Reused = usize;

/// One address of an entry: bound now, or an open socket reused.
#[derive(Debug)]
pub enum Planned {
    Bound(BoundListener),
    Reused { reused: Reused, family_index: u8 },
}

/// [`bind_listeners_reusing`] with nothing to reuse.
pub fn bind_listeners(
    listen: &Listen,
    proto: Proto,
    backlog: i32,
) -> io::Result<Vec<BoundListener>> {
    Ok(
        bind_listeners_reusing(listen, proto, backlog, |_| None, |_| false)?
            .into_iter()
            .filter_map(|p| match p {
                Planned::Bound(b) => Some(b),
                Planned::Reused { .. } => None,
            })
            .collect(),
    )
}

/// Let another socket of the master bind an address overlapping this one's (see
/// `handover::overlaps`). Only sockets of the same (root) user can then join the port.
pub fn allow_port_sharing(fd: BorrowedFd<'_>) -> io::Result<()> {
    SockRef::from(&fd).set_reuse_port(true)
}

/// The identities [`bind_listeners`] would produce for this entry, resolving names but binding
/// nothing (the port is the configured one, so port 0 never matches a bound socket).
pub fn planned_identities(listen: &Listen, proto: Proto) -> io::Result<Vec<SocketIdentity>> {
    let kind = if proto.is_udp() {
        SocketKind::Datagram
    } else {
        SocketKind::Stream
    };
    match listen {
        Listen::Unix(path) => Ok(vec![SocketIdentity {
            kind,
            address: SocketAddress::Unix(path.clone()),
        }]),
        Listen::Inet { host, port } => Ok(inet_targets(host.as_deref(), *port, proto)?
            .into_iter()
            .map(|addr| SocketIdentity {
                kind,
                address: SocketAddress::Inet(addr),
            })
            .collect()),
    }
}

/// The kind (SO_TYPE) and bound address (getsockname) of a socket.
pub fn socket_identity(fd: BorrowedFd<'_>) -> io::Result<SocketIdentity> {
    let sock = SockRef::from(&fd);
    let kind = match sock.r#type()? {
        Type::STREAM => SocketKind::Stream,
        Type::DGRAM => SocketKind::Datagram,
        other => SocketKind::Other(other.into()),
    };
    let local = sock.local_addr()?;
    let address = if let Some(addr) = local.as_socket() {
        SocketAddress::Inet(addr)
    } else if let Some(path) = local.as_pathname() {
        SocketAddress::Unix(path.to_path_buf())
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "socket is neither inet nor a named unix socket",
        ));
    };
    Ok(SocketIdentity { kind, address })
}

/// Stop a TCP listener from taking connections while keeping its port: `shutdown(SHUT_RD)` on
/// a listening socket makes Linux leave the LISTEN state, reset the connections waiting in its
/// queue and refuse new ones (ECONNREFUSED), while the socket stays bound to its address.
/// Returns Ok(false), doing nothing, for sockets that cannot be paused this way (UDP, unix).
///
/// Caveats (Linux): workers blocked in `accept` on the same socket are woken with EINVAL
/// (Cyrus's services exit on that), so pause a service only when it has no idle workers. While
/// paused, the port is still bound, but another socket that also sets SO_REUSEADDR may bind it
/// (a non-listening socket does not conflict), in which case resuming fails with EADDRINUSE.
/// A socket bound to port 0 loses its kernel-chosen port when paused; configured ports stay.
pub fn pause_listener(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let sock = SockRef::from(&fd);
    let inet = matches!(sock.domain()?, Domain::IPV4 | Domain::IPV6);
    if !inet || sock.r#type()? != Type::STREAM {
        return Ok(false);
    }
    sock.shutdown(std::net::Shutdown::Read)?;
    Ok(true)
}

/// Make a paused TCP listener listen again, on the same socket and port.
pub fn resume_listener(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    SockRef::from(&fd).listen(backlog)
}

/// The addresses to bind for an inet entry, in CYRUS_ID order.
fn inet_targets(host: Option<&str>, port: u16, proto: Proto) -> io::Result<Vec<SocketAddr>> {
    let (want_v4, want_v6) = match proto {
        Proto::Tcp | Proto::Udp => (true, true),
        Proto::Tcp4 | Proto::Udp4 => (true, false),
        Proto::Tcp6 | Proto::Udp6 => (false, true),
    };
    let Some(host) = host else {
        let mut all = Vec::new();
        if want_v4 {
            all.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        }
        if want_v6 {
            all.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
        }
        return Ok(all);
    };
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?;
    let mut chosen: Vec<SocketAddr> = Vec::new();
    for addr in resolved {
        let allowed = if addr.is_ipv4() { want_v4 } else { want_v6 };
        if allowed && !chosen.iter().any(|c| c.is_ipv4() == addr.is_ipv4()) {
            chosen.push(addr);
        }
    }
    if chosen.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no {} address", family_words(want_v4, want_v6)),
        ));
    }
    Ok(chosen)
}

fn family_words(v4: bool, v6: bool) -> &'static str {
    match (v4, v6) {
        (true, false) => "IPv4",
        (false, true) => "IPv6",
        _ => "IPv4 or IPv6",
    }
}

/// Whether a bind failure means "this host has no such family" rather than a real problem.
fn family_missing(e: &io::Error, addr: SocketAddr, literal: bool) -> bool {
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) | Some(libc::EPROTONOSUPPORT) => true,
        Some(libc::EADDRNOTAVAIL) => addr.is_ipv6() && !literal,
        _ => false,
    }
}

fn bind_inet(
    addr: SocketAddr,
    proto: Proto,
    backlog: i32,
    share_port: bool,
) -> io::Result<OwnedFd> {
    let (ty, stream) = if proto.is_udp() {
        (Type::DGRAM, false)
    } else {
        (Type::STREAM, true)
    };
    // socket2 creates sockets with SOCK_CLOEXEC, and blocking.
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if stream {
        socket.set_reuse_address(true)?;
    }
    if share_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    if stream {
        socket.listen(backlog)?;
    }
    Ok(OwnedFd::from(socket))
}

fn bind_unix(path: &Path, stream: bool, backlog: i32) -> io::Result<OwnedFd> {
    remove_stale_socket(path)?;
    let ty = if stream { Type::STREAM } else { Type::DGRAM };
    let socket = Socket::new(Domain::UNIX, ty, None)?;
    let addr = SockAddr::unix(path)?;
    let old = umask(Mode::empty());
    let bound = socket.bind(&addr);
    umask(old);
    bound.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if stream {
        socket.listen(backlog)?;
    }
    Ok(OwnedFd::from(socket))
}

/// Remove a socket left at `path` by an earlier run; refuse to touch anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            ),
        )),
    }
}

impl AsFd for BoundListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests;

/// How many connections wait in a listening TCP socket's accept queue (Linux reports it as
/// `tcpi_unacked` of TCP_INFO for a listener). None for anything else: a unix or UDP socket,
/// or a kernel that does not say.
pub fn pending_connections(fd: BorrowedFd<'_>) -> Option<u32> {
    const TCP_LISTEN: u8 = 10;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the call; the kernel
    // writes at most `len` bytes and updates `len`; the fd is borrowed, so it stays open.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < std::mem::size_of::<libc::tcp_info>() / 2 {
        return None;
    }
    // SAFETY: zero-initialised, then (partly) filled by the kernel: every bit pattern is a
    // valid tcp_info (plain integers).
    let info = unsafe { info.assume_init() };
    (info.tcpi_state == TCP_LISTEN).then_some(info.tcpi_unacked)
}

#[cfg(test)]
mod pending_tests {
    use super::*;

    #[test]
    fn counts_the_accept_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(pending_connections(listener.as_fd()), Some(0));
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        let mut seen = None;
        for _ in 0..200 {
            seen = pending_connections(listener.as_fd());
            if seen == Some(2) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(seen, Some(2));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(pending_connections(udp.as_fd()), None);
    }
}
