//! Tests of the whole cyrus.conf pipeline: validation messages and Cyrus's effective values
//! (entries.rs), and property tests (props.rs: never panics, locations inside the input,
//! generated configs round-trip); the helpers they share.

use super::validate::DEFAULT_MAXFDS;
use super::*;

mod entries;
mod props;

fn env() -> ParseEnv {
    ParseEnv {
        services: ServicesDb::parse(
            "imap2 143/tcp imap\npop3 110/tcp\nnntp 119/tcp readnews\nsieve 4190/tcp\nlmtp 24/tcp\nnotify 9999/udp\n",
            "services",
        ),
    }
}

fn parse(text: &str) -> (Option<Config>, Vec<Diagnostic>) {
    parse_cyrus_conf("c.conf", text, &env())
}

fn ok(text: &str) -> Config {
    let (config, diags) = parse(text);
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    config.unwrap_or_default()
}

/// (line, col, severity letter, message) of each diagnostic.
fn diags(text: &str) -> Vec<(u32, u32, char, String)> {
    parse(text)
        .1
        .into_iter()
        .map(|d| {
            let s = if d.is_error() { 'E' } else { 'W' };
            (d.location.line, d.location.col, s, d.message)
        })
        .collect()
}

fn services(body: &str) -> String {
    format!("SERVICES {{\n{body}\n}}\n")
}
