//! The player's async driver: it executes the decisions of [`super::plan`] against a server —
//! HTTP via reqwest (playlists, init segments, parts, segments, preload hints, probes), tokio
//! for timing and for running a blocking reload beside the hinted part — and feeds what
//! arrives to the playback model ([`crate::playback`]), ABR samples ([`crate::abr`]) and,
//! optionally, a real decoder ([`crate::decode`]) whose frames it maps onto the timeline to
//! measure glass-to-glass latency into the [`Report`]. Entry point: [`play`].
//!
//! It does not decide what to fetch next (where to start, parts or segments, which reload
//! directives, when a switch is due, where a switch lands, when to probe): that is the pure
//! planner's. It does not own the report's shape or summary ([`super::report`]).

use super::plan::{self, MediaFetch, Planner, Policy, Reload, Step};
use super::report::{Report, SwitchRecord};
use crate::abr::{Abr, AbrConfig, Switch};
use crate::decode::{DecodedFrame, Decoder};
use crate::mp4::{self, VideoTrack};
use crate::playback::Playback;
use crate::playlist::{MediaPlaylist, MultivariantPlaylist, Variant};
use reqwest::Url;
use std::ops::ControlFlow;
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
    /// Position and decision state: what to fetch next is decided there.
    plan: Planner,
    decoder: Option<Decoder>,
    decoder_gen: u64,
    /// The decoder generation's ffmpeg pts minus media time, set by its first frame.
    pts_offset: Option<f64>,
    appended: Vec<Appended>,
    pending: Vec<Pending>,
    last_progress: Instant,
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
        let skip_into = self.plan.overlap(pdt, secs);
        let add = secs - skip_into;
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
            self.plan.end_pdt_ms = Some(p + (secs * 1000.0) as i64);
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
        self.plan.switched(self.cur.as_ref().map(|c| &c.playlist));
        let msn = self.plan.next.0;
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
            if !plan::fails_over(status) || self.variants.len() < 2 {
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
            let (start_buffer, resume_buffer) = plan::buffer_goals(&c.playlist);
            self.playback = Playback::new(start_buffer, resume_buffer);
        }
        let Some((start, seek)) = self
            .cur
            .as_ref()
            .and_then(|c| plan::start_point(&c.playlist))
        else {
            self.report.fatal = Some("the playlist lists nothing to play".into());
            return;
        };
        self.playback.start_at(seek);
        self.plan.next = start;
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
            let step = self.plan.step(
                self.cur.as_ref().map(|c| &c.playlist),
                &mut self.abr,
                now,
                buffer,
                playing,
            );
            let flow = match step {
                Step::Switch(s) => {
                    if let Err((status, e)) = self.switch(s).await {
                        self.on_failure(s.to, status, e).await;
                    }
                    ControlFlow::Continue(())
                }
                Step::Stop => ControlFlow::Break(()),
                Step::Rejoin {
                    from: (msn, part),
                    window_start,
                    to,
                } => {
                    self.error(format!(
                        "fell behind the window ({msn}.{part} < {window_start}); jumping to {}.{}",
                        to.0, to.1
                    ));
                    ControlFlow::Continue(())
                }
                Step::Skip { msn, to } => {
                    if !self.init_for(msn).await {
                        ControlFlow::Continue(())
                    } else if self.cur.is_none() {
                        ControlFlow::Break(())
                    } else {
                        self.plan.next = to;
                        ControlFlow::Continue(())
                    }
                }
                Step::Fetch(f) => {
                    if self.init_for(f.msn).await {
                        self.fetch_media(f).await
                    } else {
                        ControlFlow::Continue(())
                    }
                }
                Step::Ended => {
                    self.report.ended = true;
                    ControlFlow::Break(())
                }
                Step::Reload(r) => self.await_edge(r).await,
            };
            if flow.is_break() {
                break;
            }
        }
        self.settle();
    }

    /// Makes sure the init segment the segment `msn` needs is in place before its media is
    /// fetched: `false` if that failed (handled by [`Self::on_failure`]; go round again).
    async fn init_for(&mut self, msn: u64) -> bool {
        match self.ensure_init(msn).await {
            Ok(()) => true,
            Err((status, e)) => {
                self.on_failure(self.playing_variant(), status, e).await;
                false
            }
        }
    }

    /// Fetches a listed part or whole segment and appends it. Breaks when there is no current
    /// variant to play.
    async fn fetch_media(&mut self, f: MediaFetch) -> ControlFlow<()> {
        let Some(cur) = &self.cur else {
            return ControlFlow::Break(());
        };
        let MediaFetch {
            msn: m,
            part,
            uri,
            after,
        } = f;
        let Ok(url) = cur.url.join(&uri) else {
            self.error(format!("bad URI {uri}"));
            self.plan.next = after;
            return ControlFlow::Continue(());
        };
        match fetch(&self.client, url.as_str()).await {
            Ok(f) if f.status == 200 => {
                if part.is_none() {
                    self.report.requests.segments += 1;
                } else {
                    self.report.requests.parts += 1;
                }
                self.abr.sample(f.body.len() as u64, f.transfer);
                self.append(m, part, f.body, false);
                self.plan.next = after;
            }
            Ok(f) => {
                let v = self.playing_variant();
                self.on_failure(v, f.status, format!("{url} → {}", f.status))
                    .await
            }
            Err(e) => self.on_failure(self.playing_variant(), 0, e).await,
        }
        ControlFlow::Continue(())
    }

    /// Waits at the live edge for the part `r` names: a blocking reload, side by side with a
    /// fetch of the hinted part (and a link probe when one is due). Breaks when there is no
    /// current variant to play.
    async fn await_edge(&mut self, r: Reload) -> ControlFlow<()> {
        let Reload {
            msn,
            part,
            skip,
            hint,
        } = r;
        // The hinted part needs its init segment (after a switch, the new variant's).
        if let Err((status, e)) = self.ensure_init(msn).await {
            let v = self.playing_variant();
            self.on_failure(v, status, e).await;
            return ControlFlow::Continue(());
        }
        let now = self.now();
        self.playback.at_live_edge(now);
        self.note_start();
        let Some(cur) = &self.cur else {
            return ControlFlow::Break(());
        };
        let hint = hint.and_then(|h| cur.url.join(&h).ok());
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
                        return ControlFlow::Continue(());
                    }
                }
            }
            Ok(f) => {
                let v = self.playing_variant();
                self.on_failure(v, f.status, format!("{reload} → {}", f.status))
                    .await;
                return ControlFlow::Continue(());
            }
            Err(e) => {
                self.on_failure(self.playing_variant(), 0, e).await;
                return ControlFlow::Continue(());
            }
        };
        let Some(cur) = &mut self.cur else {
            return ControlFlow::Break(());
        };
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
                        return ControlFlow::Continue(());
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
                let after = self
                    .cur
                    .as_ref()
                    .and_then(|c| plan::hinted_next(&c.playlist, msn, part));
                if let Some(after) = after {
                    self.append(msn, Some(part), f.body, true);
                    self.plan.next = after;
                }
            }
            Some(Ok(f)) => self.error(format!("hinted part → {}", f.status)),
            Some(Err(e)) => self.error(e),
            None => {}
        }
        // A server that answers a blocking reload without the part asked for (one that
        // ignores `_HLS_msn`, or a stream that ended) must not turn this into polling.
        let wait = match &self.cur {
            Some(c) => plan::reload_backoff(&c.playlist, msn, part),
            None => Some(0.5),
        };
        if let Some(wait) = wait {
            tracing::debug!(msn, part, "blocking reload returned without the part");
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        ControlFlow::Continue(())
    }

    /// A recent complete part to measure the link with, when a probe is due.
    fn probe_url(&mut self, now: f64) -> Option<Url> {
        let cur = self.cur.as_ref()?;
        let uri = self
            .plan
            .probe(now, &self.variants, cur.variant, &cur.playlist)?;
        cur.url.join(&uri).ok()
    }
}

/// The `(LAST-MSN, LAST-PART)` that `playlist` (fetched from `url`) reports for the rendition
/// at `target`, if it carries an `EXT-X-RENDITION-REPORT` for it.
fn report_for(url: &Url, playlist: &MediaPlaylist, target: &Url) -> Option<(u64, Option<usize>)> {
    plan::rendition_report(playlist, |uri| {
        url.join(uri).is_ok_and(|u| {
            u.path() == target.path() && u.host() == target.host() && u.port() == target.port()
        })
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
    let start = plan::start_variant(&bandwidths, cfg.pin, cfg.start_bandwidth, cfg.abr.safety);
    let policy = Policy {
        pinned: cfg.pin.is_some(),
        preload_hints: cfg.preload_hints,
        delta_updates: cfg.delta_updates,
        probe_interval: cfg.probe_interval,
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
        plan: Planner::new(policy),
        decoder: None,
        decoder_gen: 0,
        pts_offset: None,
        appended: Vec::new(),
        pending: Vec::new(),
        last_progress: Instant::now(),
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
}
