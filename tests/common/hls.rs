//! A small LL-HLS media playlist parser and a player-like follower for the tests. (The full
//! client library belongs to the player-test crate; this one checks the server's output.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct PartEntry {
    pub duration: f64,
    pub uri: String,
    pub independent: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SegmentEntry {
    pub msn: u64,
    pub duration: Option<f64>,
    pub uri: Option<String>,
    pub parts: Vec<PartEntry>,
    pub discontinuity: bool,
    pub program_date_time: Option<String>,
    pub map: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaPlaylist {
    pub text: String,
    pub version: u32,
    pub target_duration: u64,
    pub part_target: f64,
    pub part_hold_back: f64,
    pub can_skip_until: f64,
    pub can_block_reload: bool,
    pub media_sequence: u64,
    pub skipped: Option<u64>,
    pub segments: Vec<SegmentEntry>,
    pub preload_hint: Option<String>,
    pub rendition_reports: Vec<String>,
    pub endlist: bool,
    /// Tag names in order of appearance (for ordering checks).
    pub tags: Vec<String>,
}

fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split_once(':')?.1;
    // Attributes are comma separated; quoted values contain no commas in our output.
    rest.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

impl MediaPlaylist {
    pub fn parse(text: &str) -> MediaPlaylist {
        let mut p = MediaPlaylist {
            text: text.to_owned(),
            ..Default::default()
        };
        assert!(text.starts_with("#EXTM3U"), "not a playlist: {text}");
        let mut cur = SegmentEntry::default();
        let mut map = None;
        let mut msn = None;
        for line in text.lines() {
            if let Some(tag) = line.strip_prefix('#') {
                p.tags.push(tag.split(':').next().unwrap_or("").to_owned());
            }
            if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
                p.version = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                p.target_duration = v.parse().unwrap();
            } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
                p.can_block_reload = attr(line, "CAN-BLOCK-RELOAD") == Some("YES");
                p.part_hold_back = attr(line, "PART-HOLD-BACK").map_or(0.0, |v| v.parse().unwrap());
                p.can_skip_until = attr(line, "CAN-SKIP-UNTIL").map_or(0.0, |v| v.parse().unwrap());
            } else if line.starts_with("#EXT-X-PART-INF:") {
                p.part_target = attr(line, "PART-TARGET").unwrap().parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.parse().unwrap();
                msn = Some(p.media_sequence);
            } else if line.starts_with("#EXT-X-SKIP:") {
                let n: u64 = attr(line, "SKIPPED-SEGMENTS").unwrap().parse().unwrap();
                p.skipped = Some(n);
                msn = Some(msn.expect("MEDIA-SEQUENCE before SKIP") + n);
            } else if line.starts_with("#EXT-X-MAP:") {
                map = attr(line, "URI").map(str::to_owned);
            } else if line == "#EXT-X-DISCONTINUITY" {
                cur.discontinuity = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                cur.program_date_time = Some(v.to_owned());
            } else if line.starts_with("#EXT-X-PART:") {
                cur.parts.push(PartEntry {
                    duration: attr(line, "DURATION").unwrap().parse().unwrap(),
                    uri: attr(line, "URI").unwrap().to_owned(),
                    independent: attr(line, "INDEPENDENT") == Some("YES"),
                });
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                cur.duration = Some(v.trim_end_matches(',').parse().unwrap());
            } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
                p.preload_hint = attr(line, "URI").map(str::to_owned);
            } else if line.starts_with("#EXT-X-RENDITION-REPORT:") {
                p.rendition_reports.push(line.to_owned());
            } else if line == "#EXT-X-ENDLIST" {
                p.endlist = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                cur.uri = Some(line.to_owned());
                cur.msn = msn.expect("segment before MEDIA-SEQUENCE");
                cur.map = map.clone();
                msn = Some(cur.msn + 1);
                p.segments.push(std::mem::take(&mut cur));
            }
        }
        if !cur.parts.is_empty() || cur.program_date_time.is_some() {
            cur.msn = msn.unwrap_or(0);
            cur.map = map;
            p.segments.push(cur);
        }
        p
    }

    /// The last complete part listed: (msn, index).
    pub fn last_part(&self) -> Option<(u64, usize)> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.parts.is_empty())
            .map(|s| (s.msn, s.parts.len() - 1))
    }

    pub fn last_complete_msn(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.uri.is_some())
            .map(|s| s.msn)
    }

    /// The `_HLS_msn`/`_HLS_part` of the next part after the last one listed.
    pub fn next_part(&self) -> (u64, usize) {
        match self.last_part() {
            Some((msn, p)) => {
                let seg = self.segments.iter().find(|s| s.msn == msn).unwrap();
                if seg.uri.is_some() {
                    (msn + 1, 0)
                } else {
                    (msn, p + 1)
                }
            }
            None => (self.last_complete_msn().map_or(0, |m| m + 1), 0),
        }
    }
}

/// An HTTP client for the tests (no pooling surprises: one client, keep-alive).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn get_text(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

pub async fn get_bytes(c: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// Everything a follower saw.
#[derive(Debug, Default)]
pub struct Followed {
    pub playlists: Vec<MediaPlaylist>,
    /// Part bytes by (msn, index).
    pub parts: BTreeMap<(u64, usize), Vec<u8>>,
    /// Segment bytes by msn.
    pub segments: BTreeMap<u64, Vec<u8>>,
    /// Init segments by URI.
    pub inits: BTreeMap<String, Vec<u8>>,
    /// Segment entries as last listed, by msn.
    pub entries: BTreeMap<u64, SegmentEntry>,
    /// How long each blocking playlist request took.
    pub blocking_times: Vec<Duration>,
    pub errors: Vec<String>,
}

/// Follows a media playlist like an LL-HLS player for `duration` (or until ENDLIST):
/// blocking reloads for the next part, every new part and complete segment downloaded.
#[allow(clippy::map_entry)] // the insert happens after an await and an error branch
pub async fn follow(c: &reqwest::Client, playlist_url: &str, duration: Duration) -> Followed {
    let base = playlist_url.rsplit_once('/').unwrap().0.to_owned();
    let mut f = Followed::default();
    let end = Instant::now() + duration;
    let (status, text) = get_text(c, playlist_url).await;
    assert_eq!(status, 200, "first playlist: {text}");
    let mut pl = MediaPlaylist::parse(&text);
    loop {
        for s in &pl.segments {
            if let Some(map) = &s.map {
                if !f.inits.contains_key(map) {
                    let (st, b) = get_bytes(c, &format!("{base}/{map}")).await;
                    assert_eq!(st, 200, "init {map}");
                    f.inits.insert(map.clone(), b);
                }
            }
            for (i, p) in s.parts.iter().enumerate() {
                if !f.parts.contains_key(&(s.msn, i)) {
                    let (st, b) = get_bytes(c, &format!("{base}/{}", p.uri)).await;
                    if st == 200 {
                        f.parts.insert((s.msn, i), b);
                    } else {
                        f.errors.push(format!("part {} → {st}", p.uri));
                    }
                }
            }
            if let Some(uri) = &s.uri {
                if !f.segments.contains_key(&s.msn) {
                    let (st, b) = get_bytes(c, &format!("{base}/{uri}")).await;
                    if st == 200 {
                        f.segments.insert(s.msn, b);
                    } else {
                        f.errors.push(format!("segment {uri} → {st}"));
                    }
                }
            }
            f.entries.insert(s.msn, s.clone());
        }
        let ended = pl.endlist;
        f.playlists.push(pl);
        if ended || Instant::now() > end {
            return f;
        }
        let (msn, part) = f.playlists.last().unwrap().next_part();
        let url = format!("{playlist_url}?_HLS_msn={msn}&_HLS_part={part}");
        let t = Instant::now();
        let (status, text) = get_text(c, &url).await;
        f.blocking_times.push(t.elapsed());
        if status != 200 {
            f.errors
                .push(format!("blocking playlist {msn}.{part} → {status}: {text}"));
            let (status, text) = get_text(c, playlist_url).await;
            assert_eq!(status, 200, "{text}");
            pl = MediaPlaylist::parse(&text);
            continue;
        }
        pl = MediaPlaylist::parse(&text);
    }
}

/// Polls `url` until it is not 404 (the publisher is still connecting), up to 20 s.
pub async fn wait_for(c: &reqwest::Client, url: &str) -> (u16, String) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = get_text(c, url).await;
        if status != 404 || Instant::now() > end {
            return (status, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a light viewer saw.
#[derive(Debug, Default)]
pub struct ViewerStats {
    pub playlists: std::sync::atomic::AtomicU64,
    pub parts: std::sync::atomic::AtomicU64,
    pub errors: std::sync::Mutex<Vec<String>>,
}

/// A light LL-HLS viewer, as hls.js behaves at the live edge: one plain playlist, then a
/// blocking reload for each next part and a fetch of that part, until `until`. `playlist_url`
/// may carry a session id (`?fcsid=…`).
pub async fn light_viewer(
    c: reqwest::Client,
    playlist_url: String,
    until: Instant,
    stats: std::sync::Arc<ViewerStats>,
) {
    use std::sync::atomic::Ordering;
    let (path, sid_query) = match playlist_url.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (playlist_url.clone(), None),
    };
    let base = path.rsplit_once('/').unwrap().0.to_owned();
    let err = |e: String| stats.errors.lock().unwrap().push(e);
    let (status, text) = get_text(&c, &playlist_url).await;
    if status != 200 {
        err(format!("playlist {status}"));
        return;
    }
    stats.playlists.fetch_add(1, Ordering::Relaxed);
    let mut pl = MediaPlaylist::parse(&text);
    while Instant::now() < until {
        let (msn, part) = pl.next_part();
        let sep = match &sid_query {
            Some(q) => format!("?{q}&"),
            None => "?".to_owned(),
        };
        let url = format!("{path}{sep}_HLS_msn={msn}&_HLS_part={part}");
        let (status, text) = match c.get(&url).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.text().await.unwrap_or_default())
            }
            Err(e) => {
                err(format!("playlist request: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if status != 200 {
            err(format!("blocking playlist {msn}.{part} → {status}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        stats.playlists.fetch_add(1, Ordering::Relaxed);
        pl = MediaPlaylist::parse(&text);
        if pl.endlist {
            return;
        }
        // Fetch the part we waited for (or the first one after it, at a segment boundary).
        let uri = pl
            .segments
            .iter()
            .find(|s| s.msn == msn)
            .and_then(|s| s.parts.get(part))
            .or_else(|| {
                pl.segments
                    .iter()
                    .find(|s| s.msn == msn + 1)
                    .and_then(|s| s.parts.first())
            })
            .map(|p| p.uri.clone());
        if let Some(uri) = uri {
            match c.get(format!("{base}/{uri}")).send().await {
                Ok(r) if r.status() == 200 => match r.bytes().await {
                    Ok(_) => {
                        stats.parts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => err(format!("part {uri} body: {e}")),
                },
                Ok(r) => err(format!("part {uri} → {}", r.status())),
                Err(e) => err(format!("part {uri}: {e}")),
            }
        }
    }
}
