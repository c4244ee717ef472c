//! The LL-HLS player: the async driver around the pure pieces ([`crate::playlist`],
//! [`crate::playback`], [`crate::abr`], [`crate::mp4`]) and, optionally, a real decoder
//! ([`crate::decode`]) that reads the visual clock code for glass-to-glass latency.
//!
//! How it plays, as Apple's LL-HLS client rules ask:
//! - A multivariant playlist picks the starting variant (the best one under `start_bandwidth`);
//!   a media playlist URL plays that one rendition.
//! - It starts `PART-HOLD-BACK` behind the live edge, on an independent part, and fetches
//!   whole segments when more than a segment behind, parts near the edge.
//! - At the edge it never polls: a blocking reload (`_HLS_msn`/`_HLS_part`, with `_HLS_skip=YES`
//!   delta updates when the server offers them) runs side by side with a fetch of the
//!   preload-hinted part, which the server streams as it is produced.
//! - Switches go through the rendition report of the target (a blocking request for its last
//!   part, so the new playlist is at least as fresh) and align by program date-time, falling
//!   back to media sequence numbers; ordinary switches wait for a segment boundary.
//! - A rendition that 404s is set aside and playback fails over; only a stream that gives
//!   nothing playable for `fatal_after` is a fatal error.

use crate::abr::{Abr, AbrConfig, Switch, SwitchReason};
use crate::decode::{DecodedFrame, Decoder};
use crate::mp4::{self, VideoTrack};
use crate::playback::Playback;
use crate::playlist::{MediaPlaylist, MultivariantPlaylist, Variant};
use reqwest::Url;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the player behaves.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// How long to watch.
    pub duration: Duration,
    /// Decode with ffmpeg and read the visual clock code (glass-to-glass latency).
    pub decode: bool,
    /// Fetch `EXT-X-PRELOAD-HINT` parts alongside the blocking reload.
    pub preload_hints: bool,
    /// Ask for Playlist Delta Updates (`_HLS_skip=YES`) when the server offers them.
    pub delta_updates: bool,
    pub abr: AbrConfig,
    /// Play this variant (index in the multivariant playlist) and never switch.
    pub pin: Option<usize>,
    /// The throughput assumed before any sample (bits/s): picks the first variant.
    pub start_bandwidth: u64,
    /// With preload hints at the live edge no transfer measures the link; probe it this often
    /// (seconds) by re-fetching a recent complete part, when a higher variant exists.
    pub probe_interval: f64,
    /// Give up when nothing playable arrived for this long.
    pub fatal_after: Duration,
    /// Session id sent as `fcsid` on playlist requests (the server counts viewers by it).
    pub session_id: Option<String>,
    /// A one-line status the player keeps current while it runs (for a progress display).
    pub progress: Option<std::sync::Arc<std::sync::Mutex<String>>>,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        PlayerConfig {
            duration: Duration::from_secs(30),
            decode: false,
            preload_hints: true,
            delta_updates: true,
            abr: AbrConfig::default(),
            pin: None,
            start_bandwidth: 5_000_000,
            probe_interval: 2.0,
            fatal_after: Duration::from_secs(15),
            session_id: None,
            progress: None,
        }
    }
}

/// A rendition switch, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchRecord {
    /// Seconds since the player started.
    pub at: f64,
    pub from: String,
    pub to: String,
    pub reason: SwitchReason,
    pub estimate_bps: f64,
    pub buffer: f64,
}

/// Requests made, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    pub multivariant: u64,
    pub playlists: u64,
    pub blocking_playlists: u64,
    pub delta_playlists: u64,
    pub inits: u64,
    pub parts: u64,
    pub hinted_parts: u64,
    pub segments: u64,
    pub probes: u64,
}

/// What a player saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seconds: f64,
    /// Time from start to the first frame shown.
    pub ttff: Option<Duration>,
    /// Durations of stalls (seconds), including one in progress at the end.
    pub stalls: Vec<f64>,
    pub switches: Vec<SwitchRecord>,
    pub requests: Requests,
    pub bytes: u64,
    pub errors: Vec<String>,
    /// Why playback gave up, if it did.
    pub fatal: Option<String>,
    /// The stream ended (`EXT-X-ENDLIST`) before the duration was up.
    pub ended: bool,
    pub discontinuities: u64,
    /// Capture → shown latency of each decoded frame whose clock code was read (ms).
    pub visual_latency_ms: Vec<i64>,
    /// Program date-time → shown latency at the start of each part or segment (ms).
    pub pdt_latency_ms: Vec<i64>,
    /// Per frame: visual minus PDT latency (ms): what the encoder and ingest added before the
    /// server stamped the media.
    pub visual_minus_pdt_ms: Vec<i64>,
    pub frames: u64,
    pub unreadable_frames: u64,
    /// Time spent on each variant (URI, seconds).
    pub variant_seconds: Vec<(String, f64)>,
    /// Every decoded frame read, for tests: (capture ms, shown Unix ms).
    pub shown_frames: Vec<(u64, i64)>,
}

/// A percentile of `v` (nearest rank), `None` if empty.
pub fn percentile<T: Copy + Ord>(v: &[T], p: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    v.get(i).copied()
}

impl Report {
    pub fn stall_secs(&self) -> f64 {
        // (A float `sum()` of nothing is -0.0.)
        self.stalls.iter().fold(0.0, |a, b| a + b)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let lat = |v: &[i64]| {
            serde_json::json!({
                "samples": v.len(),
                "p50": percentile(v, 0.5),
                "p95": percentile(v, 0.95),
                "max": percentile(v, 1.0),
            })
        };
        serde_json::json!({
            "seconds": self.seconds,
            "ttff_ms": self.ttff.map(|d| d.as_millis() as u64),
            "latency_ms": lat(&self.visual_latency_ms),
            "pdt_latency_ms": lat(&self.pdt_latency_ms),
            "visual_minus_pdt_ms": lat(&self.visual_minus_pdt_ms),
            "frames": self.frames,
            "unreadable_frames": self.unreadable_frames,
            "stalls": {"count": self.stalls.len(), "total_s": self.stall_secs()},
            "switches": self.switches.iter().map(|s| serde_json::json!({
                "at_s": s.at, "from": s.from, "to": s.to, "reason": s.reason.as_str(),
                "estimate_bps": s.estimate_bps.round(), "buffer_s": s.buffer,
            })).collect::<Vec<_>>(),
            "variant_seconds": self.variant_seconds.iter()
                .map(|(v, s)| serde_json::json!({"variant": v, "seconds": s}))
                .collect::<Vec<_>>(),
            "requests": {
                "multivariant": self.requests.multivariant,
                "playlists": self.requests.playlists,
                "blocking_playlists": self.requests.blocking_playlists,
                "delta_playlists": self.requests.delta_playlists,
                "inits": self.requests.inits,
                "parts": self.requests.parts,
                "hinted_parts": self.requests.hinted_parts,
                "segments": self.requests.segments,
                "probes": self.requests.probes,
            },
            "bytes": self.bytes,
            "discontinuities": self.discontinuities,
            "errors": self.errors.len(),
            "first_errors": self.errors.iter().take(5).collect::<Vec<_>>(),
            "fatal": self.fatal,
            "ended": self.ended,
        })
    }

    /// One human-readable paragraph.
    pub fn summary(&self) -> String {
        let ms = |v: &[i64], p| percentile(v, p).map_or("-".to_owned(), |x| format!("{x}"));
        let mut s = format!(
            "watched {:.1}s: first frame after {}, glass-to-glass p50 {} / p95 {} / max {} ms \
             ({} frames, {} unreadable), PDT latency p50 {} / p95 {} ms; {} stalls ({:.2}s); \
             {} switches; {} parts ({} hinted), {} segments, {} playlists ({} blocking, {} delta); \
             {:.1} MB; {} errors",
            self.seconds,
            self.ttff
                .map_or("-".into(), |d| format!("{} ms", d.as_millis())),
            ms(&self.visual_latency_ms, 0.5),
            ms(&self.visual_latency_ms, 0.95),
            ms(&self.visual_latency_ms, 1.0),
            self.frames,
            self.unreadable_frames,
            ms(&self.pdt_latency_ms, 0.5),
            ms(&self.pdt_latency_ms, 0.95),
            self.stalls.len(),
            self.stall_secs(),
            self.switches.len(),
            self.requests.parts + self.requests.hinted_parts,
            self.requests.hinted_parts,
            self.requests.segments,
            self.requests.playlists,
            self.requests.blocking_playlists,
            self.requests.delta_playlists,
            self.bytes as f64 / 1e6,
            self.errors.len()
        );
        if let Some(f) = &self.fatal {
            s.push_str(&format!("; FATAL: {f}"));
        }
        s
    }
}

/// A fetched body with its timing.
struct Fetched {
    status: u16,
    body: Vec<u8>,
    /// First to last byte (seconds): the transfer, without the wait for the first byte.
    transfer: f64,
    /// When each piece of the body arrived, and its size.
    arrivals: Vec<(Instant, usize)>,
    done: Instant,
}

impl Fetched {
    /// Bytes that arrived after `t`, and over how long (from `t` to the last byte).
    fn after(&self, t: Instant) -> (u64, f64) {
        let bytes: usize = self
            .arrivals
            .iter()
            .filter(|(at, _)| *at > t)
            .map(|(_, n)| n)
            .sum();
        let last = self.arrivals.last().map_or(t, |(at, _)| *at);
        (
            bytes as u64,
            last.saturating_duration_since(t).as_secs_f64(),
        )
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Fetched, String> {
    let mut r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = r.status().as_u16();
    let mut body = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("{url}: body: {e}"))? {
        if body.len() + chunk.len() > 64 << 20 {
            return Err(format!("{url}: body over 64 MiB"));
        }
        if arrivals.len() < 4096 {
            arrivals.push((Instant::now(), chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    let done = Instant::now();
    Ok(Fetched {
        status,
        body,
        transfer: arrivals
            .first()
            .map_or(0.0, |(f, _)| done.duration_since(*f).as_secs_f64()),
        arrivals,
        done,
    })
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the playlist says about one piece of media the player appended.
#[derive(Debug, Clone, Copy)]
struct Appended {
    timeline: f64,
    /// Video decode time of the first sample (seconds, the rendition's own timeline).
    media_start: Option<f64>,
    pdt_ms: Option<i64>,
    decoder_gen: u64,
}

/// Something to be resolved once the playhead shows it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    pos: f64,
    /// Capture time (visual code; `None` for a frame without a readable code) or PDT, Unix ms.
    stamp_ms: Option<i64>,
    /// Not shown before this (seconds on the player clock): when it left the decoder.
    ready: f64,
    /// PDT at that position, for the visual-vs-PDT comparison (frames only).
    pdt_ms: Option<i64>,
    frame: bool,
}

struct Current {
    variant: usize,
    url: Url,
    playlist: MediaPlaylist,
    init_uri: Option<String>,
    track: Option<VideoTrack>,
}

struct Player {
    cfg: PlayerConfig,
    client: reqwest::Client,
    variants: Vec<Variant>,
    urls: Vec<Url>,
    abr: Abr,
    t0: Instant,
    unix0_ms: i64,
    playback: Playback,
    report: Report,
    cur: Option<Current>,
    next: (u64, usize),
    decoder: Option<Decoder>,
    decoder_gen: u64,
    /// The decoder generation's ffmpeg pts minus media time, set by its first frame.
    pts_offset: Option<f64>,
    appended: Vec<Appended>,
    pending: Vec<Pending>,
    pending_switch: Option<Switch>,
    /// After a switch: media before this PDT is already buffered (trim the overlap).
    trim_until_pdt: Option<i64>,
    end_pdt_ms: Option<i64>,
    last_progress: Instant,
    last_probe: f64,
    variant_since: f64,
}

impl Player {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn error(&mut self, e: String) {
        tracing::debug!(error = %e, "player error");
        if self.report.errors.len() < 1000 {
            self.report.errors.push(e);
        }
    }

    fn with_sid(&self, url: &Url) -> Url {
        let mut u = url.clone();
        if let Some(sid) = &self.cfg.session_id {
            if !u.query_pairs().any(|(k, _)| k == "fcsid") {
                u.query_pairs_mut().append_pair("fcsid", sid);
            }
        }
        u
    }

    fn blocking_url(&self, url: &Url, msn: u64, part: Option<usize>, skip: bool) -> Url {
        let mut u = self.with_sid(url);
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("_HLS_msn", &msn.to_string());
            if let Some(p) = part {
                q.append_pair("_HLS_part", &p.to_string());
            }
            if skip {
                q.append_pair("_HLS_skip", "YES");
            }
        }
        u
    }

    async fn get_playlist(&mut self, url: &Url) -> Result<MediaPlaylist, (u16, String)> {
        self.report.requests.playlists += 1;
        let f = fetch(&self.client, url.as_str())
            .await
            .map_err(|e| (0, e))?;
        self.report.bytes += f.body.len() as u64;
        if f.status != 200 {
            return Err((f.status, format!("{url} → {}", f.status)));
        }
        MediaPlaylist::parse(&String::from_utf8_lossy(&f.body)).map_err(|e| (0, e.to_string()))
    }

    /// Loads variant `v`: its playlist (through `via` if given: a blocking URL from a
    /// rendition report), and its init segment.
    async fn load_variant(&mut self, v: usize, via: Option<Url>) -> Result<(), (u16, String)> {
        let url = self.urls[v].clone();
        let req = via.unwrap_or_else(|| self.with_sid(&url));
        let playlist = self.get_playlist(&req).await?;
        self.cur = Some(Current {
            variant: v,
            url,
            playlist,
            init_uri: None,
            track: None,
        });
        Ok(())
    }

    /// Fetches the init segment the segment `msn` needs, if not the one in use; restarts the
    /// decoder on a new one.
    async fn ensure_init(&mut self, msn: u64) -> Result<(), (u16, String)> {
        let Some(cur) = &self.cur else {
            return Ok(());
        };
        // A segment not listed yet (a hinted part's) uses the map in force at the end.
        let Some(map) = cur
            .playlist
            .segment(msn)
            .or(cur.playlist.segments.last())
            .and_then(|s| s.map.clone())
        else {
            return Ok(());
        };
        if cur.init_uri.as_deref() == Some(map.as_str()) {
            return Ok(());
        }
        let url = cur
            .url
            .join(&map)
            .map_err(|e| (0, format!("init URI {map}: {e}")))?;
        self.report.requests.inits += 1;
        let f = fetch(&self.client, url.as_str())
            .await
            .map_err(|e| (0, e))?;
        self.report.bytes += f.body.len() as u64;
        if f.status != 200 {
            return Err((f.status, format!("{url} → {}", f.status)));
        }
        let track = match mp4::video_track(&f.body) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(format!("{url}: {e}"));
                None
            }
        };
        if let Some(cur) = &mut self.cur {
            cur.init_uri = Some(map);
            cur.track = track;
        }
        self.restart_decoder(Some(f.body));
        Ok(())
    }

    /// Ends the current decoder, taking its last frames; a decoder that fell behind (input
    /// dropped) is an error.
    fn finish_decoder(&mut self) {
        if let Some(d) = self.decoder.take() {
            let overruns = d.overruns;
            let gen = self.decoder_gen;
            for f in d.finish() {
                self.on_frame(gen, f);
            }
            if overruns > 0 {
                self.error(format!("decoder fell behind: {overruns} chunks dropped"));
            }
        }
    }

    fn restart_decoder(&mut self, init: Option<Vec<u8>>) {
        self.finish_decoder();
        self.decoder_gen += 1;
        self.pts_offset = None;
        if !self.cfg.decode {
            return;
        }
        match Decoder::start() {
            Ok(mut d) => {
                if let Some(init) = init {
                    d.feed(init);
                }
                self.decoder = Some(d);
            }
            Err(e) => self.error(format!("decoder: {e}")),
        }
    }

    /// Maps a decoded frame onto the timeline and queues it to be shown.
    fn on_frame(&mut self, gen: u64, f: DecodedFrame) {
        self.report.frames += 1;
        let code = f.code_ms;
        if code.is_none() {
            self.report.unreadable_frames += 1;
        }
        let Some(pts) = f.pts else { return };
        let ours = |a: &&Appended| a.decoder_gen == gen && a.media_start.is_some();
        if self.pts_offset.is_none() {
            // The decoder's first frame is the first sample of the first part it was fed.
            let Some(first) = self.appended.iter().find(ours) else {
                return;
            };
            self.pts_offset = Some(pts - first.media_start.unwrap_or(0.0));
        }
        let media = pts - self.pts_offset.unwrap_or(0.0);
        // The part this frame came from: the latest of this decoder's that starts before it.
        let Some(a) = self
            .appended
            .iter()
            .rev()
            .filter(ours)
            .find(|a| a.media_start.is_some_and(|s| s <= media + 0.001))
        else {
            return;
        };
        let into = (media - a.media_start.unwrap_or(media)).max(0.0);
        tracing::trace!(pts, media, part_start = ?a.media_start, timeline = a.timeline, into, ?code, "frame");
        let ready = f.at.saturating_duration_since(self.t0).as_secs_f64();
        self.pending.push(Pending {
            pos: a.timeline + into,
            stamp_ms: code.map(|c| c as i64),
            ready,
            pdt_ms: a.pdt_ms.map(|p| p + (into * 1000.0) as i64),
            frame: true,
        });
    }

    /// Resolves what the playhead has shown by now.
    fn settle(&mut self) {
        let now = self.now();
        self.playback.tick(now);
        let mut frames = Vec::new();
        if let Some(d) = &self.decoder {
            frames.extend(d.frames.try_iter());
        }
        let gen = self.decoder_gen;
        for f in frames {
            self.on_frame(gen, f);
        }
        let unix0 = self.unix0_ms;
        let pb = &self.playback;
        let report = &mut self.report;
        let decode = self.cfg.decode;
        let first_run = pb.first_position();
        self.pending.retain(|p| {
            let Some(shown) = pb.shown_at(p.pos) else {
                // Before where playback started: seeked past, never shown.
                return first_run.is_none_or(|from| p.pos >= from - 1e-6);
            };
            tracing::trace!(
                pos = p.pos,
                shown,
                ready = p.ready,
                stamp = ?p.stamp_ms,
                unix0,
                frame = p.frame,
                "shown"
            );
            let shown = shown.max(p.ready);
            if shown > now {
                return true;
            }
            let shown_ms = unix0 + (shown * 1000.0) as i64;
            if p.frame && decode && report.ttff.is_none() {
                report.ttff = Some(Duration::from_secs_f64(shown));
            }
            if report.visual_latency_ms.len() + report.pdt_latency_ms.len() > 4_000_000 {
                return false; // a day of frames is plenty for percentiles
            }
            match (p.frame, p.stamp_ms) {
                (true, Some(stamp)) => {
                    report.visual_latency_ms.push(shown_ms - stamp);
                    report.shown_frames.push((stamp as u64, shown_ms));
                    if let Some(pdt) = p.pdt_ms {
                        report.visual_minus_pdt_ms.push(pdt - stamp);
                    }
                }
                (false, Some(pdt)) => report.pdt_latency_ms.push(shown_ms - pdt),
                _ => {}
            }
            false
        });
        if let Some(p) = &self.cfg.progress {
            let variant = self
                .cur
                .as_ref()
                .map_or("-", |c| self.variants[c.variant].uri.as_str());
            let line = format!(
                "{:5.1}s  {}  buffer {:.2}s  glass-to-glass {} ms  stalls {}  parts {}  errors {}",
                now,
                variant,
                self.playback.buffer(now),
                self.report
                    .visual_latency_ms
                    .last()
                    .map_or("-".to_owned(), |l| l.to_string()),
                self.playback.stalls.len() + usize::from(self.playback.stalled()),
                self.report.requests.parts + self.report.requests.hinted_parts,
                self.report.errors.len()
            );
            *p.lock().unwrap_or_else(|e| e.into_inner()) = line;
        }
        // Unbounded growth guard: anything a minute old is not going to be shown.
        if self.pending.len() > 20_000 {
            self.pending.drain(..10_000);
        }
    }

    /// Adds a fetched part or segment `(msn, part)` (`part` = None: whole segment) to the
    /// buffer and the decoder.
    fn append(&mut self, msn: u64, part: Option<usize>, body: Vec<u8>, at_edge: bool) {
        let Some(cur) = &self.cur else { return };
        let pl = &cur.playlist;
        let seg = pl.segment(msn);
        let secs = match part {
            Some(p) => seg.and_then(|s| s.parts.get(p)).map(|p| p.duration),
            None => seg.and_then(|s| s.duration),
        }
        .unwrap_or(0.0);
        if part.unwrap_or(0) == 0 && seg.is_some_and(|s| s.discontinuity) {
            self.report.discontinuities += 1;
        }
        let pdt = pl.part_date_time_ms(msn, part.unwrap_or(0));
        let media_start = cur
            .track
            .and_then(|t| mp4::video_run(&body, t).ok().flatten())
            .map(|r| r.start_secs);
        // After a switch, skip what the previous variant already buffered.
        let mut add = secs;
        let mut skip_into = 0.0;
        if let (Some(trim), Some(p)) = (self.trim_until_pdt, pdt) {
            let overlap = ((trim - p) as f64 / 1000.0).clamp(0.0, secs);
            add -= overlap;
            skip_into = overlap;
            if p + (secs * 1000.0) as i64 >= trim {
                self.trim_until_pdt = None;
            }
        }
        let now = self.now();
        let timeline = self.playback.buffered_end() - skip_into;
        tracing::debug!(
            msn,
            ?part,
            secs,
            timeline,
            ?pdt,
            ?media_start,
            buffer = self.playback.buffer(now),
            stalled = self.playback.stalled(),
            "append"
        );
        self.appended.push(Appended {
            timeline,
            media_start,
            pdt_ms: pdt,
            decoder_gen: self.decoder_gen,
        });
        if self.appended.len() > 4096 {
            self.appended.drain(..2048);
        }
        if let Some(p) = pdt {
            if add > 0.0 {
                self.pending.push(Pending {
                    pos: timeline + skip_into,
                    stamp_ms: Some(p + (skip_into * 1000.0) as i64),
                    ready: now,
                    pdt_ms: None,
                    frame: false,
                });
            }
            self.end_pdt_ms = Some(p + (secs * 1000.0) as i64);
        }
        self.playback.append(now, add, at_edge);
        self.note_start();
        self.report.bytes += body.len() as u64;
        if let Some(d) = &mut self.decoder {
            d.feed(body);
        }
        self.last_progress = Instant::now();
    }

    /// Without a decoder, the first frame is shown when playback starts.
    fn note_start(&mut self) {
        if self.report.ttff.is_none() && !self.cfg.decode {
            if let Some(t) = self.playback.started_at() {
                self.report.ttff = Some(Duration::from_secs_f64(t));
            }
        }
    }

    /// Where to start in the current playlist: `PART-HOLD-BACK` behind the last listed part,
    /// on an independent part (or three target durations back without parts).
    fn start_point(pl: &MediaPlaylist) -> Option<((u64, usize), f64)> {
        let parts: Vec<(u64, usize, f64, bool)> = pl
            .segments
            .iter()
            .flat_map(|s| {
                s.parts
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (s.msn, i, p.duration, p.independent))
            })
            .collect();
        if !parts.is_empty() {
            let hold = if pl.part_hold_back > 0.0 {
                pl.part_hold_back
            } else {
                3.0 * pl.part_target
            };
            let mut behind = 0.0;
            let mut i = parts.len();
            while i > 0 && behind < hold - 1e-6 {
                i -= 1;
                behind += parts[i].2;
            }
            // Fetch from an independent part at or before, and seek past what lies before
            // the hold-back point (decoded, not shown).
            let start = (0..=i).rev().find(|&k| parts[k].3).unwrap_or(i);
            let seek: f64 = parts[start..i].iter().map(|p| p.2).sum();
            return Some(((parts[start].0, parts[start].1), seek));
        }
        let complete: Vec<u64> = pl
            .segments
            .iter()
            .filter(|s| s.uri.is_some())
            .map(|s| s.msn)
            .collect();
        let back = complete.len().saturating_sub(3);
        complete.get(back).map(|&m| ((m, 0), 0.0))
    }

    /// The first part to fetch in a new variant's playlist after a switch: the last independent
    /// part that starts at or before the buffered end (by PDT), else the aligned MSN.
    fn switch_point(&self, pl: &MediaPlaylist) -> (u64, usize) {
        if let Some(want) = self.end_pdt_ms {
            let mut best = None;
            for s in &pl.segments {
                for (i, p) in s.parts.iter().enumerate() {
                    if !p.independent {
                        continue;
                    }
                    if let Some(t) = pl.part_date_time_ms(s.msn, i) {
                        if t <= want + 50 {
                            best = Some((s.msn, i));
                        }
                    }
                }
                if s.parts.is_empty() && s.uri.is_some() {
                    if let Some(t) = pl.part_date_time_ms(s.msn, 0) {
                        if t <= want + 50 {
                            best = Some((s.msn, 0));
                        }
                    }
                }
            }
            if let Some(b) = best {
                return b;
            }
            // The new variant is behind: wait for its next part.
            return pl.next_part();
        }
        self.next
    }

    async fn switch(&mut self, s: Switch) -> Result<(), (u16, String)> {
        let now = self.now();
        let from_uri = self.variants[s.from].uri.clone();
        let to_uri = self.variants[s.to].uri.clone();
        tracing::info!(
            from = %from_uri, to = %to_uri, reason = s.reason.as_str(),
            estimate_bps = s.estimate_bps.round(), buffer = s.buffer, "switch"
        );
        self.report
            .variant_seconds
            .push((from_uri.clone(), now - self.variant_since));
        self.variant_since = now;
        self.report.switches.push(SwitchRecord {
            at: now,
            from: from_uri,
            to: to_uri,
            reason: s.reason,
            estimate_bps: s.estimate_bps,
            buffer: s.buffer,
        });
        // A blocking request for the target's last part from its rendition report.
        let target = self.urls[s.to].clone();
        let via = self
            .cur
            .as_ref()
            .and_then(|c| report_for(&c.url, &c.playlist, &target))
            .map(|(msn, part)| self.blocking_url(&target, msn, part, false));
        if via.is_some() {
            self.report.requests.blocking_playlists += 1;
        }
        self.load_variant(s.to, via).await?;
        if let Some(cur) = &self.cur {
            self.next = self.switch_point(&cur.playlist);
        }
        self.trim_until_pdt = self.end_pdt_ms;
        let msn = self.next.0;
        if let Some(c) = &mut self.cur {
            c.init_uri = None; // always a fresh decoder on a new variant
        }
        self.ensure_init(msn).await
    }

    /// Handles a failed request for variant `v`: a variant that is gone (404, 410, 403, 5xx)
    /// is set aside and playback fails over to the nearest working one.
    async fn on_failure(&mut self, v: usize, status: u16, e: String) {
        self.error(e);
        let mut v = v;
        let mut status = status;
        // A failover target may be gone too: try each variant at most once.
        for _ in 0..self.variants.len() {
            if !matches!(status, 404 | 410 | 403 | 500..=599) || self.variants.len() < 2 {
                break;
            }
            let now = self.now();
            let buffer = self.playback.buffer(now);
            let Some(s) = self.abr.failed(now, v, buffer) else {
                break;
            };
            match self.switch(s).await {
                Ok(()) => return,
                Err((st, e)) => {
                    self.error(e);
                    (v, status) = (s.to, st);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    /// The variant being played (or being switched to).
    fn playing_variant(&self) -> usize {
        self.cur.as_ref().map_or(self.abr.current(), |c| c.variant)
    }

    async fn run(&mut self) {
        let deadline = self.t0 + self.cfg.duration;
        let v = self.abr.current();
        if let Err((_, e)) = self.load_variant(v, None).await {
            self.report.fatal = Some(e);
            return;
        }
        // Start PART-HOLD-BACK behind the edge (once most of it is in: parts are rarely
        // exactly PART-TARGET); resume after a stall with a part target's worth.
        if let Some(c) = &self.cur {
            let pl = &c.playlist;
            let target = if pl.part_target > 0.0 {
                pl.part_target
            } else {
                pl.target_duration as f64
            };
            let hold = if pl.part_hold_back > 0.0 {
                pl.part_hold_back
            } else {
                3.0 * target
            };
            self.playback = Playback::new(hold * 0.9, target);
        }
        let Some((start, seek)) = self
            .cur
            .as_ref()
            .and_then(|c| Self::start_point(&c.playlist))
        else {
            self.report.fatal = Some("the playlist lists nothing to play".into());
            return;
        };
        self.playback.start_at(seek);
        self.next = start;
        if let Err((_, e)) = self.ensure_init(start.0).await {
            self.report.fatal = Some(e);
            return;
        }
        if self.decoder.is_none() && self.cfg.decode {
            self.restart_decoder(None);
        }
        while Instant::now() < deadline {
            self.settle();
            if self.last_progress.elapsed() > self.cfg.fatal_after {
                self.report.fatal =
                    Some(format!("nothing playable for {:?}", self.cfg.fatal_after));
                break;
            }
            let now = self.now();
            let buffer = self.playback.buffer(now);
            let playing = self.playback.started_at().is_some();
            if self.cfg.pin.is_none() && self.pending_switch.is_none() && playing {
                self.pending_switch = self.abr.decide(now, buffer);
            }
            if let Some(s) = self.pending_switch {
                let urgent = matches!(s.reason, SwitchReason::Emergency | SwitchReason::Failover);
                if urgent || self.next.1 == 0 {
                    self.pending_switch = None;
                    if let Err((status, e)) = self.switch(s).await {
                        self.on_failure(s.to, status, e).await;
                    }
                    continue;
                }
            }
            let Some(cur) = &self.cur else { break };
            let pl = &cur.playlist;
            let (msn, part) = self.next;
            if let Some(first) = pl.segments.first() {
                if msn < first.msn {
                    // Fell out of the window: start again near the live edge.
                    let restart = Self::start_point(pl).map_or((first.msn, 0), |s| s.0);
                    self.error(format!(
                        "fell behind the window ({msn}.{part} < {}); jumping to {}.{}",
                        first.msn, restart.0, restart.1
                    ));
                    self.next = restart;
                    continue;
                }
            }
            if let Some((m, p)) = pl.resolve(msn, part) {
                if let Err((status, e)) = self.ensure_init(m).await {
                    self.on_failure(self.playing_variant(), status, e).await;
                    continue;
                }
                let Some(cur) = &self.cur else { break };
                let pl = &cur.playlist;
                // Whole segments when a later segment is complete too; parts near the edge.
                let later_complete = pl.segment(m + 1).is_some_and(|s| s.uri.is_some());
                let seg = pl.segment(m);
                let (uri, whole) = match seg {
                    Some(s) if p == 0 && later_complete && s.uri.is_some() => (s.uri.clone(), true),
                    Some(s) => (s.parts.get(p).map(|x| x.uri.clone()), false),
                    None => (None, false),
                };
                let Some(uri) = uri else {
                    self.next = (m + 1, 0);
                    continue;
                };
                let after = if whole { (m + 1, 0) } else { pl.after(m, p) };
                let Ok(url) = cur.url.join(&uri) else {
                    self.error(format!("bad URI {uri}"));
                    self.next = after;
                    continue;
                };
                match fetch(&self.client, url.as_str()).await {
                    Ok(f) if f.status == 200 => {
                        if whole {
                            self.report.requests.segments += 1;
                        } else {
                            self.report.requests.parts += 1;
                        }
                        self.abr.sample(f.body.len() as u64, f.transfer);
                        self.append(m, if whole { None } else { Some(p) }, f.body, false);
                        self.next = after;
                    }
                    Ok(f) => {
                        let v = self.playing_variant();
                        self.on_failure(v, f.status, format!("{url} → {}", f.status))
                            .await
                    }
                    Err(e) => self.on_failure(self.playing_variant(), 0, e).await,
                }
                continue;
            }
            // Not listed yet: wait for it with a blocking reload, fetching the hinted part
            // meanwhile.
            if pl.endlist {
                self.report.ended = true;
                break;
            }
            // The hinted part needs its init segment (after a switch, the new variant's).
            if let Err((status, e)) = self.ensure_init(msn).await {
                let v = self.playing_variant();
                self.on_failure(v, status, e).await;
                continue;
            }
            let now = self.now();
            self.playback.at_live_edge(now);
            self.note_start();
            let Some(cur) = &self.cur else { break };
            let pl = &cur.playlist;
            let hint = (self.cfg.preload_hints && pl.next_part() == (msn, part))
                .then(|| pl.preload_hint.clone())
                .flatten()
                .and_then(|h| cur.url.join(&h).ok());
            let skip = self.cfg.delta_updates && pl.can_skip_until > 0.0;
            let reload = self.blocking_url(&cur.url, msn, Some(part), skip);
            self.report.requests.blocking_playlists += 1;
            self.report.requests.playlists += 1;
            if skip {
                self.report.requests.delta_playlists += 1;
            }
            let probe = self.probe_url(now);
            let client = self.client.clone();
            let hint_fetch = async {
                match &hint {
                    Some(u) => Some(fetch(&client, u.as_str()).await),
                    None => None,
                }
            };
            let (reloaded, hinted, probed) =
                tokio::join!(fetch(&self.client, reload.as_str()), hint_fetch, async {
                    match &probe {
                        Some(u) => Some(fetch(&client, u.as_str()).await),
                        None => None,
                    }
                });
            if let Some(Ok(f)) = probed {
                self.report.requests.probes += 1;
                self.report.bytes += f.body.len() as u64;
                if f.status == 200 {
                    self.abr.sample(f.body.len() as u64, f.transfer);
                }
            }
            // The reload returns when the hinted part is complete on the server: what of the
            // part arrived after that came as fast as the link allows.
            if let (Ok(r), Some(Ok(h))) = (&reloaded, &hinted) {
                if h.status == 200 {
                    let (bytes, secs) = h.after(r.done);
                    self.abr.sample(bytes, secs);
                }
            }
            let new_pl = match reloaded {
                Ok(f) if f.status == 200 => {
                    self.report.bytes += f.body.len() as u64;
                    match MediaPlaylist::parse(&String::from_utf8_lossy(&f.body)) {
                        Ok(p) => p,
                        Err(e) => {
                            let v = self.playing_variant();
                            self.on_failure(v, 0, format!("{reload}: {e}")).await;
                            continue;
                        }
                    }
                }
                Ok(f) => {
                    let v = self.playing_variant();
                    self.on_failure(v, f.status, format!("{reload} → {}", f.status))
                        .await;
                    continue;
                }
                Err(e) => {
                    self.on_failure(self.playing_variant(), 0, e).await;
                    continue;
                }
            };
            let Some(cur) = &mut self.cur else { break };
            let merged = match cur.playlist.apply_delta(new_pl) {
                Ok(p) => p,
                Err(e) => {
                    // Refetch the whole playlist.
                    let url = cur.url.clone();
                    self.error(e.to_string());
                    match self.get_playlist(&self.with_sid(&url)).await {
                        Ok(p) => p,
                        Err((s, e)) => {
                            self.on_failure(self.playing_variant(), s, e).await;
                            continue;
                        }
                    }
                }
            };
            if let Some(cur) = &mut self.cur {
                cur.playlist = merged;
            }
            match hinted {
                Some(Ok(f)) if f.status == 200 => {
                    self.report.requests.hinted_parts += 1;
                    let listed = self
                        .cur
                        .as_ref()
                        .and_then(|c| c.playlist.resolve(msn, part))
                        == Some((msn, part));
                    if listed {
                        self.append(msn, Some(part), f.body, true);
                        if let Some(c) = &self.cur {
                            self.next = c.playlist.after(msn, part);
                        }
                    }
                }
                Some(Ok(f)) => self.error(format!("hinted part → {}", f.status)),
                Some(Err(e)) => self.error(e),
                None => {}
            }
            // A server that answers a blocking reload without the part asked for (one that
            // ignores `_HLS_msn`, or a stream that ended) must not turn this into polling.
            let answered = self
                .cur
                .as_ref()
                .is_some_and(|c| c.playlist.endlist || c.playlist.resolve(msn, part).is_some());
            if !answered {
                let wait = self
                    .cur
                    .as_ref()
                    .map_or(0.5, |c| c.playlist.part_target.clamp(0.1, 1.0));
                tracing::debug!(msn, part, "blocking reload returned without the part");
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            }
        }
        self.settle();
    }

    /// A recent complete part to measure the link with, when a probe is due.
    fn probe_url(&mut self, now: f64) -> Option<Url> {
        if self.cfg.pin.is_some() || !self.cfg.preload_hints || self.variants.len() < 2 {
            return None;
        }
        let cur = self.cur.as_ref()?;
        let top = self.variants.iter().map(|v| v.bandwidth).max()?;
        if self.variants[cur.variant].bandwidth >= top
            || now - self.last_probe < self.cfg.probe_interval
        {
            return None;
        }
        self.last_probe = now;
        let (m, p) = cur.playlist.last_part()?;
        let uri = &cur.playlist.segment(m)?.parts.get(p)?.uri;
        cur.url.join(uri).ok()
    }
}

/// The `(LAST-MSN, LAST-PART)` that `playlist` (fetched from `url`) reports for the rendition
/// at `target`, if it carries an `EXT-X-RENDITION-REPORT` for it.
fn report_for(url: &Url, playlist: &MediaPlaylist, target: &Url) -> Option<(u64, Option<usize>)> {
    playlist.rendition_reports.iter().find_map(|r| {
        let u = url.join(&r.uri).ok()?;
        (u.path() == target.path() && u.host() == target.host() && u.port() == target.port())
            .then_some((r.last_msn, r.last_part))
    })
}

/// Plays `url` (a multivariant or media playlist) as configured and reports what a viewer got.
pub async fn play(url: &str, cfg: PlayerConfig) -> Report {
    let t0 = Instant::now();
    let unix0_ms = unix_ms_now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_default();
    let mut report = Report::default();
    let top = match Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            report.fatal = Some(format!("{url}: {e}"));
            return report;
        }
    };
    // The top-level playlist: multivariant or media.
    let (variants, urls) = match fetch(&client, top.as_str()).await {
        Ok(f) if f.status == 200 => {
            report.bytes += f.body.len() as u64;
            let text = String::from_utf8_lossy(&f.body).into_owned();
            if MultivariantPlaylist::is_multivariant(&text) {
                report.requests.multivariant += 1;
                match MultivariantPlaylist::parse(&text) {
                    Ok(m) => {
                        let urls: Result<Vec<Url>, _> =
                            m.variants.iter().map(|v| top.join(&v.uri)).collect();
                        match urls {
                            Ok(u) => (m.variants, u),
                            Err(e) => {
                                report.fatal = Some(format!("variant URI: {e}"));
                                return report;
                            }
                        }
                    }
                    Err(e) => {
                        report.fatal = Some(e.to_string());
                        return report;
                    }
                }
            } else {
                let v = Variant {
                    uri: top.path().rsplit('/').next().unwrap_or("").to_owned(),
                    bandwidth: 0,
                    resolution: None,
                    codecs: None,
                };
                (vec![v], vec![top.clone()])
            }
        }
        Ok(f) => {
            report.fatal = Some(format!("{url} → {}", f.status));
            return report;
        }
        Err(e) => {
            report.fatal = Some(e);
            return report;
        }
    };
    let bandwidths: Vec<u64> = variants.iter().map(|v| v.bandwidth).collect();
    let start = match cfg.pin {
        Some(p) => p.min(variants.len() - 1),
        None => {
            let mut order: Vec<usize> = (0..variants.len()).collect();
            order.sort_by_key(|&i| bandwidths[i]);
            order
                .iter()
                .rev()
                .copied()
                .find(|&i| bandwidths[i] as f64 <= cfg.start_bandwidth as f64 * cfg.abr.safety)
                .or_else(|| order.first().copied())
                .unwrap_or(0)
        }
    };
    let mut player = Player {
        abr: Abr::new(cfg.abr.clone(), bandwidths, start),
        playback: Playback::new(0.0, 0.0),
        cfg,
        client,
        variants,
        urls,
        t0,
        unix0_ms,
        report,
        cur: None,
        next: (0, 0),
        decoder: None,
        decoder_gen: 0,
        pts_offset: None,
        appended: Vec::new(),
        pending: Vec::new(),
        pending_switch: None,
        trim_until_pdt: None,
        end_pdt_ms: None,
        last_progress: Instant::now(),
        last_probe: 0.0,
        variant_since: 0.0,
    };
    player.run().await;
    let now = player.now();
    player.finish_decoder();
    player.settle();
    let mut report = std::mem::take(&mut player.report);
    report.seconds = now;
    report.stalls = player.playback.stalls.clone();
    if let Some(since) = player.playback.stalled_since() {
        report.stalls.push(now - since);
    }
    if let Some(c) = &player.cur {
        report.variant_seconds.push((
            player.variants[c.variant].uri.clone(),
            now - player.variant_since,
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(text: &str) -> MediaPlaylist {
        MediaPlaylist::parse(text).unwrap()
    }

    /// The start point is PART-HOLD-BACK behind the last part, fetched from the independent
    /// part before it, with the media in between seeked past.
    #[test]
    fn starts_hold_back_behind_the_edge_on_an_independent_part() {
        let pl = playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n#EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:5\n\
             #EXT-X-PART:DURATION=0.5,URI=\"5.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"5.1.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.2.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.3.m4s\"\n#EXTINF:2.0,\n5.m4s\n\
             #EXT-X-PART:DURATION=0.5,URI=\"6.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"6.1.m4s\"\n",
        );
        // 1.0 s back from the end of 6.1 is the start of 6.0, itself independent.
        assert_eq!(Player::start_point(&pl), Some(((6, 0), 0.0)));
        let pl = playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n#EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:5\n\
             #EXT-X-PART:DURATION=0.5,URI=\"5.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"5.1.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.2.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.3.m4s\"\n",
        );
        // 1.0 s back is 5.2: fetch from 5.0, seek 1.0 s in.
        assert_eq!(Player::start_point(&pl), Some(((5, 0), 1.0)));
        // Without parts: three segments back.
        let pl = playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2,\n1.ts\n#EXTINF:2,\n2.ts\n#EXTINF:2,\n3.ts\n#EXTINF:2,\n4.ts\n");
        assert_eq!(Player::start_point(&pl), Some(((2, 0), 0.0)));
        assert_eq!(Player::start_point(&playlist("#EXTM3U\n")), None);
    }

    /// A switch asks the target for the part its rendition report names.
    #[test]
    fn finds_the_rendition_report_of_the_target() {
        let pl = playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-PART:DURATION=0.5,URI=\"5.0.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=5,LAST-PART=0\n\
             #EXT-X-RENDITION-REPORT:URI=\"../240p/index.m3u8\",LAST-MSN=4,LAST-PART=3\n",
        );
        let url = Url::parse("http://edge:8081/live/cam/720p/index.m3u8?fcsid=x").unwrap();
        let target = Url::parse("http://edge:8081/live/cam/240p/index.m3u8").unwrap();
        assert_eq!(report_for(&url, &pl, &target), Some((4, Some(3))));
        let other = Url::parse("http://edge:8081/live/other/240p/index.m3u8").unwrap();
        assert_eq!(report_for(&url, &pl, &other), None);
    }

    #[test]
    fn reports_percentiles_and_json() {
        assert_eq!(percentile::<i64>(&[], 0.5), None);
        assert_eq!(percentile(&[30, 10, 20], 0.5), Some(20));
        assert_eq!(percentile(&[30, 10, 20], 1.0), Some(30));
        let r = Report {
            visual_latency_ms: vec![1000, 1100, 1200],
            ..Default::default()
        };
        let j = r.to_json();
        assert_eq!(j["latency_ms"]["p50"], 1100);
        assert_eq!(j["stalls"]["total_s"], 0.0);
        assert!(r.summary().contains("p50 1100"));
    }
}
