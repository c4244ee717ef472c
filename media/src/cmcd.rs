//! Common Media Client Data (CTA-5004), read tolerantly: what a player says about itself on
//! each request, in the `CMCD` query parameter and the `CMCD-Request`, `CMCD-Object`,
//! `CMCD-Status` and `CMCD-Session` headers (all four merged).
//!
//! The payload is an RFC 8941 dictionary: `key`, `key=value`, comma-separated; values are
//! integers, decimals, quoted strings, tokens, `?0`/`?1`, and in CMCD v2 inner lists such as
//! `bl=(21300;v 3000;a)`. Both versions' keys are accepted, and so is any token value (hls.js
//! sends `st=ll` on LL-HLS, which strict parsers — the `cmcd` crate — refuse). A member that
//! does not parse is skipped and counted, never an error for the viewer; the rest is kept.
//! Input is bounded ([`MAX_LEN`]): longer payloads are ignored whole.

/// The most bytes of CMCD read from one request (query and headers together).
pub const MAX_LEN: usize = 4096;
/// The longest string value kept (session and content ids); longer ones are malformed.
pub const MAX_STRING: usize = 128;

/// What a request's CMCD said (the keys Ferrocast uses), and how much of it was malformed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cmcd {
    /// Buffer length, ms (v2 inner lists: the shortest of the tracks').
    pub buffer_ms: Option<u64>,
    /// Encoded bitrate of the object, kbit/s.
    pub bitrate_kbps: Option<u64>,
    /// Top bitrate the player may pick, kbit/s.
    pub top_bitrate_kbps: Option<u64>,
    /// Measured throughput, kbit/s.
    pub throughput_kbps: Option<u64>,
    /// Object duration, ms.
    pub duration_ms: Option<u64>,
    /// Deadline: how long until the buffer would run dry, ms.
    pub deadline_ms: Option<u64>,
    /// The buffer ran dry since the last request (`bs`).
    pub starved: bool,
    /// The object is needed urgently for start-up or a seek (`su`).
    pub startup: bool,
    /// Playback rate (`pr`).
    pub rate: Option<f64>,
    pub session: Option<String>,
    pub content: Option<String>,
    /// `ot`: m, a, v, av, i, c, tt, k, o.
    pub object: Option<String>,
    /// `st`: v (VOD), l (live), ll (low-latency live, hls.js).
    pub stream_type: Option<String>,
    /// `sf`: h (HLS), d (DASH), …
    pub format: Option<String>,
    pub version: Option<u64>,
    /// Members that did not parse or had a value of the wrong type (skipped).
    pub malformed: usize,
    /// The payload was longer than [`MAX_LEN`] and was ignored.
    pub oversized: bool,
}

impl Cmcd {
    /// Any CMCD at all was given (valid or not).
    pub fn present(&self) -> bool {
        *self != Cmcd::default()
    }

    /// Reads the `CMCD` query value (already percent-decoded) and the four headers' values, in
    /// any order; later values of a key override earlier ones.
    pub fn parse<'a>(payloads: impl IntoIterator<Item = &'a str>) -> Cmcd {
        let mut out = Cmcd::default();
        let payloads: Vec<&str> = payloads.into_iter().collect();
        if payloads.iter().map(|p| p.len()).sum::<usize>() > MAX_LEN {
            out.oversized = true;
            return out;
        }
        for p in payloads {
            for member in split_top(p, b',') {
                let member = member.trim_matches(|c| c == ' ' || c == '\t');
                if member.is_empty() {
                    continue;
                }
                if !out.member(member) {
                    out.malformed += 1;
                }
            }
        }
        out
    }

    /// One `key[=value]`; false when it is malformed.
    fn member(&mut self, member: &str) -> bool {
        let (key, value) = match member.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (member, None),
        };
        if !valid_key(key) {
            return false;
        }
        let Some(value) = value.map(parse_value).unwrap_or(Some(Value::Bool(true))) else {
            return false;
        };
        let int = |v: &Value| match v {
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::List(items) => items
                .iter()
                .filter_map(|i| match i {
                    Value::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                })
                .min(),
            _ => None,
        };
        let first_int = |v: &Value| match v {
            Value::List(items) => items.first().and_then(|i| match i {
                Value::Int(n) => u64::try_from(*n).ok(),
                _ => None,
            }),
            other => int(other),
        };
        let text = |v: &Value| match v {
            Value::Str(s) | Value::Token(s) if s.len() <= MAX_STRING => Some(s.clone()),
            _ => None,
        };
        let flag = |v: &Value| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        };
        macro_rules! set {
            ($field:expr, $got:expr) => {
                match $got {
                    Some(v) => {
                        $field = Some(v);
                        true
                    }
                    None => false,
                }
            };
        }
        match key {
            "bl" => set!(self.buffer_ms, int(&value)),
            "br" => set!(self.bitrate_kbps, first_int(&value)),
            "tb" => set!(self.top_bitrate_kbps, first_int(&value)),
            "mtp" => set!(self.throughput_kbps, first_int(&value)),
            "d" => set!(self.duration_ms, int(&value)),
            "dl" => set!(self.deadline_ms, int(&value)),
            "pr" => set!(
                self.rate,
                match value {
                    Value::Int(n) => Some(n as f64),
                    Value::Dec(d) if d.is_finite() => Some(d),
                    _ => None,
                }
            ),
            "sid" => set!(self.session, text(&value)),
            "cid" => set!(self.content, text(&value)),
            "ot" => set!(self.object, text(&value)),
            "st" => set!(self.stream_type, text(&value)),
            "sf" => set!(self.format, text(&value)),
            "v" => set!(self.version, int(&value)),
            "bs" => match flag(&value) {
                Some(b) => {
                    self.starved = b;
                    true
                }
                None => false,
            },
            "su" => match flag(&value) {
                Some(b) => {
                    self.startup = b;
                    true
                }
                None => false,
            },
            // Every other key (v1, v2 or custom `x-` ones) is well-formed and unused.
            _ => true,
        }
    }
}

/// The CMCD of a request: its `CMCD` query parameters (percent-decoded) and the `CMCD-Request`,
/// `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers, merged.
pub fn from_request(query: Option<&str>, headers: &http::HeaderMap) -> Cmcd {
    let mut payloads: Vec<String> = Vec::new();
    let mut unreadable = 0;
    let mut raw = 0usize;
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("CMCD=") {
            raw += v.len();
            if raw <= MAX_LEN * 3 {
                payloads.push(crate::viewers::percent_decode(v));
            }
        }
    }
    for name in ["cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"] {
        for v in headers.get_all(name) {
            raw += v.len();
            match v.to_str() {
                Ok(s) if raw <= MAX_LEN * 3 => payloads.push(s.to_owned()),
                Ok(_) => {}
                Err(_) => unreadable += 1,
            }
        }
    }
    let mut c = Cmcd::parse(payloads.iter().map(String::as_str));
    c.malformed += unreadable;
    if raw > MAX_LEN * 3 {
        c = Cmcd {
            oversized: true,
            ..Cmcd::default()
        };
    }
    c
}

/// Upper bounds (ms) of the buffer-length buckets; the last bucket is everything above.
pub const BUFFER_BUCKETS_MS: [u64; 7] = [250, 500, 1000, 2000, 4000, 8000, 16000];

/// What the players of one rendition said, summed so that reports from many edges add up:
/// sessions in the window with their latest buffer length (bucketed), throughput and bitrate;
/// starvation events and start-up requests since the stream began; malformed payloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlayerSummary {
    /// Sessions that sent CMCD within the window.
    pub sessions: u64,
    /// Sessions by their latest buffer length: `BUFFER_BUCKETS_MS` upper bounds, then the rest.
    pub buffer_buckets: [u64; 8],
    pub buffer_ms_sum: u64,
    pub buffer_n: u64,
    pub throughput_kbps_sum: u64,
    pub throughput_n: u64,
    pub bitrate_kbps_sum: u64,
    pub bitrate_n: u64,
    /// Requests that said the buffer ran dry (`bs`).
    pub starvations: u64,
    /// Requests marked start-up or seek (`su`).
    pub startups: u64,
    /// Requests whose CMCD had malformed members (or was oversized).
    pub malformed: u64,
}

impl PlayerSummary {
    /// Adds another reporter's summary.
    pub fn merge(&mut self, o: &PlayerSummary) {
        self.sessions += o.sessions;
        for (a, b) in self.buffer_buckets.iter_mut().zip(o.buffer_buckets) {
            *a += b;
        }
        self.buffer_ms_sum += o.buffer_ms_sum;
        self.buffer_n += o.buffer_n;
        self.throughput_kbps_sum += o.throughput_kbps_sum;
        self.throughput_n += o.throughput_n;
        self.bitrate_kbps_sum += o.bitrate_kbps_sum;
        self.bitrate_n += o.bitrate_n;
        self.starvations += o.starvations;
        self.startups += o.startups;
        self.malformed += o.malformed;
    }

    pub fn mean_buffer_ms(&self) -> Option<u64> {
        (self.buffer_n > 0).then(|| self.buffer_ms_sum / self.buffer_n)
    }

    pub fn mean_throughput_kbps(&self) -> Option<u64> {
        (self.throughput_n > 0).then(|| self.throughput_kbps_sum / self.throughput_n)
    }

    pub fn mean_bitrate_kbps(&self) -> Option<u64> {
        (self.bitrate_n > 0).then(|| self.bitrate_kbps_sum / self.bitrate_n)
    }
}

/// Per stream → rendition → summary.
pub type PlayerSummaries =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, PlayerSummary>>;

/// A session's latest CMCD.
#[derive(Debug, Clone, Copy)]
struct Latest {
    at: std::time::Instant,
    buffer_ms: Option<u64>,
    throughput_kbps: Option<u64>,
    bitrate_kbps: Option<u64>,
}

/// Player telemetry per stream and rendition, as requests arrive (pure: time is passed in).
/// Bounded like the viewer counter: at most [`crate::viewers::MAX_RENDITION_KEYS`] pairs and
/// [`MAX_PLAYER_SESSIONS`] sessions.
#[derive(Debug)]
pub struct PlayerStats {
    window: std::time::Duration,
    latest: std::collections::HashMap<(String, String), std::collections::HashMap<String, Latest>>,
    totals: std::collections::HashMap<(String, String), (u64, u64, u64)>,
    sessions: usize,
}

/// Sessions whose latest CMCD is kept.
pub const MAX_PLAYER_SESSIONS: usize = 100_000;

impl PlayerStats {
    pub fn new(window: std::time::Duration) -> PlayerStats {
        PlayerStats {
            window,
            latest: Default::default(),
            totals: Default::default(),
            sessions: 0,
        }
    }

    /// Records one request's CMCD for `stream`/`rendition` (a media playlist, part or segment).
    /// `session`: the viewer's session (CMCD `sid`, else Ferrocast's own).
    pub fn record(
        &mut self,
        stream: &str,
        rendition: &str,
        session: Option<&str>,
        c: &Cmcd,
        now: std::time::Instant,
    ) {
        if !c.present() {
            return;
        }
        let key = (stream.to_owned(), rendition.to_owned());
        if !self.totals.contains_key(&key)
            && self.totals.len() >= crate::viewers::MAX_RENDITION_KEYS
        {
            return;
        }
        let t = self.totals.entry(key.clone()).or_default();
        t.0 += u64::from(c.starved);
        t.1 += u64::from(c.startup);
        t.2 += u64::from(c.malformed > 0 || c.oversized);
        let Some(sid) = c
            .session
            .as_deref()
            .or(session)
            .filter(|s| !s.is_empty() && s.len() <= MAX_STRING)
        else {
            return;
        };
        if self.sessions >= MAX_PLAYER_SESSIONS {
            self.expire(now);
            if self.sessions >= MAX_PLAYER_SESSIONS {
                return;
            }
        }
        let per = self.latest.entry(key).or_default();
        let prev = per.get(sid).copied();
        let keep = |new: Option<u64>, old: Option<u64>| new.or(old);
        let latest = Latest {
            at: now,
            buffer_ms: keep(c.buffer_ms, prev.and_then(|p| p.buffer_ms)),
            throughput_kbps: keep(c.throughput_kbps, prev.and_then(|p| p.throughput_kbps)),
            bitrate_kbps: keep(c.bitrate_kbps, prev.and_then(|p| p.bitrate_kbps)),
        };
        if per.insert(sid.to_owned(), latest).is_none() {
            self.sessions += 1;
        }
    }

    fn expire(&mut self, now: std::time::Instant) {
        let window = self.window;
        let mut n = 0;
        self.latest.retain(|_, per| {
            per.retain(|_, l| now.saturating_duration_since(l.at) < window);
            n += per.len();
            !per.is_empty()
        });
        self.sessions = n;
    }

    /// The summaries now (sessions seen within the window).
    pub fn summaries(&mut self, now: std::time::Instant) -> PlayerSummaries {
        self.expire(now);
        let mut out = PlayerSummaries::new();
        for ((stream, rendition), (starved, startups, malformed)) in &self.totals {
            let mut s = PlayerSummary {
                starvations: *starved,
                startups: *startups,
                malformed: *malformed,
                ..Default::default()
            };
            for l in self
                .latest
                .get(&(stream.clone(), rendition.clone()))
                .into_iter()
                .flat_map(|per| per.values())
            {
                s.sessions += 1;
                if let Some(b) = l.buffer_ms {
                    let i = BUFFER_BUCKETS_MS
                        .iter()
                        .position(|&ub| b <= ub)
                        .unwrap_or(7);
                    s.buffer_buckets[i] += 1;
                    s.buffer_ms_sum += b;
                    s.buffer_n += 1;
                }
                if let Some(t) = l.throughput_kbps {
                    s.throughput_kbps_sum += t;
                    s.throughput_n += 1;
                }
                if let Some(b) = l.bitrate_kbps {
                    s.bitrate_kbps_sum += b;
                    s.bitrate_n += 1;
                }
            }
            out.entry(stream.clone())
                .or_default()
                .insert(rendition.clone(), s);
        }
        out
    }

    /// Forgets a stream (it ended).
    pub fn forget(&mut self, stream: &str) {
        self.totals.retain(|(s, _), _| s != stream);
        self.latest.retain(|(s, _), _| s != stream);
        self.expire_count();
    }

    fn expire_count(&mut self) {
        self.sessions = self.latest.values().map(|p| p.len()).sum();
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Dec(f64),
    Str(String),
    Token(String),
    Bool(bool),
    List(Vec<Value>),
}

/// RFC 8941 keys: lowercase letter or `*` first, then lowercase, digits, `_ - . *`.
fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0] == b'*')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(c))
}

/// Splits on `sep` outside quoted strings and parentheses.
fn split_top(s: &str, sep: u8) -> Vec<&str> {
    let (mut out, mut start, mut depth, mut quoted, mut escaped) =
        (Vec::new(), 0, 0u32, false, false);
    for (i, &c) in s.as_bytes().iter().enumerate() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => quoted = true,
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A value without its parameters (`;…` after it is ignored).
fn parse_value(v: &str) -> Option<Value> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('(') {
        let (inner, _params) = inner.rsplit_once(')')?;
        let items: Option<Vec<Value>> = inner
            .split(' ')
            .filter(|i| !i.is_empty())
            .map(|i| parse_bare(strip_params(i)))
            .collect();
        return items.map(Value::List);
    }
    parse_bare(strip_params(v))
}

/// An item without `;params` (outside a quoted string).
fn strip_params(v: &str) -> &str {
    if v.starts_with('"') {
        // The closing quote ends the item.
        let mut escaped = false;
        for (i, c) in v.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return &v[..=i],
                _ => {}
            }
        }
        return v;
    }
    v.split(';').next().unwrap_or(v)
}

fn parse_bare(v: &str) -> Option<Value> {
    let first = *v.as_bytes().first()?;
    match first {
        b'"' => {
            let body = v.strip_prefix('"')?.strip_suffix('"')?;
            let mut s = String::with_capacity(body.len());
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => s.push(chars.next()?),
                    '"' => return None,
                    c if c.is_ascii_graphic() || c == ' ' => s.push(c),
                    _ => return None,
                }
            }
            Some(Value::Str(s))
        }
        b'?' => match v {
            "?1" => Some(Value::Bool(true)),
            "?0" => Some(Value::Bool(false)),
            _ => None,
        },
        b'-' | b'0'..=b'9' => {
            if v.len() > 20 {
                return None;
            }
            if v.contains('.') {
                v.parse::<f64>()
                    .ok()
                    .filter(|d| d.is_finite())
                    .map(Value::Dec)
            } else {
                v.parse::<i64>().ok().map(Value::Int)
            }
        }
        c if c.is_ascii_alphabetic() || c == b'*' => v
            .bytes()
            .all(|c| c.is_ascii_graphic() && !b"\"(),;=\\".contains(&c))
            .then(|| Value::Token(v.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_example_and_hls_js_low_latency_token() {
        // CTA-5004's query example (percent-decoded), as hls.js and Shaka send it.
        let q = "bl=21300,br=3200,bs,cid=\"faec5fc2-ac30-11ea-bb37-0242ac130002\",d=4004,\
                 dl=18500,mtp=48100,nor=\"..%2F300kbps%2Ftrack.m4v\",nrr=\"12323-48763\",ot=v,\
                 pr=1.08,rtp=12000,sf=d,sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\",st=v,su,tb=6000";
        let c = Cmcd::parse([q]);
        assert_eq!(c.buffer_ms, Some(21300));
        assert_eq!(c.bitrate_kbps, Some(3200));
        assert!(c.starved && c.startup);
        assert_eq!(c.throughput_kbps, Some(48100));
        assert_eq!(c.top_bitrate_kbps, Some(6000));
        assert_eq!(c.duration_ms, Some(4004));
        assert_eq!(c.deadline_ms, Some(18500));
        assert_eq!(c.rate, Some(1.08));
        assert_eq!(
            c.session.as_deref(),
            Some("6e2fb550-c457-11e9-bb97-0800200c9a66")
        );
        assert_eq!(c.object.as_deref(), Some("v"));
        assert_eq!(c.format.as_deref(), Some("d"));
        assert_eq!(c.malformed, 0);
        // hls.js 1.7's headers on an LL-HLS part request: st=ll, split over four headers.
        let c = Cmcd::parse([
            "bl=1200,dl=1100,mtp=25400,su",
            "br=1500,d=333,ot=av,tb=3000",
            "bs,rtp=30000",
            "cid=\"cam\",sf=h,sid=\"0a1b2c3d\",st=ll,v=1",
        ]);
        assert_eq!(c.stream_type.as_deref(), Some("ll"));
        assert_eq!((c.buffer_ms, c.bitrate_kbps), (Some(1200), Some(1500)));
        assert_eq!(c.version, Some(1));
        assert!(c.starved);
    }

    #[test]
    fn players_are_summed_per_rendition_and_reports_add_up() {
        let t = std::time::Instant::now();
        let mut p = PlayerStats::new(std::time::Duration::from_secs(15));
        let a = Cmcd::parse(["bl=1200,br=1500,mtp=20000,sid=\"a\",su"]);
        let b = Cmcd::parse(["bl=300,br=800,bs,sid=\"b\""]);
        p.record("cam", "480p", None, &a, t);
        p.record("cam", "480p", None, &b, t);
        // A later request of a without a buffer length keeps its last one.
        p.record("cam", "480p", None, &Cmcd::parse(["ot=av,sid=\"a\""]), t);
        p.record("cam", "480p", Some("c"), &Cmcd::parse(["bl=x"]), t);
        p.record("cam", "480p", Some("d"), &Cmcd::default(), t);
        let s = &p.summaries(t)["cam"]["480p"];
        assert_eq!(
            s.sessions, 3,
            "a, b and c (whose CMCD was broken); d sent none"
        );
        assert_eq!(s.buffer_buckets[1], 1, "300 ms: ≤ 500");
        assert_eq!(s.buffer_buckets[3], 1);
        assert_eq!(s.mean_buffer_ms(), Some(750));
        assert_eq!(s.mean_bitrate_kbps(), Some(1150));
        assert_eq!(s.mean_throughput_kbps(), Some(20000));
        assert_eq!((s.starvations, s.startups, s.malformed), (1, 1, 1));
        let mut merged = s.clone();
        merged.merge(s);
        assert_eq!((merged.sessions, merged.mean_buffer_ms()), (6, Some(750)));
        // Sessions leave the window; the event counts stay.
        let later = p.summaries(t + std::time::Duration::from_secs(16));
        assert_eq!(later["cam"]["480p"].sessions, 0);
        assert_eq!(later["cam"]["480p"].starvations, 1);
        p.forget("cam");
        assert!(p.summaries(t).is_empty());
    }

    #[test]
    fn query_and_headers_are_merged() {
        let mut h = http::HeaderMap::new();
        h.insert("cmcd-status", http::HeaderValue::from_static("bs"));
        h.insert(
            "cmcd-session",
            http::HeaderValue::from_static("sid=\"s1\",st=ll"),
        );
        let c = from_request(Some("_HLS_msn=4&CMCD=bl%3D900%2Cbr%3D1500"), &h);
        assert_eq!((c.buffer_ms, c.bitrate_kbps), (Some(900), Some(1500)));
        assert!(c.starved);
        assert_eq!(c.session.as_deref(), Some("s1"));
        let big = format!("CMCD={}", "x".repeat(20_000));
        assert!(from_request(Some(&big), &http::HeaderMap::new()).oversized);
        assert!(!from_request(Some("_HLS_msn=4"), &http::HeaderMap::new()).present());
    }

    #[test]
    fn version_2_inner_lists_and_booleans() {
        let c = Cmcd::parse([
            "bl=(21300;v 3000;a),br=(3200 128),bs=?0,su=?1,v=2,ltc=800,x-custom=\"a,b\"",
        ]);
        assert_eq!(c.buffer_ms, Some(3000), "the shortest track's buffer");
        assert_eq!(c.bitrate_kbps, Some(3200));
        assert!(!c.starved && c.startup);
        assert_eq!(c.version, Some(2));
        assert_eq!(c.malformed, 0);
    }

    #[test]
    fn broken_cmcd_is_counted_and_the_rest_kept() {
        // Truncated, wrong types, bad keys, an unterminated string, absurd numbers.
        let c = Cmcd::parse([
            "bl=12,br=\"fast\",bs=3,sid=\"abc,mtp=99999999999999999999999,Bad=1,=5,d=-4",
        ]);
        assert_eq!(c.buffer_ms, Some(12));
        assert_eq!(c.bitrate_kbps, None);
        assert!(c.malformed >= 3, "{c:?}");
        let c = Cmcd::parse(["bl=1500,br=3"]);
        assert_eq!((c.buffer_ms, c.malformed), (Some(1500), 0));
        let c = Cmcd::parse(["bl=", "br=(1 2", ",,,", "sid=\"\u{7}\""]);
        assert!(c.malformed >= 3 && c.buffer_ms.is_none(), "{c:?}");
        // A 10 KB value is ignored whole.
        let big = format!("sid=\"{}\"", "x".repeat(10_000));
        let c = Cmcd::parse([big.as_str()]);
        assert!(c.oversized && c.session.is_none());
        // A long session id is refused, the rest kept.
        let long = format!("sid=\"{}\",bl=300", "y".repeat(200));
        let c = Cmcd::parse([long.as_str()]);
        assert_eq!((c.session, c.buffer_ms, c.malformed), (None, Some(300), 1));
        assert!(!Cmcd::parse([""]).present());
    }
}
