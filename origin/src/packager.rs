//! Frames → CMAF chunks, parts and segments for one rendition. Pure: frames and the wall clock
//! go in, [`Packaged`] events come out.
//!
//! Buffering rule: every video frame is emitted at once as its own CMAF chunk (`moof`+`mdat`),
//! together with the audio that arrived since the previous video frame; so a part being written
//! can be streamed to viewers frame by frame. Audio is held at most until the next video frame
//! (or until the part or the publisher ends).
//!
//! Cutting rules (all in the 90 kHz output timeline):
//! - A segment starts at a video keyframe once the current one is at least half the configured
//!   target duration long; it is force-cut (without a keyframe) only if it would otherwise exceed
//!   the advertised `EXT-X-TARGETDURATION` when rounded.
//! - A part ends *as soon as its last frame arrives*: after each frame the packager predicts
//!   whether the next frame would overflow `PART-TARGET` (or is the next expected keyframe) and,
//!   if so, closes the part right away with the last sample's duration estimated from the frame
//!   cadence. So a part's publish delay does not include waiting for the next frame.
//! - Parts are therefore ≤ PART-TARGET, and all but the last of a segment are as long as whole
//!   frames allow (≥ 85 % of PART-TARGET at common frame rates).
//!
//! Timeline: output timestamps start at 0 and stay continuous across publisher reconnects and
//! takeovers (each new publisher is rebased at its first keyframe to where the previous one
//! ended); a reconnect or codec change marks the next segment as a discontinuity.
//!
//! What the publisher's clock does on a live connection (see `docs` in the README, "Timeline"):
//! - A *jump* — a frame whose time lies more than [`JUMP_BACK`] before the stream's position, or
//!   more than [`JUMP_AHEAD`] beyond it plus the wall-clock time since — is a *splice*: the
//!   open part and segment close, the output is rebased at the next video keyframe to where it
//!   ended, and that segment carries EXT-X-DISCONTINUITY. Audio that jumps while video still
//!   flows is dropped until video splices. Counted in [`TimelineStats`].
//! - Video that pauses while audio flows: after [`VIDEO_IDLE`] of audio ahead of the last
//!   video frame, *audio drives* parts and segments (audio-only parts, INDEPENDENT=YES,
//!   segments cut on time); video comes back at its next keyframe, which starts a segment.
//!   Video frames that arrive without a keyframe after such a pause are dropped and counted.
//! - A hole in the output (nothing at all for more than [`GAP`]) marks the next segment as a
//!   discontinuity; a segment never spans it.
//! - EXT-X-PROGRAM-DATE-TIME is the wall clock at the generation's first frame plus media
//!   time. No frame can have been captured after it arrived, so a frame that arrives more than
//!   [`EARLY`] before the time its PDT would say moves the anchor back to its arrival, from the
//!   next segment on: encoders start with a burst (x264 and the pipe from the capture deliver
//!   the first frame late and the following ones on time), and without this the whole stream's
//!   PDT would sit that much in the future, hiding that much latency from every player. When
//!   the PDT falls behind the wall clock by more than [`DRIFT`] without catching up, as a slow
//!   clock does (a burst after a stall catches up and is left alone), the segment is
//!   re-anchored to the wall clock. Both are logged and counted.

use crate::fmp4::{self, InitConfig, Sample, TrackRun, AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use bytes::Bytes;
use media::fanout::StreamEventKind;
use media::{AacConfig, AvcConfig, CodecConfig, Frame, Track, VIDEO_TIMESCALE};
use std::time::{Duration, SystemTime};

const TICKS: i64 = VIDEO_TIMESCALE as i64;

/// A frame this far before the stream's position is a backward jump (a splice).
pub const JUMP_BACK: i64 = TICKS;
/// A frame this far beyond the position plus the wall-clock time since is a forward jump.
pub const JUMP_AHEAD: i64 = 3 * TICKS;
/// Audio this far ahead of the last video frame means video has paused: audio drives.
pub const VIDEO_IDLE: i64 = TICKS / 2;
/// A hole in the output longer than this is marked as a discontinuity.
pub const GAP: i64 = TICKS;
/// How long audio waits for the first video keyframe before it starts the stream alone.
pub const VIDEO_LATE: Duration = Duration::from_secs(1);
/// PDT drift from the wall clock (seconds) beyond which segments are re-anchored (half the
/// 1 s that players' latency targeting and our glass-to-glass figures can tolerate).
pub const DRIFT: f64 = 0.5;
/// A frame arriving this much earlier than its PDT moves the PDT anchor back (arrival jitter
/// below it leaves the PDT alone, so consecutive segments' PDTs stay contiguous).
pub const EARLY: Duration = Duration::from_millis(100);

/// 90 kHz ticks as a duration (0 if negative).
fn ticks_to_duration(t: i64) -> Duration {
    let nanos = u128::from(t.max(0).unsigned_abs()) * 1_000_000_000 / TICKS as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The frame cadence from recent decode-time steps: the mean of those near the median, so a
/// hole (frames lost, skipped or dropped by the encoder) does not stretch every estimate that
/// follows — part closing, keyframe prediction and the last sample's duration — while the
/// uneven steps of millisecond timestamps (33, 33, 34 ms) still average out exactly.
fn frame_step(steps: &std::collections::VecDeque<i64>) -> i64 {
    let mut sorted: Vec<i64> = steps.iter().copied().collect();
    sorted.sort_unstable();
    let Some(&median) = sorted.get(sorted.len() / 2) else {
        return 1;
    };
    let near: Vec<i64> = sorted
        .into_iter()
        .filter(|&d| d * 2 >= median && d * 2 <= median * 3)
        .collect();
    let n = near.len().max(1) as i64;
    ((near.iter().sum::<i64>() + n / 2) / n).max(1)
}

/// What the packager did about the publisher's timeline (monotonic counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineStats {
    /// Jumps turned into splices.
    pub splices: u64,
    /// Frames that could not be placed (after a jump, or video without a keyframe after a
    /// pause).
    pub dropped: u64,
    /// Segments whose PDT was re-anchored to the wall clock.
    pub reanchors: u64,
}

/// Fixed per stream.
#[derive(Debug, Clone, Copy)]
pub struct PackagerConfig {
    /// PART-TARGET in 90 kHz ticks.
    pub part_target: i64,
    /// The smallest EXT-X-TARGETDURATION advertised (seconds); raised to the first GOP's
    /// rounded length if that is longer.
    pub min_target_duration: u32,
}

impl PackagerConfig {
    pub fn new(part_target: Duration, min_target_duration: u32) -> Self {
        PackagerConfig {
            part_target: (part_target.as_secs_f64() * TICKS as f64).round() as i64,
            min_target_duration: min_target_duration.max(1),
        }
    }
}

/// What the packager produced, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Packaged {
    /// A new init segment version (the first, or after a codec change).
    Init {
        version: u32,
        bytes: Bytes,
        config: InitConfig,
    },
    /// The first segment closed: EXT-X-TARGETDURATION is now fixed for the stream.
    TargetDuration(u32),
    SegmentStart {
        discontinuity: bool,
        init_version: u32,
        program_date_time: SystemTime,
        /// 90 kHz output timestamp of the segment's first video frame.
        start: i64,
    },
    PartStart {
        independent: bool,
    },
    /// Bytes appended to the current part.
    Chunk(Bytes),
    /// Duration in 90 kHz ticks.
    PartEnd {
        duration: i64,
    },
    /// Duration in 90 kHz ticks (the sum of its parts).
    SegmentEnd {
        duration: i64,
    },
}

#[derive(Debug)]
struct SegState {
    start: i64,
    parts_total: i64,
}

#[derive(Debug)]
struct PartState {
    start: i64,
}

/// The packager for one rendition. See the module docs for its rules.
#[derive(Debug)]
pub struct Packager {
    cfg: PackagerConfig,
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    init: Option<InitConfig>,
    init_version: u32,
    generation: u64,
    /// Added to source presentation times, video and audio (None: waiting for this
    /// generation's first keyframe).
    offset: Option<i64>,
    /// Added to video DTS on top of `offset`: the composition offset of the generation's first
    /// keyframe, so that keyframes decode when they are presented (PTS = DTS, B-frames get
    /// negative composition offsets as in CMAF) and every segment's media starts exactly where
    /// the playlist says it does, video and audio alike.
    video_shift: i64,
    /// End of the last part (90 kHz): a part or segment whose first frame lies within half a
    /// frame of it starts there, so the playlist's durations add up to the media's.
    part_end: Option<i64>,
    audio_offset: i64,
    /// End of the output timeline so far (90 kHz); where the next generation starts.
    timeline_end: i64,
    audio_end: Option<i64>,
    pending_discontinuity: bool,
    any_segment: bool,
    generation_wall: (SystemTime, i64),
    seg: Option<SegState>,
    part: Option<PartState>,
    pending_audio: Vec<Sample>,
    pending_audio_start: i64,
    est: i64,
    /// Recent DTS steps; `est` is the mean of those near their median (a 30-step window
    /// averages out RTMP's millisecond rounding exactly at 30 fps: 33, 33, 34 ms → 3000
    /// ticks; a hole does not count).
    steps: std::collections::VecDeque<i64>,
    last_video: Option<i64>,
    last_keyframe: Option<i64>,
    /// The last two GOP lengths; a keyframe is predicted only while they agree.
    gops: [Option<i64>; 2],
    /// The segment was closed early because a keyframe was predicted for the next frame.
    expect_keyframe: bool,
    sequence: u32,
    target_duration: Option<u32>,
    /// Latest output position placed (90 kHz, any track) and the wall clock then.
    pos: Option<(i64, SystemTime)>,
    /// End of the last closed segment (90 kHz): a later start beyond it + GAP is a hole.
    last_seg_end: Option<i64>,
    /// Audio drives parts and segments (video paused or not started).
    audio_drive: bool,
    /// Video was interrupted: it resumes at its next keyframe.
    video_wait_key: bool,
    /// When audio first arrived while this generation waited for a video keyframe.
    first_audio_wall: Option<SystemTime>,
    /// PDT minus the wall clock at the last segment start (seconds).
    drift: f64,
    /// Another rendition's timeline this one follows (see [`Packager::follow`]).
    lead: Option<LeadTimeline>,
    stats: TimelineStats,
    out: Vec<Packaged>,
}

/// Where a rendition's timeline is: for `generation`, output time = source time (90 kHz) +
/// `offset`, and the program date-time of output time `anchor.1` is `anchor.0`. A rendition
/// made from the same source (a transcoded rung, a copy) follows the source rendition's, so
/// every rendition presents the same picture at the same output time and date-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadTimeline {
    pub generation: u64,
    pub offset: i64,
    pub anchor: (SystemTime, i64),
}

impl Packager {
    pub fn new(cfg: PackagerConfig) -> Packager {
        Packager {
            cfg,
            video: None,
            audio: None,
            init: None,
            init_version: 0,
            generation: 0,
            offset: None,
            video_shift: 0,
            part_end: None,
            audio_offset: 0,
            timeline_end: 0,
            audio_end: None,
            pending_discontinuity: false,
            any_segment: false,
            generation_wall: (SystemTime::UNIX_EPOCH, 0),
            seg: None,
            part: None,
            pending_audio: Vec::new(),
            pending_audio_start: 0,
            est: TICKS / 30,
            steps: std::collections::VecDeque::with_capacity(30),
            last_video: None,
            last_keyframe: None,
            gops: [None, None],
            expect_keyframe: false,
            sequence: 0,
            target_duration: None,
            pos: None,
            last_seg_end: None,
            audio_drive: false,
            video_wait_key: false,
            first_audio_wall: None,
            drift: 0.0,
            lead: None,
            stats: TimelineStats::default(),
            out: Vec::new(),
        }
    }

    /// What was done about the publisher's timeline so far.
    pub fn stats(&self) -> TimelineStats {
        self.stats
    }

    /// PDT minus the wall clock at ingest at the last segment start, seconds (+ = ahead).
    pub fn drift(&self) -> f64 {
        self.drift
    }

    pub fn target_duration(&self) -> Option<u32> {
        self.target_duration
    }

    pub fn video_config(&self) -> Option<&AvcConfig> {
        self.video.as_ref()
    }

    pub fn audio_config(&self) -> Option<&AacConfig> {
        self.audio.as_ref()
    }

    /// Estimated video frame duration (90 kHz ticks).
    pub fn frame_duration(&self) -> i64 {
        self.est
    }

    /// This rendition's timeline, once the current generation has started.
    pub fn timeline(&self) -> Option<LeadTimeline> {
        Some(LeadTimeline {
            generation: self.generation,
            offset: self.offset?,
            anchor: self.generation_wall,
        })
    }

    /// Follows `lead` (the source rendition's [`Packager::timeline`], given again whenever it
    /// may have changed): while the generations match, this rendition maps source time with
    /// the lead's offset and dates segments from the lead's anchor, instead of its own first
    /// keyframe and arrival times.
    pub fn follow(&mut self, lead: LeadTimeline) {
        self.lead = Some(lead);
    }

    fn following(&self) -> Option<LeadTimeline> {
        self.lead.filter(|l| l.generation == self.generation)
    }

    /// Feeds one hub event (of any generation: stale ones are ignored).
    pub fn push(
        &mut self,
        generation: u64,
        event: &StreamEventKind,
        now: SystemTime,
    ) -> Vec<Packaged> {
        if generation < self.generation {
            return Vec::new();
        }
        match event {
            StreamEventKind::PublisherStarted { .. } => {
                if generation > self.generation {
                    self.end_generation();
                    self.generation = generation;
                }
            }
            StreamEventKind::PublisherGone => {
                if generation == self.generation {
                    self.end_generation();
                }
            }
            StreamEventKind::Config(CodecConfig::Avc(c)) => {
                if self.video.as_ref() != Some(c) {
                    self.video = Some(c.clone());
                    self.config_changed();
                }
            }
            StreamEventKind::Config(CodecConfig::Aac(c)) => {
                if self.audio.as_ref() != Some(c) {
                    self.audio = Some(c.clone());
                    self.config_changed();
                }
            }
            StreamEventKind::Frame(f) if generation == self.generation => match f.track {
                Track::Video => self.video_frame(f, now),
                Track::Audio => self.audio_frame(f, now),
            },
            StreamEventKind::Frame(_) => {}
        }
        std::mem::take(&mut self.out)
    }

    /// The stream ended: closes the open part and segment.
    pub fn finish(&mut self) -> Vec<Packaged> {
        self.end_generation();
        std::mem::take(&mut self.out)
    }

    fn config_changed(&mut self) {
        if self.init.is_some() && self.offset.is_some() {
            // Mid-stream codec change: the next keyframe starts a new segment with a new init.
            self.end_generation();
        }
    }

    fn end_generation(&mut self) {
        if self.part.is_some() {
            self.flush_audio();
            let end = self.media_end();
            self.close_part(end);
        }
        self.close_segment();
        if self.offset.take().is_some() {
            let end = self.media_end();
            self.timeline_end = self.timeline_end.max(end);
            if self.any_segment {
                self.pending_discontinuity = true;
            }
        }
        self.last_video = None;
        self.last_keyframe = None;
        self.gops = [None, None];
        self.expect_keyframe = false;
        self.pos = None;
        self.audio_drive = false;
        self.video_wait_key = false;
        self.first_audio_wall = None;
    }

    /// Where the media placed so far ends (90 kHz): the end of the last video frame, or of the
    /// audio when audio drove.
    fn media_end(&self) -> i64 {
        let video = self.last_video.map(|d| d + self.est);
        let audio = self
            .audio_end90()
            .filter(|_| self.audio_drive || video.is_none());
        match (video, audio) {
            (Some(v), Some(a)) => v.max(a),
            (v, a) => v.or(a).unwrap_or(self.timeline_end),
        }
    }

    fn audio_end90(&self) -> Option<i64> {
        let rate = i64::from(self.audio.as_ref()?.sample_rate.max(1));
        Some(self.audio_end? * TICKS / rate)
    }

    /// Some(jump size) if a frame at output time `t` (90 kHz) cannot follow the stream's
    /// position: see the module docs.
    fn jump(&self, t: i64, now: SystemTime) -> Option<i64> {
        let (p, at) = self.pos?;
        let elapsed = now
            .duration_since(at)
            .map_or(0, |d| (d.as_secs_f64() * TICKS as f64) as i64);
        (t < p - JUMP_BACK || t > p + elapsed + JUMP_AHEAD).then_some(t - p)
    }

    fn advance(&mut self, t: i64, now: SystemTime) {
        match self.pos {
            Some((p, _)) if p >= t => {}
            _ => self.pos = Some((t, now)),
        }
        self.settle_anchor(t, now);
    }

    /// A frame at output time `t` that arrives [`EARLY`] or more before the wall clock its PDT
    /// implies proves the anchor late: the anchor moves to this arrival (see the module docs).
    fn settle_anchor(&mut self, t: i64, now: SystemTime) {
        if self.following().is_some() {
            return; // the lead's anchor rules
        }
        let (wall, at) = self.generation_wall;
        if t < at {
            return;
        }
        let implied = wall + ticks_to_duration(t - at);
        if let Ok(early) = implied.duration_since(now) {
            if early >= EARLY {
                tracing::info!(
                    early_ms = early.as_millis() as u64,
                    "program date-time moved back: frames arrive earlier than the first one did"
                );
                self.stats.reanchors += 1;
                self.generation_wall = (now, t);
            }
        }
    }

    /// A jump on a live connection: close what is open; the next keyframe rebases.
    fn splice(&mut self, by: i64, track: &'static str) {
        tracing::warn!(
            jump_secs = by as f64 / TICKS as f64,
            track,
            "publisher clock jumped: splicing (discontinuity at the next keyframe)"
        );
        self.stats.splices += 1;
        self.end_generation();
    }

    /// Starts the output timeline of this generation so that source time `source90` (90 kHz)
    /// lands at `timeline_end`; emits a new init if the codec configs changed. False without
    /// any codec config (nothing to put in an init segment yet).
    fn rebase(&mut self, source90: i64, now: SystemTime) -> bool {
        if self.video.is_none() && self.audio.is_none() {
            return false;
        }
        let o = match self.following() {
            Some(lead) => {
                self.generation_wall = lead.anchor;
                lead.offset
            }
            None => {
                self.generation_wall = (now, self.timeline_end);
                self.timeline_end - source90
            }
        };
        self.offset = Some(o);
        if let Some(a) = &self.audio {
            self.audio_offset = o * i64::from(a.sample_rate) / TICKS;
        }
        self.first_audio_wall = None;
        let config = InitConfig {
            video: self.video.clone(),
            audio: self.audio.clone(),
        };
        if self.init.as_ref() != Some(&config) {
            if self.init.is_some() {
                self.init_version += 1;
                self.pending_discontinuity = true;
            }
            self.out.push(Packaged::Init {
                version: self.init_version,
                bytes: fmp4::init_segment(&config),
                config: config.clone(),
            });
            self.init = Some(config);
        }
        true
    }

    fn max_segment(&self) -> i64 {
        // A segment must round to at most EXT-X-TARGETDURATION.
        let td = i64::from(self.target_duration.unwrap_or(10));
        td * TICKS + TICKS / 2 - 1
    }

    fn min_segment(&self) -> i64 {
        i64::from(self.cfg.min_target_duration) * TICKS / 2
    }

    fn video_frame(&mut self, f: &Frame, now: SystemTime) {
        if self.video.is_none() {
            return;
        }
        if let Some(o) = self.offset {
            if let Some(by) = self.jump(f.dts.ticks() + o + self.video_shift, now) {
                self.splice(by, "video");
            }
        }
        let offset = match self.offset {
            Some(o) => o,
            None => {
                if !f.keyframe {
                    if self.any_segment {
                        self.stats.dropped += 1;
                    }
                    return; // wait for a keyframe to (re)start
                }
                // The keyframe's presentation lands at the end of the timeline and it decodes
                // then too.
                self.video_shift = (f.pts.ticks() - f.dts.ticks()).clamp(0, TICKS);
                self.rebase(f.pts.ticks(), now);
                self.offset.unwrap_or(self.timeline_end - f.pts.ticks())
            }
        };
        let mut d = f.dts.ticks() + offset + self.video_shift;
        let pts = f.pts.ticks() + offset;
        if let Some(last) = self.last_video {
            if d > last + self.est + VIDEO_IDLE {
                // Video was away (audio drove meanwhile, or nothing came): it resumes here,
                // at a keyframe, in a segment of its own.
                if self.part.is_some() {
                    self.flush_audio();
                    let end = self.media_end();
                    self.close_part(end);
                }
                self.close_segment();
                self.audio_drive = false;
                self.video_wait_key = true;
                self.gops = [None, None];
                self.expect_keyframe = false;
                self.last_keyframe = None;
            }
        }
        if self.audio_drive && self.video_wait_key {
            // Audio drives while video waits for its keyframe.
        } else if self.audio_drive {
            // Audio drove (video late or paused briefly): video takes over at a keyframe.
            self.video_wait_key = true;
        }
        if self.video_wait_key {
            if !f.keyframe {
                self.stats.dropped += 1;
                return;
            }
            self.video_wait_key = false;
            if self.audio_drive {
                self.audio_drive = false;
                if self.part.is_some() {
                    self.flush_audio();
                    let end = self
                        .media_end()
                        .min(d)
                        .max(self.part.as_ref().map_or(d, |p| p.start));
                    self.close_part(end);
                }
                self.close_segment();
            }
        }
        self.advance(d, now);
        if let Some(last) = self.last_video {
            if d <= last {
                d = last + 1; // never step back
            } else {
                let delta = d - last;
                if delta <= TICKS {
                    if self.steps.len() == 30 {
                        self.steps.pop_front();
                    }
                    self.steps.push_back(delta);
                    self.est = frame_step(&self.steps);
                }
            }
        }
        self.last_video = Some(d);

        match &self.seg {
            None => {
                if std::mem::take(&mut self.expect_keyframe) && !f.keyframe {
                    // The predicted keyframe did not come (irregular GOP): this segment starts
                    // without one; stop predicting until the GOP is regular again.
                    tracing::debug!("predicted keyframe did not arrive");
                    self.gops = [None, None];
                }
                self.start_segment(d, now)
            }
            Some(seg) => {
                let dur = d - seg.start;
                if f.keyframe && dur >= self.min_segment() {
                    self.cut_segment(d, now);
                } else if dur + self.est > self.max_segment() {
                    tracing::warn!(
                        segment_secs = dur as f64 / TICKS as f64,
                        "no keyframe within the target duration: segment cut without one"
                    );
                    self.cut_segment(d, now);
                } else if let Some(p) = &self.part {
                    if d + self.est - p.start > self.cfg.part_target {
                        self.flush_audio();
                        self.close_part(d);
                    }
                }
            }
        }
        if self.part.is_none() {
            self.part = Some(PartState {
                start: self.contiguous(d),
            });
            self.out.push(Packaged::PartStart {
                independent: f.keyframe,
            });
        }
        let sample = Sample {
            duration: self.est as u32,
            composition_offset: (pts - d).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            keyframe: f.keyframe,
            data: f.data.clone(),
        };
        self.emit_chunk(Some((d, sample)));

        if f.keyframe {
            if let Some(k) = self.last_keyframe {
                self.gops = [Some(d - k), self.gops[0]];
            }
            self.last_keyframe = Some(d);
        }
        // Close the part now if the next frame cannot belong to it; close the segment too if
        // the next frame is the keyframe that will start the next one.
        let next = d + self.est;
        let part_start = self.part.as_ref().map_or(d, |p| p.start);
        let next_overflows = next + self.est - part_start > self.cfg.part_target;
        let next_is_keyframe = match (self.gops, self.last_keyframe, &self.seg) {
            ([Some(g1), Some(g2)], Some(k), Some(seg)) => {
                (g1 - g2).abs() < self.est / 2
                    && (next - (k + g1)).abs() < self.est / 2
                    && next - seg.start >= self.min_segment()
            }
            _ => false,
        };
        if next_is_keyframe {
            self.close_part(next);
            self.close_segment();
            self.expect_keyframe = true;
        } else if next_overflows {
            self.close_part(next);
        }
    }

    fn audio_frame(&mut self, f: &Frame, now: SystemTime) {
        let Some(cfg) = self.audio.clone() else {
            return;
        };
        let rate = i64::from(cfg.sample_rate.max(1));
        let source90 = f.dts.rescale(VIDEO_TIMESCALE);
        if let Some(o) = self.offset {
            if let Some(by) = self.jump(source90 + o, now) {
                let video_flowing = self.last_video.is_some() && !self.audio_drive;
                if video_flowing {
                    // Video has not jumped (yet): it decides where the splice is.
                    self.stats.dropped += 1;
                    return;
                }
                self.splice(by, "audio");
            }
        }
        if self.offset.is_none() {
            // Before the generation's first keyframe: audio waits for video a moment, then
            // starts the stream alone (a source whose video starts late, or after a splice).
            let waited = *self.first_audio_wall.get_or_insert(now);
            let late = now.duration_since(waited).unwrap_or_default() >= VIDEO_LATE;
            if !(late && self.rebase(source90, now)) {
                return;
            }
            self.audio_drive = true;
            self.video_wait_key = true;
        }
        // Between parts (or between a segment closed early and its successor's keyframe) audio
        // waits here and goes out with the next video frame's chunk.
        let frame = i64::from(cfg.samples_per_frame());
        let mut d = f.dts.ticks() + self.audio_offset;
        if let Some(end) = self.audio_end {
            if d < end - frame / 2 {
                return; // overlaps what was already sent
            }
            if d < end + frame / 2 {
                d = end; // rounding jitter: stay contiguous
            }
        }
        if d < 0 {
            return;
        }
        let placed_end = self.media_end().max(self.audio_end90().unwrap_or(0));
        if self.seg.is_some() && d * TICKS / rate > placed_end + GAP {
            // A hole (nothing at all for more than GAP, video skipped to its next keyframe or
            // absent): what is open ends where the media did; the next segment is marked.
            if self.part.is_some() {
                self.flush_audio();
                self.close_part(placed_end);
            }
            self.close_segment();
        }
        if !self.pending_audio.is_empty() {
            let pending_end = self.pending_audio_start + frame * self.pending_audio.len() as i64;
            if d != pending_end {
                self.flush_audio();
            }
        }
        if self.pending_audio.is_empty() {
            self.pending_audio_start = d;
        }
        self.pending_audio.push(Sample {
            duration: frame as u32,
            composition_offset: 0,
            keyframe: true,
            data: f.data.clone(),
        });
        self.audio_end = Some(d + frame);
        let d90 = d * TICKS / rate;
        self.advance(d90, now);
        let video_idle = self.video_wait_key
            || self
                .last_video
                .is_none_or(|v| d90 > v + self.est + VIDEO_IDLE);
        if video_idle {
            if !self.audio_drive {
                tracing::debug!("no video: audio drives the parts");
            }
            self.audio_drive = true;
            self.drive_audio(rate, frame, now);
        }
    }

    /// Audio drives: the pending audio goes out now; parts and segments are cut on audio time.
    fn drive_audio(&mut self, rate: i64, frame: i64, now: SystemTime) {
        let frame90 = frame * TICKS / rate;
        let seg_target =
            i64::from(self.target_duration.unwrap_or(self.cfg.min_target_duration)) * TICKS;
        // The audio that waited for video (up to VIDEO_IDLE of it) can span several parts:
        // it goes out in parts that fit PART-TARGET.
        loop {
            let start = self.pending_audio_start * TICKS / rate;
            if self.seg.is_none() {
                self.start_segment(start, now);
            }
            let part_start = match &self.part {
                Some(p) => p.start,
                None => {
                    self.part = Some(PartState { start });
                    self.out.push(Packaged::PartStart { independent: true });
                    start
                }
            };
            let limit = (part_start + self.cfg.part_target) * rate / TICKS;
            let fit =
                usize::try_from((limit - self.pending_audio_start) / frame.max(1)).unwrap_or(0);
            if fit >= self.pending_audio.len() {
                break;
            }
            let rest = self.pending_audio.split_off(fit.max(1));
            let taken = self.pending_audio.len() as i64;
            self.emit_chunk(None);
            self.pending_audio = rest;
            self.pending_audio_start += taken * frame;
            let end = self.pending_audio_start * TICKS / rate;
            self.close_part(end);
            let seg_start = self.seg.as_ref().map_or(end, |s| s.start);
            if end + frame90 - seg_start > seg_target {
                self.close_segment();
            }
        }
        self.emit_chunk(None);
        let Some(end) = self.audio_end90() else {
            return;
        };
        let seg_start = self.seg.as_ref().map_or(end, |s| s.start);
        let part_start = self.part.as_ref().map_or(end, |p| p.start);
        if end + frame90 - seg_start > seg_target {
            self.close_part(end);
            self.close_segment();
        } else if end + frame90 - part_start > self.cfg.part_target {
            self.close_part(end);
            // Segments are whole parts: close it with this part when one more would not fit
            // (no sliver of a last part).
            if end - seg_start + self.cfg.part_target / 2 >= seg_target {
                self.close_segment();
            }
        }
    }

    fn flush_audio(&mut self) {
        if !self.pending_audio.is_empty() && self.part.is_some() {
            self.emit_chunk(None);
        }
    }

    fn emit_chunk(&mut self, video: Option<(i64, Sample)>) {
        let audio = std::mem::take(&mut self.pending_audio);
        let video_samples: Vec<Sample> = video.iter().map(|(_, s)| s.clone()).collect();
        let mut runs = Vec::with_capacity(2);
        if let Some((d, _)) = &video {
            runs.push(TrackRun {
                track_id: VIDEO_TRACK_ID,
                base_decode_time: (*d).max(0) as u64,
                samples: &video_samples,
            });
        }
        if !audio.is_empty() {
            runs.push(TrackRun {
                track_id: AUDIO_TRACK_ID,
                base_decode_time: self.pending_audio_start.max(0) as u64,
                samples: &audio,
            });
        }
        if runs.is_empty() {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        self.out
            .push(Packaged::Chunk(fmp4::chunk(self.sequence, &runs)));
    }

    /// Where a part or segment whose first video frame decodes at `d` starts: at the end of
    /// the previous part when `d` is within half a frame of it (a part closed on a predicted
    /// frame time, and the frame came a little early or late), so the advertised timeline
    /// has neither overlaps nor slivers between parts; else at `d`.
    fn contiguous(&self, d: i64) -> i64 {
        match self.part_end {
            Some(e) if (d - e).abs() <= self.est / 2 => e,
            _ => d,
        }
    }

    fn close_part(&mut self, end: i64) {
        if let Some(p) = self.part.take() {
            let duration = (end - p.start).max(1);
            self.part_end = Some(p.start + duration);
            if let Some(seg) = &mut self.seg {
                seg.parts_total += duration;
            }
            self.out.push(Packaged::PartEnd { duration });
        }
    }

    fn cut_segment(&mut self, d: i64, now: SystemTime) {
        self.flush_audio();
        self.close_part(d);
        self.close_segment();
        self.start_segment(d, now);
    }

    fn close_segment(&mut self) {
        if let Some(seg) = self.seg.take() {
            self.last_seg_end = Some(seg.start + seg.parts_total);
            if self.target_duration.is_none() {
                let secs = (seg.parts_total as f64 / TICKS as f64).round() as u32;
                let td = secs.max(self.cfg.min_target_duration);
                self.target_duration = Some(td);
                self.out.push(Packaged::TargetDuration(td));
            }
            self.out.push(Packaged::SegmentEnd {
                duration: seg.parts_total,
            });
        }
    }

    fn start_segment(&mut self, d: i64, now: SystemTime) {
        let d = self.contiguous(d);
        if self.last_seg_end.is_some_and(|e| d > e + GAP) {
            self.pending_discontinuity = true; // a hole in the output
        }
        if let Some(lead) = self.following() {
            self.generation_wall = lead.anchor;
        }
        let (mut wall, mut at) = self.generation_wall;
        let mut since = ticks_to_duration(d - at);
        let pdt = wall + since;
        let drift = match pdt.duration_since(now) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        };
        // Ahead of the wall clock (settle_anchor keeps it from being so by more than EARLY), or
        // behind it without catching up since the last segment (a slow clock), beyond the
        // bound: re-anchor. A burst after a stall catches up.
        if self.following().is_some() {
            self.drift = drift;
        } else if drift > DRIFT || (drift < -DRIFT && drift < self.drift + 0.25) {
            tracing::warn!(
                drift_secs = drift,
                "program date-time re-anchored to the wall clock: the publisher's clock drifts"
            );
            self.stats.reanchors += 1;
            self.generation_wall = (now, d);
            (wall, at) = (now, d);
            since = Duration::ZERO;
            self.drift = 0.0;
        } else {
            self.drift = drift;
        }
        let _ = at;
        self.seg = Some(SegState {
            start: d,
            parts_total: 0,
        });
        self.out.push(Packaged::SegmentStart {
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            init_version: self.init_version,
            program_date_time: wall + since,
            start: d,
        });
        self.any_segment = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::fanout::StreamEventKind as K;

    pub(crate) fn avc() -> AvcConfig {
        AvcConfig::parse(Bytes::from_static(include_bytes!(
            "../../media/testdata/avcc_720p_high.bin"
        )))
        .unwrap()
    }

    pub(crate) fn aac() -> AacConfig {
        AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap()
    }

    fn video(ms: i64, key: bool) -> K {
        K::Frame(Frame {
            track: Track::Video,
            dts: media::video_ts(ms * 90),
            pts: media::video_ts(ms * 90 + 6000),
            keyframe: key,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        })
    }

    fn audio(samples: i64) -> K {
        K::Frame(Frame {
            track: Track::Audio,
            dts: media::Timestamp::new(samples, 48_000),
            pts: media::Timestamp::new(samples, 48_000),
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x00]),
        })
    }

    fn start(p: &mut Packager, generation: u64) -> Vec<Packaged> {
        let mut out = p.push(
            generation,
            &K::PublisherStarted {
                peer: "127.0.0.1:1".parse().unwrap(),
                protocol: media::fanout::Protocol::Rtmp,
            },
            SystemTime::UNIX_EPOCH,
        );
        out.extend(p.push(
            generation,
            &K::Config(CodecConfig::Avc(avc())),
            SystemTime::UNIX_EPOCH,
        ));
        out.extend(p.push(
            generation,
            &K::Config(CodecConfig::Aac(aac())),
            SystemTime::UNIX_EPOCH,
        ));
        out
    }

    /// Feeds `secs` of 30 fps video (GOP 2 s, RTMP-style millisecond timestamps) with 48 kHz
    /// audio, starting at `t0_ms`.
    fn feed(p: &mut Packager, generation: u64, t0_ms: i64, secs: i64) -> Vec<Packaged> {
        feed_arriving(p, generation, t0_ms, secs, |_| SystemTime::UNIX_EPOCH)
    }

    /// [`feed`] with each frame arriving at `arrival(its media time in ms)`.
    fn feed_arriving(
        p: &mut Packager,
        generation: u64,
        t0_ms: i64,
        secs: i64,
        arrival: impl Fn(i64) -> SystemTime,
    ) -> Vec<Packaged> {
        let mut out = Vec::new();
        let frames = secs * 30;
        let mut next_audio = 0i64;
        for i in 0..frames {
            let ms = t0_ms + i * 1000 / 30;
            while next_audio * 1000 / 48_000 <= i * 1000 / 30 {
                let a = t0_ms * 48 + next_audio;
                out.extend(p.push(generation, &audio(a), arrival(a / 48)));
                next_audio += 1024;
            }
            out.extend(p.push(generation, &video(ms, i % 60 == 0), arrival(ms)));
        }
        out
    }

    /// An encoder's start-up burst: the first 200 ms of frames arrive together, 450 ms after
    /// the first was captured; the rest on time (±30 ms). The first segment's PDT is the late arrival (nothing better is known yet);
    /// from the second on, no segment's PDT is after its first frame's arrival, and jitter
    /// below EARLY moves nothing.
    #[test]
    fn program_date_time_follows_the_earliest_arrival_not_a_late_first_frame() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let arrival = |ms: i64| {
            let late = if ms < 200 { 450 - ms.min(450) } else { 0 };
            let jitter = (ms * 7919) % 61 - 30;
            t + Duration::from_millis((ms + late + jitter).max(0) as u64)
        };
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 1));
        start(&mut p, 1);
        let mut out = feed_arriving(&mut p, 1, 0, 1, arrival);
        let settled = p.stats().reanchors;
        assert!(settled >= 1, "the burst moved nothing");
        out.extend(feed_arriving(&mut p, 1, 1000, 9, arrival));
        let pdts: Vec<(SystemTime, i64)> = out
            .iter()
            .filter_map(|e| match e {
                Packaged::SegmentStart {
                    program_date_time,
                    start,
                    ..
                } => Some((*program_date_time, *start)),
                _ => None,
            })
            .collect();
        assert!(pdts.len() >= 4, "{pdts:?}");
        let ms = |d: Duration| d.as_millis() as i64;
        assert!((ms(pdts[0].0.duration_since(t).unwrap()) - 450).abs() <= 30);
        for (pdt, start) in &pdts[1..] {
            let media_ms = (start - pdts[0].1) * 1000 / TICKS;
            let arrived = arrival(media_ms);
            let early = ms(arrived.duration_since(*pdt).unwrap_or_default());
            assert!(
                *pdt <= arrived + EARLY,
                "PDT after arrival at {media_ms} ms"
            );
            assert!(
                early <= 100,
                "PDT {early} ms before arrival at {media_ms} ms"
            );
        }
        assert_eq!(p.stats().reanchors, settled, "jitter moved the PDT");
    }

    fn parts(out: &[Packaged]) -> Vec<i64> {
        out.iter()
            .filter_map(|e| match e {
                Packaged::PartEnd { duration } => Some(*duration),
                _ => None,
            })
            .collect()
    }

    /// Checks the LL-HLS part rules on `out` (every part ≤ the target, every part but a
    /// segment's last ≥ 85 % of it, segments = their parts) and returns the segment durations.
    fn check_parts(out: &[Packaged], target: i64, what: &str) -> Vec<i64> {
        let mut in_segment = Vec::new();
        let mut segments = Vec::new();
        for e in out {
            match e {
                Packaged::PartEnd { duration } => in_segment.push(*duration),
                Packaged::SegmentEnd { duration } => {
                    assert_eq!(*duration, in_segment.iter().sum::<i64>(), "{what}");
                    let (last, rest) = in_segment.split_last().unwrap();
                    assert!(*last <= target, "{what}: last part {last} > {target}");
                    for d in rest {
                        assert!(*d <= target, "{what}: part {d} > {target}");
                        assert!(
                            *d * 100 >= target * 85,
                            "{what}: part {d} < 85% of {target}"
                        );
                    }
                    segments.push(*duration);
                    in_segment.clear();
                }
                _ => {}
            }
        }
        segments
    }

    #[test]
    fn parts_respect_part_target_and_segments_follow_gop() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        let mut out = start(&mut p, 1);
        out.extend(feed(&mut p, 1, 0, 10));
        let target = p.cfg.part_target;
        let segments = check_parts(&out, target, "30 fps");
        for d in &segments {
            assert!((*d - 2 * TICKS).abs() < TICKS / 50, "segment {d}");
        }
        let segments = segments.len();
        assert_eq!(
            segments, 5,
            "the last segment closes when its last frame arrives"
        );
        assert_eq!(p.target_duration(), Some(2));
        assert!(out
            .iter()
            .any(|e| matches!(e, Packaged::Init { version: 0, .. })));
        // Once the GOP is regular, the part and the segment that end at a keyframe are closed
        // when their last frame arrives (before the keyframe): chunk, part end, segment end,
        // then the keyframe's segment start.
        let seg_start = out
            .iter()
            .rposition(|e| matches!(e, Packaged::SegmentStart { .. }))
            .unwrap();
        assert!(matches!(out[seg_start - 1], Packaged::SegmentEnd { .. }));
        assert!(matches!(out[seg_start - 2], Packaged::PartEnd { .. }));
        assert!(matches!(out[seg_start - 3], Packaged::Chunk(_)));
        assert!(!parts(&out).is_empty());
    }

    /// Both latency profiles' part targets (0.333 s and 0.21 s) at the common frame rates, with
    /// RTMP's millisecond timestamps and 2 s GOPs: every part within the LL-HLS rules.
    #[test]
    fn part_targets_of_both_profiles_fit_every_common_frame_rate() {
        for target_ms in [333, 210] {
            for (num, den) in [
                (25, 1),
                (30_000, 1001),
                (30, 1),
                (50, 1),
                (60_000, 1001),
                (60, 1),
            ] {
                let what = format!("PART-TARGET {target_ms} ms at {num}/{den} fps");
                let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(target_ms), 2));
                let mut out = start(&mut p, 1);
                let gop = 2 * num / den; // frames in 2 s
                for i in 0..(10 * num / den) {
                    let ms = i * 1000 * den / num;
                    out.extend(p.push(1, &video(ms, i % gop == 0), SystemTime::UNIX_EPOCH));
                }
                let segments = check_parts(&out, p.cfg.part_target, &what);
                assert!(segments.len() >= 4, "{what}: {segments:?}");
            }
        }
    }

    #[test]
    fn reconnect_continues_timeline_with_discontinuity() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        start(&mut p, 1);
        feed(&mut p, 1, 0, 4);
        let out = p.push(1, &K::PublisherGone, SystemTime::UNIX_EPOCH);
        assert!(matches!(out.last(), Some(Packaged::SegmentEnd { .. })));
        let end = p.timeline_end;
        assert!((end - 4 * TICKS).abs() < TICKS / 20);
        // A stale frame from the old generation is ignored after the new one starts.
        let mut out = start(&mut p, 2);
        out.extend(p.push(1, &video(5000, true), SystemTime::UNIX_EPOCH));
        assert!(out.iter().all(|e| !matches!(e, Packaged::Chunk(_))));
        // The new publisher's clock starts anywhere: output continues where it ended.
        let out = feed(&mut p, 2, 777_000, 2);
        match out
            .iter()
            .find(|e| matches!(e, Packaged::SegmentStart { .. }))
        {
            Some(Packaged::SegmentStart {
                discontinuity,
                start,
                init_version,
                ..
            }) => {
                assert!(*discontinuity);
                assert_eq!(*start, end);
                assert_eq!(*init_version, 0, "same codec config, same init");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn waits_for_keyframe_and_config() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        assert!(
            p.push(1, &video(0, true), SystemTime::UNIX_EPOCH)
                .is_empty(),
            "no config yet"
        );
        start(&mut p, 1);
        assert!(p
            .push(1, &video(33, false), SystemTime::UNIX_EPOCH)
            .is_empty());
        assert!(p.push(1, &audio(0), SystemTime::UNIX_EPOCH).is_empty());
        let out = p.push(1, &video(66, true), SystemTime::UNIX_EPOCH);
        assert!(matches!(out[0], Packaged::Init { .. }));
        assert!(matches!(out[1], Packaged::SegmentStart { start: 0, .. }));
        assert!(matches!(out[2], Packaged::PartStart { independent: true }));
    }

    #[test]
    fn codec_change_gets_new_init_and_discontinuity() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        start(&mut p, 1);
        feed(&mut p, 1, 0, 3);
        let other = AvcConfig::parse(Bytes::from_static(include_bytes!(
            "../../media/testdata/avcc_180p_high.bin"
        )))
        .unwrap();
        let out = p.push(
            1,
            &K::Config(CodecConfig::Avc(other)),
            SystemTime::UNIX_EPOCH,
        );
        assert!(matches!(out.last(), Some(Packaged::SegmentEnd { .. })));
        let out = p.push(1, &video(3100, true), SystemTime::UNIX_EPOCH);
        assert!(matches!(out[0], Packaged::Init { version: 1, .. }));
        assert!(matches!(
            out[1],
            Packaged::SegmentStart {
                discontinuity: true,
                init_version: 1,
                ..
            }
        ));
    }

    #[test]
    fn an_audio_only_stream_is_packaged_with_parts_cut_on_audio_frames() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut out = p.push(
            1,
            &K::PublisherStarted {
                peer: "127.0.0.1:1".parse().unwrap(),
                protocol: media::fanout::Protocol::Rtmp,
            },
            t0,
        );
        out.extend(p.push(1, &K::Config(CodecConfig::Aac(aac())), t0));
        // 10 s of AAC frames arriving in real time, no video config ever.
        for i in 0..(10 * 48_000 / 1024) {
            let at = t0 + Duration::from_micros(i * 1024 * 1_000_000 / 48_000);
            out.extend(p.push(1, &audio(i as i64 * 1024), at));
        }
        out.extend(p.finish());
        let init = out.iter().find_map(|e| match e {
            Packaged::Init { config, .. } => Some(config.clone()),
            _ => None,
        });
        let init = init.expect("no init segment for an audio-only stream");
        assert!(init.video.is_none() && init.audio.is_some());
        assert_eq!(init.codecs(), "mp4a.40.2");
        let target = p.cfg.part_target;
        let frame = 1024 * TICKS / 48_000;
        let (mut segments, mut parts_in_seg) = (Vec::new(), Vec::new());
        for e in &out {
            match e {
                Packaged::PartStart { independent } => assert!(independent),
                Packaged::PartEnd { duration } => {
                    assert!(*duration <= target, "part of {duration} ticks");
                    parts_in_seg.push(*duration);
                }
                Packaged::SegmentEnd { duration } => {
                    assert_eq!(*duration, parts_in_seg.iter().sum::<i64>());
                    segments.push(std::mem::take(&mut parts_in_seg));
                }
                _ => {}
            }
        }
        // Whole segments (not the last, cut by the end): whole parts, each within a frame of
        // the target, about 2 s in all.
        assert!(segments.len() >= 4, "{} segments", segments.len());
        for seg in &segments[..segments.len() - 1] {
            let total: i64 = seg.iter().sum();
            assert!(
                (total - 2 * TICKS).abs() <= target / 2,
                "segment of {total} ticks"
            );
            for part in seg {
                assert!(*part > target - frame, "short part {part} in {seg:?}");
            }
        }
    }

    /// The video run of a chunk: its tfdt and its first sample's composition offset.
    fn video_run(chunk: &[u8]) -> Option<(u64, i32)> {
        let be32 =
            |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let moof_len = be32(chunk, 0) as usize;
        let mut pos = 8;
        while pos + 8 <= moof_len {
            let size = be32(chunk, pos) as usize;
            if &chunk[pos + 4..pos + 8] == b"traf" && be32(chunk, pos + 20) == VIDEO_TRACK_ID {
                let (mut c, mut tfdt, mut cts) = (pos + 8, None, None);
                while c < pos + size {
                    let csize = be32(chunk, c) as usize;
                    match &chunk[c + 4..c + 8] {
                        b"tfdt" => {
                            tfdt = Some(
                                u64::from(be32(chunk, c + 12)) << 32
                                    | u64::from(be32(chunk, c + 16)),
                            )
                        }
                        // size type flags count offset | duration size flags cts
                        b"trun" => cts = Some(be32(chunk, c + 32) as i32),
                        _ => {}
                    }
                    c += csize;
                }
                return tfdt.zip(cts);
            }
            pos += size;
        }
        None
    }

    #[test]
    fn the_playlist_timeline_is_the_media_timeline_with_b_frames_and_rtmp_rounding() {
        // RTMP's millisecond timestamps (33, 33, 34 ms), two B-frames (keyframes presented
        // 66.7 ms after they decode in the source): every segment's advertised start — the sum
        // of the EXTINF durations before it — is where its video decodes, and its first
        // picture is presented there too (composition offset 0), so a player that places
        // segments by the playlist finds no gap and no overlap at any boundary.
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        let mut out = start(&mut p, 1);
        out.extend(feed(&mut p, 1, 0, 20));
        let (mut advertised, mut in_segment, mut checked) = (0i64, None::<i64>, 0);
        let mut first_video = false;
        for e in &out {
            match e {
                Packaged::SegmentStart { .. } => {
                    in_segment = Some(advertised);
                    first_video = true;
                }
                Packaged::Chunk(c) if first_video => {
                    if let Some((tfdt, cts)) = video_run(c) {
                        let start = in_segment.unwrap();
                        assert!(
                            (tfdt as i64 - start).abs() <= 100,
                            "segment advertised at {start}, its video decodes at {tfdt}"
                        );
                        assert_eq!(cts, 0, "keyframe at {tfdt} presented {cts} ticks later");
                        first_video = false;
                        checked += 1;
                    }
                }
                Packaged::SegmentEnd { duration } => advertised += duration,
                _ => {}
            }
        }
        assert!(checked >= 9, "{checked} segments checked");
    }

    /// Audio samples per track id in a chunk (walks moof/traf/tfhd/trun).
    fn audio_samples(chunk: &[u8]) -> u32 {
        let be32 =
            |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let moof_len = be32(chunk, 0) as usize;
        let mut pos = 8;
        let mut total = 0;
        while pos + 8 <= moof_len {
            let size = be32(chunk, pos) as usize;
            if &chunk[pos + 4..pos + 8] == b"traf" {
                // tfhd is the first child: size(4) type(4) version/flags(4) track_id(4)
                let track = be32(chunk, pos + 8 + 12);
                let mut c = pos + 8;
                while c < pos + size {
                    let csize = be32(chunk, c) as usize;
                    if &chunk[c + 4..c + 8] == b"trun" && track == AUDIO_TRACK_ID {
                        total += be32(chunk, c + 12);
                    }
                    c += csize;
                }
            }
            pos += size;
        }
        total
    }

    #[test]
    fn no_audio_is_lost_at_part_or_segment_boundaries() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        start(&mut p, 1);
        let out = feed(&mut p, 1, 0, 10);
        let mut out = out;
        out.extend(p.finish());
        let emitted: u32 = out
            .iter()
            .filter_map(|e| match e {
                Packaged::Chunk(b) => Some(audio_samples(b)),
                _ => None,
            })
            .sum();
        // feed() pushes audio up to the last video frame; all of it must come out except what
        // starts before the first keyframe is presented (66.7 ms: the stream starts with its
        // first picture; dropped by design).
        let pushed = (0..10 * 48_000)
            .step_by(1024)
            .filter(|s| *s * 1000 / 48_000 <= 299 * 1000 / 30 && *s >= 6000 * 48_000 / 90_000)
            .count();
        assert_eq!(emitted as usize, pushed);
    }

    #[test]
    fn a_backward_clock_jump_is_a_splice_at_the_next_keyframe() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        start(&mut p, 1);
        feed(&mut p, 1, 100_000, 6);
        let before = p.timeline_end.max(p.last_video.unwrap_or(0));
        // Same connection, the clock restarts near 0 (a restarting encoder).
        let out = feed(&mut p, 1, 40, 4);
        assert_eq!(p.stats().splices, 1, "one splice");
        let starts: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Packaged::SegmentStart {
                    discontinuity,
                    start,
                    ..
                } => Some((*discontinuity, *start)),
                _ => None,
            })
            .collect();
        assert!(
            starts[0].0,
            "the first segment after the jump is a discontinuity"
        );
        assert!(starts[0].1 >= before, "the output never steps back");
        assert!(starts[1..].iter().all(|(d, _)| !d));
        for w in starts.windows(2) {
            assert!(w[1].1 > w[0].1, "monotonic segment starts");
        }
    }

    #[test]
    fn a_forward_jump_never_makes_a_long_segment() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        let mut out = start(&mut p, 1);
        out.extend(feed(&mut p, 1, 0, 6));
        out.extend(feed(&mut p, 1, 3_600_000 + 6_000, 4));
        assert_eq!(p.stats().splices, 1);
        for e in &out {
            if let Packaged::SegmentEnd { duration } = e {
                assert!(*duration <= p.max_segment(), "segment of {duration} ticks");
            }
        }
    }

    #[test]
    fn duplicate_and_backward_dts_and_negative_offsets_keep_a_valid_sample_table() {
        let mut p = Packager::new(PackagerConfig::new(Duration::from_millis(333), 2));
        start(&mut p, 1);
        let frame = |dts: i64, pts: i64, key: bool| {
            K::Frame(Frame {
                track: Track::Video,
                dts: media::video_ts(dts),
                pts: media::video_ts(pts),
                keyframe: key,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            })
        };
        let mut out = Vec::new();
        // Duplicate DTS, a step back, PTS before DTS (a negative composition offset).
        for (dts, pts, key) in [
            (0, 0, true),
            (3000, 3000, false),
            (3000, 3000, false),
            (1500, 9000, false),
            (9000, 6000, false),
            (12_000, 12_000, false),
        ] {
            out.extend(p.push(1, &frame(dts, pts, key), SystemTime::UNIX_EPOCH));
        }
        let mut last = -1i64;
        for e in &out {
            if let Packaged::Chunk(c) = e {
                // tfdt (version 1) of the video traf: the base decode time, strictly rising.
                let at = c.windows(4).position(|w| w == b"tfdt").unwrap();
                let t = i64::from_be_bytes(c[at + 8..at + 16].try_into().unwrap());
                assert!(t > last, "decode times rise: {t} after {last}");
                last = t;
            }
        }
        assert_eq!(
            out.iter()
                .filter(|e| matches!(e, Packaged::Chunk(_)))
                .count(),
            6
        );
    }
}
