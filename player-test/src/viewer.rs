//! A light live-edge LL-HLS viewer and the load generator built on it.

use crate::playback::Playback;
use crate::player::percentile;
use crate::playlist::MediaPlaylist;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn get_text(c: &reqwest::Client, url: &str) -> Result<(u16, String), reqwest::Error> {
    let r = c.get(url).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

/// What a light viewer saw.
#[derive(Debug, Default)]
pub struct ViewerStats {
    pub playlists: AtomicU64,
    pub parts: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    /// Part fetch latencies (request to last byte, microseconds), at most a million.
    pub part_latency_us: Mutex<Vec<u32>>,
    /// Times a viewer's buffer ran dry (a real player would have stalled).
    pub underruns: AtomicU64,
    pub underrun_us: AtomicU64,
}

/// A light LL-HLS viewer, as hls.js behaves at the live edge: one plain playlist, then a
/// blocking reload for each next part and a fetch of that part, until `until`. `playlist_url`
/// may carry a session id (`?fcsid=…`). It keeps a playback model (starting once
/// `PART-HOLD-BACK` is buffered) to count underruns: parts that arrived too late to play on.
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
    let base = path
        .rsplit_once('/')
        .map_or(path.as_str(), |(b, _)| b)
        .to_owned();
    let err = |e: String| {
        let mut errors = stats.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 10_000 {
            errors.push(e);
        }
    };
    let mut pl = match get_text(&c, &playlist_url).await {
        Ok((200, text)) => match MediaPlaylist::parse(&text) {
            Ok(p) => p,
            Err(e) => return err(e.to_string()),
        },
        Ok((status, _)) => return err(format!("playlist {status}")),
        Err(e) => return err(format!("playlist: {e}")),
    };
    stats.playlists.fetch_add(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let hold = if pl.part_hold_back > 0.0 {
        pl.part_hold_back
    } else {
        3.0 * pl.part_target
    };
    let mut playback = Playback::new(hold * 0.9, pl.part_target.max(0.1));
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
        pl = match MediaPlaylist::parse(&text) {
            Ok(p) => p,
            Err(e) => {
                err(e.to_string());
                continue;
            }
        };
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
        let duration = pl
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .find(|p| Some(&p.uri) == uri.as_ref())
            .map_or(0.0, |p| p.duration);
        if let Some(uri) = uri {
            let asked = Instant::now();
            match c.get(format!("{base}/{uri}")).send().await {
                Ok(r) if r.status() == 200 => match r.bytes().await {
                    Ok(b) => {
                        let us = asked.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        {
                            let mut l = stats
                                .part_latency_us
                                .lock()
                                .unwrap_or_else(|e| e.into_inner());
                            if l.len() < 1_000_000 {
                                l.push(us);
                            }
                        }
                        let stalls = playback.stalls.len();
                        playback.append(t0.elapsed().as_secs_f64(), duration, false);
                        if playback.stalls.len() > stalls {
                            stats.underruns.fetch_add(1, Ordering::Relaxed);
                            let last = playback.stalls.last().copied().unwrap_or(0.0);
                            stats
                                .underrun_us
                                .fetch_add((last * 1e6) as u64, Ordering::Relaxed);
                        }
                        stats.parts.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => err(format!("part {uri} body: {e}")),
                },
                Ok(r) => err(format!("part {uri} → {}", r.status())),
                Err(e) => err(format!("part {uri}: {e}")),
            }
        }
    }
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub viewers: usize,
    pub seconds: f64,
    pub playlist_requests: u64,
    pub part_requests: u64,
    pub bytes: u64,
    pub errors: Vec<String>,
    /// Part fetch latency (request to last byte), milliseconds.
    pub part_latency_p50_ms: Option<f64>,
    pub part_latency_p99_ms: Option<f64>,
    /// Buffer underruns over all viewers, and their total duration (seconds).
    pub underruns: u64,
    pub underrun_secs: f64,
}

impl LoadReport {
    pub fn requests_per_second(&self) -> f64 {
        (self.playlist_requests + self.part_requests) as f64 / self.seconds.max(1e-9)
    }
}

/// Runs `viewers` light viewers of `playlist_url` (each with its own session id, spread over
/// `viewers` connections) for `duration`. Bounded in count and time by construction.
pub async fn load(playlist_url: &str, viewers: usize, duration: Duration) -> LoadReport {
    let stats = Arc::new(ViewerStats::default());
    let started = Instant::now();
    let until = started + duration;
    let mut set = tokio::task::JoinSet::new();
    let sep = if playlist_url.contains('?') { '&' } else { '?' };
    let run = format!(
        "{:x}",
        started.elapsed().as_nanos() ^ u128::from(std::process::id())
    );
    for i in 0..viewers {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let url = format!("{playlist_url}{sep}fcsid=load-{run}-{i}");
        set.spawn(light_viewer(client, url, until, Arc::clone(&stats)));
    }
    while set.join_next().await.is_some() {}
    let errors = stats
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let lat = std::mem::take(
        &mut *stats
            .part_latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    LoadReport {
        part_latency_p50_ms: percentile(&lat, 0.5).map(|us| f64::from(us) / 1000.0),
        part_latency_p99_ms: percentile(&lat, 0.99).map(|us| f64::from(us) / 1000.0),
        underruns: stats.underruns.load(Ordering::Relaxed),
        underrun_secs: stats.underrun_us.load(Ordering::Relaxed) as f64 / 1e6,
        viewers,
        seconds: started.elapsed().as_secs_f64(),
        playlist_requests: stats.playlists.load(Ordering::Relaxed),
        part_requests: stats.parts.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        errors,
    }
}
