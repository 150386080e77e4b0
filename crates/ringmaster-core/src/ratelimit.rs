//! Rate limiting of log lines that input the master does not control can provoke (a worker's
//! status pipe, stray signals, a configuration): a few lines per source per window, then a
//! count of what was left out. Pure: the caller passes the time in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long one window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines logged per source per window before the rest are only counted.
pub const BURST: u32 = 5;
/// Sources remembered at most; past this, sources whose window ended are forgotten first, so
/// input that invents keys cannot grow the map without bound.
const MAX_SOURCES: usize = 1024;

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it. `suppressed` messages of this source were left out before it (in a window that
    /// has ended): say so first.
    Log { suppressed: u64 },
    /// Leave it out; it is counted.
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Per-source windows: the first [`BURST`] messages of a source in each [`WINDOW`] are logged,
/// the others counted; the count is reported by the next message logged for that source or by
/// [`RateLimiter::expired`], whichever comes first.
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    window: Duration,
    burst: u32,
    sources: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter::new(WINDOW, BURST)
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `burst` lines per source per `window`.
    pub fn new(window: Duration, burst: u32) -> Self {
        RateLimiter {
            window,
            burst,
            sources: HashMap::new(),
        }
    }

    /// Whether to log one message from `source` at `now`.
    pub fn check(&mut self, source: &K, now: Instant) -> Verdict {
        if !self.sources.contains_key(source) && self.sources.len() >= MAX_SOURCES {
            self.forget_idle(now);
        }
        let window = self.window;
        let burst = self.burst;
        let w = self.sources.entry(source.clone()).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        let mut carried = 0;
        if now.saturating_duration_since(w.start) >= window {
            carried = w.suppressed;
            *w = Window {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < burst {
            w.logged += 1;
            Verdict::Log {
                suppressed: carried,
            }
        } else {
            w.suppressed += carried + 1;
            Verdict::Suppress
        }
    }

    /// Sources whose window has ended with messages left out, and how many: report each once.
    /// Sources with nothing to report are forgotten.
    pub fn expired(&mut self, now: Instant) -> Vec<(K, u64)> {
        let window = self.window;
        let mut done = Vec::new();
        self.sources.retain(|key, w| {
            if now.saturating_duration_since(w.start) < window {
                return true;
            }
            if w.suppressed > 0 {
                done.push((key.clone(), w.suppressed));
            }
            false
        });
        done
    }

    /// When the earliest window with something to report ends (for the loop's timeout).
    pub fn next_report(&self) -> Option<Instant> {
        self.sources
            .values()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.start + self.window)
            .min()
    }

    fn forget_idle(&mut self, now: Instant) {
        let window = self.window;
        self.sources
            .retain(|_, w| now.saturating_duration_since(w.start) < window || w.suppressed > 0);
        if self.sources.len() >= MAX_SOURCES {
            // Still full of live sources: start over rather than grow (counts are lost, lines
            // are still bounded).
            self.sources.clear();
        }
    }
}

/// Text from outside (a config line, bytes from a pipe) made safe for a log line or a
/// terminal: control characters and other non-printing characters become `\xNN` / `\u{NNNN}`.
/// Backslashes are left alone, so text already quoted with `{:?}` reads the same.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unprintable(c) {
            let n = u32::from(c);
            if n < 0x100 {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:04x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Characters that a terminal or log reader would not show as themselves: C0/C1 controls,
/// DEL, and the bidirectional and zero-width format characters that can disguise a line.
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> (RateLimiter<&'static str>, Instant) {
        (RateLimiter::new(Duration::from_secs(10), 3), Instant::now())
    }

    #[test]
    fn logs_a_burst_then_counts_and_reports_with_the_next_line() {
        let (mut rl, t0) = limiter();
        for _ in 0..3 {
            assert_eq!(rl.check(&"pipe", t0), Verdict::Log { suppressed: 0 });
        }
        for _ in 0..100 {
            assert_eq!(rl.check(&"pipe", t0), Verdict::Suppress);
        }
        // Another source has its own budget.
        assert_eq!(rl.check(&"other", t0), Verdict::Log { suppressed: 0 });
        let later = t0 + Duration::from_secs(10);
        assert_eq!(rl.check(&"pipe", later), Verdict::Log { suppressed: 100 });
        assert_eq!(rl.check(&"pipe", later), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn an_ended_window_is_reported_once_and_then_forgotten() {
        let (mut rl, t0) = limiter();
        for _ in 0..5 {
            rl.check(&"pipe", t0);
        }
        rl.check(&"quiet", t0);
        assert_eq!(rl.next_report(), Some(t0 + Duration::from_secs(10)));
        assert!(rl.expired(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(rl.expired(t0 + Duration::from_secs(10)), vec![("pipe", 2)]);
        assert!(rl.expired(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(rl.next_report(), None);
        assert_eq!(
            rl.check(&"pipe", t0 + Duration::from_secs(30)),
            Verdict::Log { suppressed: 0 }
        );
    }

    #[test]
    fn a_suppression_in_a_window_that_ends_suppressed_is_kept() {
        let (mut rl, t0) = limiter();
        let mut t = t0;
        let mut logged = 0;
        let mut reported = 0;
        // A steady storm: 1,000 messages a second for a minute.
        for _ in 0..60_000 {
            match rl.check(&"pipe", t) {
                Verdict::Log { suppressed } => {
                    logged += 1;
                    reported += suppressed;
                }
                Verdict::Suppress => {}
            }
            t += Duration::from_millis(1);
        }
        reported += rl
            .expired(t + Duration::from_secs(10))
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>();
        assert!(logged <= 3 * 7, "{logged} lines");
        assert_eq!(logged + reported, 60_000);
    }

    #[test]
    fn invented_sources_do_not_grow_the_map_without_bound() {
        let mut rl = RateLimiter::new(Duration::from_secs(10), 1);
        let t0 = Instant::now();
        for key in 0..10_000u32 {
            rl.check(&key, t0);
        }
        assert!(rl.sources.len() <= MAX_SOURCES);
    }

    #[test]
    fn escapes_what_a_terminal_would_not_show() {
        assert_eq!(escape("plain text: ok"), "plain text: ok");
        assert_eq!(
            escape("a\x1b[2Jb\n\r\t\x7f"),
            "a\\x1b[2Jb\\x0a\\x0d\\x09\\x7f"
        );
        assert_eq!(escape("back\\slash \\u{1b}"), "back\\slash \\u{1b}");
        assert_eq!(escape("\u{202e}evil\u{85}"), "\\u{202e}evil\\x85");
        assert_eq!(escape("h\u{e9}llo \u{fffd}"), "h\u{e9}llo \u{fffd}");
    }
}
