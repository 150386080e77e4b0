//! Service names to port numbers: a small pure parser for the text of /etc/services, with a
//! built-in table of the names Cyrus configs use, for machines without the file.

use std::collections::HashMap;
use std::path::Path;

/// The system's services database.
pub const DEFAULT_SERVICES_FILE: &str = "/etc/services";

/// Transport of a services-database entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// Names (and aliases) to ports, per transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicesDb {
    ports: HashMap<(String, Transport), u16>,
    /// Where the table came from, for messages ("/etc/services", "built-in table").
    pub source: String,
}

/// Well-known ports of the services a cyrus.conf names, used when /etc/services is missing.
const BUILTIN: &[(&str, u16)] = &[
    ("imap", 143),
    ("imap2", 143),
    ("imaps", 993),
    ("pop3", 110),
    ("pop3s", 995),
    ("nntp", 119),
    ("nntps", 563),
    ("lmtp", 24),
    ("sieve", 4190),
    ("mupdate", 3905),
    ("csync", 2005),
    ("http", 80),
    ("https", 443),
    ("smtp", 25),
    ("submission", 587),
];

impl ServicesDb {
    /// Parses the text of a services file: `name port/proto [aliases...] [# comment]`.
    /// Malformed lines are skipped, as getservbyname skips them; the first entry of a name
    /// wins.
    pub fn parse(text: &str, source: &str) -> Self {
        let mut ports = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let transport = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Transport::Tcp,
                "udp" => Transport::Udp,
                _ => continue,
            };
            for n in std::iter::once(name).chain(words) {
                ports.entry((n.to_string(), transport)).or_insert(port);
            }
        }
        ServicesDb {
            ports,
            source: source.to_string(),
        }
    }

    /// The built-in table (both transports).
    pub fn builtin() -> Self {
        let mut ports = HashMap::new();
        for &(name, port) in BUILTIN {
            ports.insert((name.to_string(), Transport::Tcp), port);
            ports.insert((name.to_string(), Transport::Udp), port);
        }
        ServicesDb {
            ports,
            source: "built-in table".to_string(),
        }
    }

    /// Reads a services file; None when it cannot be read.
    pub fn load(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        Some(Self::parse(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        ))
    }

    /// The system's database (`$RINGMASTER_SERVICES_FILE`, else /etc/services), or the
    /// built-in table when it cannot be read.
    pub fn system() -> Self {
        let path = std::env::var_os("RINGMASTER_SERVICES_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| DEFAULT_SERVICES_FILE.into());
        Self::load(&path).unwrap_or_else(Self::builtin)
    }

    /// The port of a service name for a transport.
    pub fn lookup(&self, name: &str, transport: Transport) -> Option<u16> {
        self.ports.get(&(name.to_string(), transport)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment line
imap2\t\t143/tcp\t\timap\t\t# Interim Mail Access P 2 and 4
pop3\t\t110/tcp\t\tpop-3
syslog\t\t514/udp
bad line
broken\t\tx/tcp
sieve 4190/tcp
sieve 9999/tcp
";

    #[test]
    fn names_and_aliases() {
        let db = ServicesDb::parse(SAMPLE, "test");
        assert_eq!(db.lookup("imap2", Transport::Tcp), Some(143));
        assert_eq!(db.lookup("imap", Transport::Tcp), Some(143));
        assert_eq!(db.lookup("pop-3", Transport::Tcp), Some(110));
        assert_eq!(db.lookup("imap", Transport::Udp), None);
        assert_eq!(db.lookup("syslog", Transport::Udp), Some(514));
        assert_eq!(db.lookup("syslog", Transport::Tcp), None);
        assert_eq!(db.lookup("broken", Transport::Tcp), None);
        assert_eq!(db.lookup("sieve", Transport::Tcp), Some(4190));
    }

    #[test]
    fn builtin_has_cyrus_names() {
        let db = ServicesDb::builtin();
        assert_eq!(db.lookup("imap", Transport::Tcp), Some(143));
        assert_eq!(db.lookup("lmtp", Transport::Tcp), Some(24));
    }
}
