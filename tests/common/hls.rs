//! A small LL-HLS media playlist parser and a player-like follower for the tests. (The full
//! client library belongs to the player-test crate; this one checks the server's output.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use player_test::{light_viewer, MediaPlaylist, PartEntry, SegmentEntry, ViewerStats};

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
    /// When each of `playlists` arrived (wall clock).
    pub fetched_at: Vec<std::time::SystemTime>,
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
    let path = playlist_url.split('?').next().unwrap();
    let base = path.rsplit_once('/').unwrap().0.to_owned();
    let mut f = Followed::default();
    let end = Instant::now() + duration;
    let (status, text) = get_text(c, playlist_url).await;
    assert_eq!(status, 200, "first playlist: {text}");
    let mut pl = MediaPlaylist::parse(&text).unwrap();
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
        f.fetched_at.push(std::time::SystemTime::now());
        if ended || Instant::now() > end {
            return f;
        }
        let (msn, part) = f.playlists.last().unwrap().next_part();
        let sep = if playlist_url.contains('?') { '&' } else { '?' };
        let url = format!("{playlist_url}{sep}_HLS_msn={msn}&_HLS_part={part}");
        let t = Instant::now();
        let (status, text) = get_text(c, &url).await;
        f.blocking_times.push(t.elapsed());
        if status != 200 {
            f.errors
                .push(format!("blocking playlist {msn}.{part} → {status}: {text}"));
            let (status, text) = get_text(c, playlist_url).await;
            assert_eq!(status, 200, "{text}");
            pl = MediaPlaylist::parse(&text).unwrap();
            continue;
        }
        pl = MediaPlaylist::parse(&text).unwrap();
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

/// Waits until `{base}/live/{name}/index.m3u8` answers 200 (the publisher is up and the first
/// segment is complete); fails the test otherwise.
pub async fn wait_stream(c: &reqwest::Client, base: &str, name: &str) {
    let (status, text) = wait_for(c, &format!("{base}/live/{name}/index.m3u8")).await;
    assert_eq!(status, 200, "{text}");
}

/// The value of the series `series` (name and labels as rendered) on `{base}/metrics`.
pub async fn metric(c: &reqwest::Client, base: &str, series: &str) -> Option<f64> {
    let (_, text) = get_text(c, &format!("{base}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
