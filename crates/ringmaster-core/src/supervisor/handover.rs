//! Socket hand-over on reload, decided on plain address identities: which open socket a new
//! entry takes over, which it must share its port with (SO_REUSEPORT), which it keeps serving
//! because its new wildcard covers it, and what releasing a socket does. The runtime does the
//! syscalls (getsockname, bind, setsockopt, shutdown) these answers ask for.
//!
//! Sockets follow addresses, not entries: an address that a socket of a service retired by
//! the same reload already serves is taken over (whatever the entry's name, `listen=`
//! spelling or `proto=`), so an edit that keeps a port refuses nothing.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Whether a socket carries a stream or datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// SOCK_STREAM (tcp, unix stream).
    Stream,
    /// SOCK_DGRAM (udp, unix datagram).
    Datagram,
    /// Anything else, by its SO_TYPE value.
    Other(i32),
}

/// Where a socket is bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddress {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Inet(addr) => write!(f, "{addr}"),
            SocketAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What makes two listening sockets interchangeable: their kind and bound address. An open
/// socket whose identity equals one an entry would bind can serve that entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketIdentity {
    /// Stream or datagram.
    pub kind: SocketKind,
    /// The bound address.
    pub address: SocketAddress,
}

/// Whether two listening sockets compete for the same connections without being the same
/// address: one port, one family, one kind, and one of them the wildcard (Linux sends a
/// connection to the most specific one).
pub fn overlaps(a: &SocketIdentity, b: &SocketIdentity) -> bool {
    let (SocketAddress::Inet(x), SocketAddress::Inet(y)) = (&a.address, &b.address) else {
        return false;
    };
    a.kind == b.kind
        && x.port() == y.port()
        && x.is_ipv4() == y.is_ipv4()
        && x.ip() != y.ip()
        && (x.ip().is_unspecified() || y.ip().is_unspecified())
}

/// Whether `wide` (a wildcard) serves every connection `narrow` (a specific address on the
/// same port, family and kind) would: then `narrow` can go on serving under `wide`'s entry.
pub fn covers(wide: &SocketIdentity, narrow: &SocketIdentity) -> bool {
    match (&wide.address, &narrow.address) {
        (SocketAddress::Inet(w), SocketAddress::Inet(_)) => {
            w.ip().is_unspecified() && overlaps(wide, narrow)
        }
        _ => false,
    }
}

/// The retiring socket (an index into `retiring`; `None` where the kernel would not say
/// where a socket is bound) that serves `wanted` as it is: taken over, not bound again.
pub fn take_over(wanted: &SocketIdentity, retiring: &[Option<SocketIdentity>]) -> Option<usize> {
    retiring.iter().position(|r| r.as_ref() == Some(wanted))
}

/// The retiring sockets that a new socket for `wanted` overlaps (a reload widens or narrows
/// `listen=`): each of them, and the new socket, need SO_REUSEPORT. Only sockets the reload
/// retires count: any other overlap is a clash, refused by bind as in Cyrus.
pub fn port_sharers(wanted: &SocketIdentity, retiring: &[Option<SocketIdentity>]) -> Vec<usize> {
    retiring
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| overlaps(wanted, r)))
        .map(|(i, _)| i)
        .collect()
}

/// The retiring sockets, not taken over, that a socket now serving the entry (`serving`)
/// covers: they go on serving under the new entry, since closing one would reset the
/// connections in its queue, which Linux gives it rather than the wildcard.
pub fn keep_covered(
    serving: &[Option<SocketIdentity>],
    retiring: &[Option<SocketIdentity>],
    taken: &[usize],
) -> Vec<usize> {
    retiring
        .iter()
        .enumerate()
        .filter(|(i, _)| !taken.contains(i))
        .filter(|(_, old)| {
            old.as_ref().is_some_and(|old| {
                serving
                    .iter()
                    .any(|s| s.as_ref().is_some_and(|wide| covers(wide, old)))
            })
        })
        .map(|(i, _)| i)
        .collect()
}

/// What releasing one pool's socket does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Stop listening now (new connections are refused, even while busy workers hold it).
    pub stop_listening: bool,
    /// Remove its unix socket node.
    pub remove_path: bool,
}

/// Releasing a socket: one still used by another service (a reload handed it over) stays
/// open; one whose connections now go to an overlapping socket of ours (a reload narrowed a
/// wildcard) is not shut down under its queue, and closes with its last worker.
pub fn release(still_used: bool, refuse: bool, overlapped: bool) -> Release {
    Release {
        stop_listening: !still_used && refuse && !overlapped,
        remove_path: !still_used,
    }
}

/// Whether another open socket of ours (`others`) takes connections for this one's port and
/// family.
pub fn overlapped<'a>(
    identity: Option<&SocketIdentity>,
    mut others: impl Iterator<Item = Option<&'a SocketIdentity>>,
) -> bool {
    let Some(identity) = identity else {
        return false;
    };
    others.any(|o| o.is_some_and(|o| overlaps(identity, o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(addr: &str) -> Option<SocketIdentity> {
        Some(SocketIdentity {
            kind: SocketKind::Stream,
            address: SocketAddress::Inet(addr.parse().expect("a test address")),
        })
    }

    fn udp(addr: &str) -> Option<SocketIdentity> {
        tcp(addr).map(|i| SocketIdentity {
            kind: SocketKind::Datagram,
            ..i
        })
    }

    fn id(s: Option<SocketIdentity>) -> SocketIdentity {
        s.expect("an identity")
    }

    #[test]
    fn the_same_address_and_kind_is_taken_over() {
        let retiring = [None, tcp("127.0.0.1:110"), tcp("127.0.0.1:143")];
        assert_eq!(take_over(&id(tcp("127.0.0.1:143")), &retiring), Some(2));
        assert_eq!(take_over(&id(udp("127.0.0.1:143")), &retiring), None);
        assert_eq!(take_over(&id(tcp("127.0.0.2:143")), &retiring), None);
        let unix = SocketIdentity {
            kind: SocketKind::Stream,
            address: SocketAddress::Unix("/run/lmtp".into()),
        };
        assert_eq!(take_over(&unix, &[Some(unix.clone())]), Some(0));
    }

    #[test]
    fn a_wildcard_and_a_specific_address_of_one_port_share_it() {
        let retiring = [
            tcp("127.0.0.1:143"),
            tcp("127.0.0.1:110"),
            tcp("[::1]:143"),
            None,
        ];
        assert_eq!(port_sharers(&id(tcp("0.0.0.0:143")), &retiring), vec![0]);
        assert_eq!(port_sharers(&id(tcp("[::]:143")), &retiring), vec![2]);
        // Two specific addresses, or one address and itself, do not overlap.
        assert!(port_sharers(&id(tcp("127.0.0.2:143")), &retiring).is_empty());
        assert!(!overlaps(&id(tcp("0.0.0.0:143")), &id(tcp("0.0.0.0:143"))));
        assert!(!overlaps(
            &id(tcp("0.0.0.0:143")),
            &id(udp("127.0.0.1:143"))
        ));
    }

    #[test]
    fn a_new_wildcard_keeps_the_specific_sockets_it_covers() {
        let retiring = [tcp("127.0.0.1:143"), tcp("127.0.0.1:110"), tcp("[::]:143")];
        let serving = [tcp("0.0.0.0:143"), tcp("[::]:143")];
        // [::]:143 was taken over; 127.0.0.1:143 is covered; port 110 is not.
        assert_eq!(keep_covered(&serving, &retiring, &[2]), vec![0]);
        // A specific address covers nothing.
        assert!(keep_covered(&[tcp("127.0.0.1:143")], &retiring, &[]).is_empty());
        assert!(covers(&id(tcp("0.0.0.0:143")), &id(tcp("127.0.0.1:143"))));
        assert!(!covers(&id(tcp("127.0.0.1:143")), &id(tcp("0.0.0.0:143"))));
    }

    #[test]
    fn release_refuses_only_a_socket_nobody_else_serves() {
        let alone = release(false, true, false);
        assert!(alone.stop_listening && alone.remove_path);
        let shared = release(true, true, false);
        assert!(!shared.stop_listening && !shared.remove_path);
        let superseded = release(false, true, true);
        assert!(!superseded.stop_listening && superseded.remove_path);
        let fast_stop = release(false, false, false);
        assert!(!fast_stop.stop_listening && fast_stop.remove_path);
        let wide = tcp("0.0.0.0:143");
        let others = [tcp("127.0.0.1:143"), None];
        assert!(overlapped(wide.as_ref(), others.iter().map(Option::as_ref)));
        assert!(!overlapped(None, others.iter().map(Option::as_ref)));
    }
}
