//! Viewer counting: distinct session ids seen on media playlist requests within a sliding
//! window, per stream and rendition. Pure (time is passed in); the origin and every edge run
//! the same code.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Bound on sessions tracked per counter (a flood of made-up session ids cannot grow memory
/// without limit; beyond it the oldest sessions are forgotten first).
const MAX_SESSIONS: usize = 200_000;

/// Bound on (stream, rendition) pairs tracked: these become metrics labels and report entries.
pub const MAX_RENDITION_KEYS: usize = 1024;

/// Viewer counts: stream → rendition → viewers.
pub type Counts = BTreeMap<String, BTreeMap<String, u64>>;

/// What an edge reports to the origin every interval (`POST /api/edges/report`, JSON). The
/// one wire type both sides use.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The edge's id.
    pub edge: String,
    /// Where viewers reach the edge (for the director).
    pub url: String,
    #[serde(default)]
    pub viewers: Counts,
    /// What the edge's players said in CMCD, per stream and rendition.
    #[serde(default)]
    pub players: crate::cmcd::PlayerSummaries,
}

#[derive(Debug)]
pub struct ViewerCounter {
    window: Duration,
    /// (stream, rendition) → session → last seen.
    seen: HashMap<(String, String), HashMap<String, Instant>>,
    total: usize,
}

impl ViewerCounter {
    pub fn new(window: Duration) -> ViewerCounter {
        ViewerCounter {
            window,
            seen: HashMap::new(),
            total: 0,
        }
    }

    /// Records a media playlist request.
    pub fn saw(&mut self, stream: &str, rendition: &str, session: &str, now: Instant) {
        if session.is_empty() || session.len() > 128 {
            return;
        }
        if self.total >= MAX_SESSIONS {
            self.expire(now);
            if self.total >= MAX_SESSIONS {
                return;
            }
        }
        let key = (stream.to_owned(), rendition.to_owned());
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_RENDITION_KEYS {
            self.expire(now);
            if self.seen.len() >= MAX_RENDITION_KEYS {
                return;
            }
        }
        let sessions = self.seen.entry(key).or_default();
        if sessions.insert(session.to_owned(), now).is_none() {
            self.total += 1;
        }
    }

    /// Drops sessions not seen within the window.
    pub fn expire(&mut self, now: Instant) {
        let window = self.window;
        let mut total = 0;
        self.seen.retain(|_, sessions| {
            sessions.retain(|_, t| now.saturating_duration_since(*t) < window);
            total += sessions.len();
            !sessions.is_empty()
        });
        self.total = total;
    }

    /// Current counts: stream → rendition → viewers.
    pub fn counts(&mut self, now: Instant) -> Counts {
        self.expire(now);
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((stream, rendition), sessions) in &self.seen {
            out.entry(stream.clone())
                .or_default()
                .insert(rendition.clone(), sessions.len() as u64);
        }
        out
    }
}

/// Extracts a viewer session id from a query string: our `fcsid` parameter, else a CMCD `sid`
/// (`CMCD=...sid="..."...`, percent-encoded or not).
pub fn session_from_query(query: &str) -> Option<String> {
    let mut cmcd_sid = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "fcsid" if !v.is_empty() => return Some(v.to_owned()),
            "CMCD" => cmcd_sid = cmcd_session(&percent_decode(v)),
            _ => {}
        }
    }
    cmcd_sid
}

/// Appends a viewer's session id (`fcsid=…`) to every URI line of a multivariant playlist, so
/// that it rides on the viewer's media playlist requests (and their blocking reloads). Caches
/// key on the LL-HLS directives only, so this never splits a cache.
pub fn tag_multivariant(text: &str, sid: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        out.push_str(line);
        if !line.starts_with('#') && !line.trim().is_empty() {
            out.push(if line.contains('?') { '&' } else { '?' });
            out.push_str("fcsid=");
            out.push_str(sid);
        }
        out.push('\n');
    }
    out
}

/// The `sid` key of a CMCD payload (`k=v,k2="v2"`), when it is a well-formed string.
pub fn cmcd_session(cmcd: &str) -> Option<String> {
    crate::cmcd::Cmcd::parse([cmcd]).session
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| char::from(c).to_digit(16);
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            // Byte-wise: slicing the str here could split a multi-byte character.
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_takes_any_bytes() {
        assert_eq!(percent_decode("a%3Db+c%2C"), "a=b c,");
        // Found by the cmcd fuzz target: a multi-byte character right after '%' panicked.
        assert_eq!(percent_decode("%2\u{11d}r"), "%2\u{11d}r");
        assert_eq!(percent_decode("%\u{e9}"), "%\u{e9}");
        assert_eq!(percent_decode("%+1%zz%4"), "% 1%zz%4");
    }

    #[test]
    fn counts_distinct_sessions_in_a_sliding_window() {
        let t = Instant::now();
        let mut c = ViewerCounter::new(Duration::from_secs(15));
        c.saw("cam", "source", "a", t);
        c.saw("cam", "source", "a", t + Duration::from_secs(1));
        c.saw("cam", "source", "b", t);
        c.saw("cam", "480p", "c", t);
        let n = c.counts(t + Duration::from_secs(2));
        assert_eq!(n["cam"]["source"], 2);
        assert_eq!(n["cam"]["480p"], 1);
        let n = c.counts(t + Duration::from_millis(15_500));
        assert_eq!(n["cam"]["source"], 1, "b expired, a was seen at +1 s");
        assert!(!n["cam"].contains_key("480p"));
        assert!(c.counts(t + Duration::from_secs(17)).is_empty());
    }

    #[test]
    fn multivariant_gets_session_ids() {
        let t = tag_multivariant(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nsource/index.m3u8\n",
            "abc",
        );
        assert_eq!(
            t,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nsource/index.m3u8?fcsid=abc\n"
        );
    }

    #[test]
    fn session_ids_from_query() {
        assert_eq!(
            session_from_query("fcsid=abc&_HLS_msn=3").as_deref(),
            Some("abc")
        );
        assert_eq!(
            session_from_query("_HLS_msn=3&CMCD=bl%3D500%2Csid%3D%22x-1%22").as_deref(),
            Some("x-1")
        );
        assert_eq!(
            session_from_query("CMCD=sid=\"y\",br=300").as_deref(),
            Some("y")
        );
        assert_eq!(session_from_query("_HLS_msn=3"), None);
    }
}
