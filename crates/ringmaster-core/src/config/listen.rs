//! `listen=` values: `port`, `host:port`, `[v6addr]:port`, `/unix/path`, and service names
//! from the services database in place of a port.

use std::path::PathBuf;

use super::model::Listen;
use super::services_db::{ServicesDb, Transport};

/// Longest unix socket path (sun_path is 108 bytes with its NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// Why a listen value is bad: character offset into the value, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenError {
    pub offset: usize,
    pub message: String,
}

fn err(offset: usize, message: impl Into<String>) -> ListenError {
    ListenError {
        offset,
        message: message.into(),
    }
}

/// Parses a listen value. `transport` picks the services-database column for names.
pub fn parse_listen(
    value: &str,
    transport: Transport,
    db: &ServicesDb,
) -> Result<Listen, ListenError> {
    if value.is_empty() {
        return Err(err(0, "empty listen address"));
    }
    if value.starts_with('/') {
        if value.len() > MAX_UNIX_PATH {
            return Err(err(
                0,
                format!(
                    "unix socket path is {} bytes long, the most is {MAX_UNIX_PATH}",
                    value.len()
                ),
            ));
        }
        return Ok(Listen::Unix(PathBuf::from(value)));
    }
    if let Some(space) = value.chars().position(char::is_whitespace) {
        return Err(err(space, "space in listen address"));
    }
    let chars: Vec<char> = value.chars().collect();
    let (host, port_text, port_offset) = if chars.first() == Some(&'[') {
        let Some(close) = chars.iter().rposition(|&c| c == ']') else {
            return Err(err(0, "unbalanced `[` in listen address (no `]`)"));
        };
        let host: String = chars[1..close].iter().collect();
        if host.is_empty() {
            return Err(err(1, "empty host in listen address"));
        }
        if let Some(open) = chars[1..close].iter().position(|&c| c == '[') {
            return Err(err(open + 1, "unbalanced `[` in listen address"));
        }
        match chars.get(close + 1) {
            Some(':') => {}
            None => {
                return Err(err(
                    close,
                    "missing port after `]` in listen address (write `[addr]:port`)",
                ))
            }
            Some(_) => return Err(err(close + 1, "expected `:port` after `]`")),
        }
        let port: String = chars[close + 2..].iter().collect();
        (Some(host), port, close + 2)
    } else {
        if let Some(i) = chars.iter().position(|&c| c == ']' || c == '[') {
            return Err(err(
                i,
                format!("unbalanced `{}` in listen address", chars[i]),
            ));
        }
        match chars.iter().rposition(|&c| c == ':') {
            Some(0) => return Err(err(0, "empty host in listen address")),
            Some(colon) => {
                let host: String = chars[..colon].iter().collect();
                let port: String = chars[colon + 1..].iter().collect();
                (Some(host), port, colon + 1)
            }
            None => (None, value.to_string(), 0),
        }
    };
    if port_text.is_empty() {
        return Err(err(port_offset, "missing port in listen address"));
    }
    let port = parse_port(&port_text, transport, db).map_err(|m| err(port_offset, m))?;
    Ok(Listen::Inet { host, port })
}

fn parse_port(text: &str, transport: Transport, db: &ServicesDb) -> Result<u16, String> {
    if text.chars().all(|c| c.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(0) => Err("port 0 is not a port to listen on".to_string()),
            Ok(n) if n <= 65535 => Ok(n as u16),
            _ => Err(format!("port {text} is out of range (1-65535)")),
        };
    }
    db.lookup(text, transport).ok_or_else(|| {
        format!(
            "unknown service name `{text}` (not in {} for {})",
            db.source,
            transport.as_str()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> ServicesDb {
        ServicesDb::parse(
            "imap2 143/tcp imap\nsieve 4190/tcp\nnotes 9/udp\n",
            "services",
        )
    }

    fn ok(v: &str) -> Listen {
        parse_listen(v, Transport::Tcp, &db()).unwrap()
    }

    fn bad(v: &str) -> ListenError {
        parse_listen(v, Transport::Tcp, &db()).unwrap_err()
    }

    fn inet(host: Option<&str>, port: u16) -> Listen {
        Listen::Inet {
            host: host.map(String::from),
            port,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(ok("143"), inet(None, 143));
        assert_eq!(ok("imap"), inet(None, 143));
        assert_eq!(ok("localhost:sieve"), inet(Some("localhost"), 4190));
        assert_eq!(ok("127.0.0.1:2000"), inet(Some("127.0.0.1"), 2000));
        assert_eq!(ok("[::1]:143"), inet(Some("::1"), 143));
        assert_eq!(ok("[::]:imap"), inet(Some("::"), 143));
        assert_eq!(
            ok("/run/cyrus/socket/lmtp"),
            Listen::Unix("/run/cyrus/socket/lmtp".into())
        );
    }

    #[test]
    fn transport_picks_the_column() {
        assert_eq!(
            parse_listen("notes", Transport::Udp, &db()),
            Ok(inet(None, 9))
        );
        assert!(parse_listen("notes", Transport::Tcp, &db()).is_err());
    }

    #[test]
    fn errors() {
        assert_eq!(bad("0").message, "port 0 is not a port to listen on");
        assert_eq!(bad("65536").message, "port 65536 is out of range (1-65535)");
        assert_eq!(bad("host:99999999999999999999").offset, 5);
        assert!(bad("nosuch")
            .message
            .starts_with("unknown service name `nosuch`"));
        assert_eq!(bad(":143").message, "empty host in listen address");
        assert_eq!(
            bad("[::1:143").message,
            "unbalanced `[` in listen address (no `]`)"
        );
        assert_eq!(bad("::1]:143").offset, 3);
        assert_eq!(bad("[]:143").message, "empty host in listen address");
        assert_eq!(bad("host:").message, "missing port in listen address");
        assert!(bad("[::1]").message.starts_with("missing port after `]`"));
        assert!(bad("[::1]x").message.starts_with("expected `:port`"));
        assert_eq!(bad("").message, "empty listen address");
        assert_eq!(bad("a b:1").offset, 1);
        assert!(bad(&format!("/{}", "x".repeat(200)))
            .message
            .contains("107"));
    }
}
