//! Live streams at the origin: one task per rendition runs a packager over that rendition's
//! fan-out subscription and publishes into the rendition's [`LiveWindow`]; HTTP handlers read
//! the windows and wait on their `watch` channels. No lock is held across an `.await`.

use crate::metrics::{observe, Metrics};
use crate::packager::{LeadTimeline, Packaged, Packager, PackagerConfig};
use crate::window::{Change, LiveWindow};
use media::fanout::{StreamEventKind, Subscription};
use media::{SessionId, StreamName};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tracing::Instrument;

/// Origin packaging settings (fixed for the life of each stream).
#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub part_target: Duration,
    /// Smallest EXT-X-TARGETDURATION (seconds); the first GOP can raise it.
    pub min_target_duration: u32,
    /// Complete segments kept (and listed) per rendition.
    pub window_segments: usize,
    /// How long an ended stream's playlists (with ENDLIST) stay available.
    pub ended_linger: Duration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            part_target: Duration::from_millis(333),
            min_target_duration: 2,
            window_segments: 16,
            ended_linger: Duration::from_secs(60),
        }
    }
}

/// What the multivariant playlist says about a rendition, measured from the stream.
#[derive(Debug, Clone, Default)]
pub struct TrackInfo {
    pub codecs: String,
    /// The rendition carries video (false: audio only; width, height and frame rate unused).
    pub has_video: bool,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    /// What the packager did about the publisher's timeline.
    pub timeline: crate::packager::TimelineStats,
    /// Program date-time minus the wall clock at ingest at the last segment, seconds.
    pub drift_secs: f64,
    /// The last part's publish delay (its last frame's arrival → servable), seconds.
    pub part_delay_secs: f64,
    /// Parts completed since the stream began.
    pub parts: u64,
}

/// One rendition's window and its change notifications.
#[derive(Debug)]
pub struct Rendition {
    pub id: String,
    pub window: Mutex<LiveWindow>,
    /// Bumped when playlists change (part/segment complete, end).
    pub position: watch::Sender<u64>,
    /// Bumped on any change, including bytes appended to the part being written.
    pub bytes: watch::Sender<u64>,
    pub info: Mutex<TrackInfo>,
    /// Listed in the multivariant playlist (and in other renditions' reports). A rendition
    /// that is not keeps serving whoever still fetches it.
    advertised: AtomicBool,
}

impl Rendition {
    fn new(id: &str, window: LiveWindow) -> Rendition {
        Rendition {
            id: id.to_owned(),
            window: Mutex::new(window),
            position: watch::channel(0).0,
            bytes: watch::channel(0).0,
            info: Mutex::new(TrackInfo::default()),
            advertised: AtomicBool::new(true),
        }
    }

    pub fn is_advertised(&self) -> bool {
        self.advertised.load(Ordering::Relaxed)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, LiveWindow> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, change: Change) {
        match change {
            Change::None => {}
            Change::Bytes => self.bytes.send_modify(|v| *v += 1),
            Change::Position => {
                self.bytes.send_modify(|v| *v += 1);
                self.position.send_modify(|v| *v += 1);
            }
        }
    }
}

/// A stream as the origin serves it.
#[derive(Debug)]
pub struct LiveStream {
    pub name: StreamName,
    pub session: SessionId,
    /// The first is the source; renditions join (a rung started for more viewers) and stay
    /// until the stream ends.
    renditions: RwLock<Vec<Arc<Rendition>>>,
    pub started: SystemTime,
    /// A publisher is connected (false during the grace period and after the end).
    pub publishing: AtomicBool,
    /// Renditions still being packaged.
    running: AtomicUsize,
    /// The source rendition's timeline and segment numbers, which the others follow.
    lead: Mutex<Lead>,
    /// Bumped whenever `lead` changes.
    lead_changed: watch::Sender<u64>,
    /// What runs the stream's ladder says about it (tier, rungs, encoders, sheds, CPU), as
    /// `/api/streams` shows it; the origin does not read it.
    ladder: Mutex<Option<serde_json::Value>>,
    /// The publisher's uplink health, as the binary reads it from ingest.
    uplink: Mutex<Option<serde_json::Value>>,
}

/// What the source rendition's packager tells the others.
#[derive(Debug, Default)]
struct Lead {
    timeline: Option<LeadTimeline>,
    /// Recent segment starts (output time, 90 kHz) and their media sequence numbers.
    starts: VecDeque<(i64, u64)>,
}

/// Segment starts kept in [`Lead`] (a joining rendition's first keyframe is matched to one).
const LEAD_STARTS: usize = 64;
/// How long a following rendition waits for the source's packager to reach a frame it has
/// (the source's is usually ahead: a copy runs beside it, a rung behind its encoder).
const LEAD_WAIT: Duration = Duration::from_secs(2);

/// One rendition to package: its id (in URLs) and the subscription that feeds it.
#[derive(Debug)]
pub struct RenditionInput {
    pub id: String,
    pub events: Subscription,
}

impl LiveStream {
    /// Sets what `/api/streams` shows under `ladder`.
    pub fn set_ladder_status(&self, status: serde_json::Value) {
        *self.ladder.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// Sets what `/api/streams` shows under `uplink`.
    pub fn set_uplink_status(&self, status: serde_json::Value) {
        *self.uplink.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    pub fn uplink_status(&self) -> Option<serde_json::Value> {
        self.uplink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn ladder_status(&self) -> Option<serde_json::Value> {
        self.ladder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_publishing(&self) -> bool {
        self.publishing.load(Ordering::Relaxed)
    }

    /// Every rendition, the source first.
    pub fn renditions(&self) -> Vec<Arc<Rendition>> {
        self.renditions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The renditions the multivariant playlist lists.
    pub fn advertised(&self) -> Vec<Arc<Rendition>> {
        let mut v = self.renditions();
        v.retain(|r| r.is_advertised());
        v
    }

    pub fn rendition(&self, id: &str) -> Option<Arc<Rendition>> {
        self.renditions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    fn lead(&self) -> std::sync::MutexGuard<'_, Lead> {
        self.lead.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// All streams the origin serves, by public name.
#[derive(Debug)]
pub struct Streams {
    pub config: OriginConfig,
    pub metrics: Arc<Metrics>,
    map: RwLock<HashMap<StreamName, Arc<LiveStream>>>,
}

impl Streams {
    pub fn new(config: OriginConfig, metrics: Arc<Metrics>) -> Arc<Streams> {
        Arc::new(Streams {
            config,
            metrics,
            map: RwLock::new(HashMap::new()),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<LiveStream>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, s)| Arc::clone(s))
    }

    pub fn all(&self) -> Vec<Arc<LiveStream>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Starts packaging a stream: one packager and live window per rendition (the first one
    /// listed first in the multivariant playlist; the others follow its timeline). Call from
    /// within the tokio runtime.
    pub fn start(
        self: &Arc<Self>,
        name: StreamName,
        session: SessionId,
        renditions: Vec<RenditionInput>,
    ) {
        // Each stream's counters exist from its start (a 0 is information; a gap is not).
        for c in [
            &self.metrics.splices,
            &self.metrics.unplaced_frames,
            &self.metrics.pdt_reanchors,
        ] {
            c.with_label_values(&[name.as_str()]);
        }
        // MSNs start from the wall clock in seconds, so a new session of the same stream name
        // never reuses an earlier session's part and segment URLs (which caches keep).
        let first_msn = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let windows = renditions
            .iter()
            .map(|r| Arc::new(Rendition::new(&r.id, self.window(first_msn))));
        let stream = Arc::new(LiveStream {
            name: name.clone(),
            session,
            renditions: RwLock::new(windows.collect()),
            started: SystemTime::now(),
            publishing: AtomicBool::new(false),
            running: AtomicUsize::new(renditions.len()),
            lead: Mutex::new(Lead::default()),
            lead_changed: watch::channel(0).0,
            ladder: Mutex::new(None),
            uplink: Mutex::new(None),
        });
        {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            map.insert(name, Arc::clone(&stream));
        }
        for (index, input) in renditions.into_iter().enumerate() {
            self.spawn_rendition(&stream, index, input);
        }
    }

    fn window(&self, first_msn: u64) -> LiveWindow {
        LiveWindow::new(
            first_msn,
            self.config.window_segments,
            self.config.part_target.as_secs_f64(),
        )
    }

    /// Adds a rendition to a running stream (this session of it): it follows the source's
    /// timeline and segment numbers from the first source segment start it can join at, and
    /// is advertised at once (an ended rendition of that id is replaced). False when the
    /// stream (session) is gone or the id is taken by a running rendition.
    pub fn add_rendition(
        self: &Arc<Self>,
        name: &str,
        session: SessionId,
        input: RenditionInput,
    ) -> bool {
        let Some(stream) = self.get(name).filter(|s| s.session == session) else {
            return false;
        };
        let index = {
            let mut list = stream.renditions.write().unwrap_or_else(|e| e.into_inner());
            let next = list.first().map_or(0, |source| source.lock().next_msn());
            let fresh = Arc::new(Rendition::new(&input.id, self.window(next)));
            match list.iter().position(|r| r.id == input.id) {
                // A rung stopped earlier and started again: a new playlist under its id.
                Some(i) if list[i].lock().ended() => {
                    list[i] = fresh;
                    i
                }
                Some(_) => return false,
                None => {
                    list.push(fresh);
                    list.len() - 1
                }
            }
        };
        stream.running.fetch_add(1, Ordering::AcqRel);
        self.spawn_rendition(&stream, index, input);
        true
    }

    /// Lists (or stops listing) a rendition in the multivariant playlist; the source is always
    /// listed. A rendition no longer listed still serves whoever fetches it.
    pub fn advertise(&self, name: &str, session: SessionId, id: &str, on: bool) {
        let Some(stream) = self.get(name).filter(|s| s.session == session) else {
            return;
        };
        let list = stream.renditions.read().unwrap_or_else(|e| e.into_inner());
        for r in list.iter().skip(1).filter(|r| r.id == id) {
            if r.advertised.swap(on, Ordering::Relaxed) != on {
                tracing::info!(stream = %name, rendition = id, advertised = on, "multivariant changed");
            }
        }
    }

    fn spawn_rendition(
        self: &Arc<Self>,
        stream: &Arc<LiveStream>,
        index: usize,
        input: RenditionInput,
    ) {
        let streams = Arc::clone(self);
        let stream = Arc::clone(stream);
        let span = tracing::info_span!(parent: None, "stream", stream = %stream.name, session = %stream.session, rendition = %input.id);
        tokio::spawn(
            async move {
                tracing::info!("packaging started");
                run_packager(&streams, &stream, index, input.events).await;
                tracing::info!("rendition ended: playlist has ENDLIST");
                if stream.running.fetch_sub(1, Ordering::AcqRel) > 1 {
                    return;
                }
                tracing::info!("stream ended");
                tokio::time::sleep(streams.config.ended_linger).await;
                let mut map = streams.map.write().unwrap_or_else(|e| e.into_inner());
                if map
                    .get(&stream.name)
                    .is_some_and(|s| Arc::ptr_eq(s, &stream))
                {
                    map.remove(&stream.name);
                }
            }
            .instrument(span),
        );
    }
}

async fn run_packager(
    streams: &Streams,
    stream: &LiveStream,
    index: usize,
    mut events: Subscription,
) {
    let cfg = PackagerConfig::new(
        streams.config.part_target,
        streams.config.min_target_duration,
    );
    let mut packager = Packager::new(cfg);
    let Some(rendition) = stream.renditions().get(index).cloned() else {
        return;
    };
    let rendition = &rendition;
    // A follower drops frames until its first keyframe lands on a segment start of the
    // source's (its first segment takes that number); then it cuts where the source does.
    let mut joining = index > 0;
    let mut lead_rx = stream.lead_changed.subscribe();
    // A generation the source did not get to within LEAD_WAIT is not waited for again until
    // the source moves.
    let mut waited_out: Option<u64> = None;
    let metrics = &streams.metrics;
    let label = [stream.name.as_str()];
    let mut timeline = packager.stats();
    // Arrival instants of the video frames in the part being written.
    let mut arrivals: Vec<Instant> = Vec::new();
    while let Some(ev) = events.recv().await {
        match &ev.kind {
            StreamEventKind::PublisherStarted { peer, protocol } if index == 0 => {
                tracing::info!(%peer, protocol = protocol.as_str(), generation = ev.generation, "publisher started");
                stream.publishing.store(true, Ordering::Relaxed);
            }
            StreamEventKind::PublisherGone if index == 0 => {
                stream.publishing.store(false, Ordering::Relaxed);
            }
            _ => {}
        }
        // Frames whose arrival times the part publish delay is measured from: video, or audio
        // in an audio-only stream.
        let is_video = matches!(&ev.kind, StreamEventKind::Frame(f)
            if f.track == media::Track::Video || packager.video_config().is_none());
        if let (true, StreamEventKind::Frame(f)) = (index > 0, &ev.kind) {
            let deadline = tokio::time::Instant::now() + LEAD_WAIT;
            let join = loop {
                let j = join_at(&stream.lead(), &packager, ev.generation, f, joining);
                if j != Join::Wait {
                    break j;
                }
                let gave_up = waited_out == Some(ev.generation);
                let changed = if gave_up && !lead_rx.has_changed().unwrap_or(false) {
                    None
                } else {
                    tokio::time::timeout_at(deadline, lead_rx.changed())
                        .await
                        .ok()
                };
                if !matches!(changed, Some(Ok(()))) {
                    // The source is stuck or gone: a joined rendition goes on (unaligned for
                    // this generation), a joining one keeps waiting for a place to join.
                    waited_out = Some(ev.generation);
                    break if joining { Join::Drop } else { Join::Go };
                }
            };
            if let Some(t) = stream.lead().timeline {
                packager.follow(t);
            }
            match join {
                Join::At(msn) => {
                    rendition.lock().set_next_msn(msn);
                    joining = false;
                }
                Join::Drop | Join::Wait => continue,
                Join::Go => {}
            }
        }
        let out = packager.push(ev.generation, &ev.kind, SystemTime::now());
        if index == 0 {
            let timeline = packager.timeline();
            let mut lead = stream.lead();
            if lead.timeline != timeline {
                lead.timeline = timeline;
                stream.lead_changed.send_modify(|v| *v += 1);
            }
        }
        let now_stats = packager.stats();
        if now_stats != timeline {
            if index == 0 {
                let m = metrics;
                m.splices
                    .with_label_values(&label)
                    .inc_by(now_stats.splices - timeline.splices);
                m.unplaced_frames
                    .with_label_values(&label)
                    .inc_by(now_stats.dropped - timeline.dropped);
                m.pdt_reanchors
                    .with_label_values(&label)
                    .inc_by(now_stats.reanchors - timeline.reanchors);
            }
            timeline = now_stats;
            let mut info = rendition.info.lock().unwrap_or_else(|e| e.into_inner());
            info.timeline = now_stats;
        }
        if out.is_empty() {
            continue;
        }
        let mut change = Change::None;
        let mut closed_parts = 0;
        {
            let mut w = rendition.lock();
            for p in out {
                match &p {
                    Packaged::Chunk(_) if is_video => arrivals.push(ev.at),
                    Packaged::PartEnd { .. } => closed_parts += 1,
                    Packaged::Init { config, .. } => {
                        let mut info = rendition.info.lock().unwrap_or_else(|e| e.into_inner());
                        info.codecs = config.codecs();
                        info.has_video = config.video.is_some();
                        if let Some(v) = &config.video {
                            info.width = v.info.width;
                            info.height = v.info.height;
                        }
                    }
                    _ => {}
                }
                let start = match &p {
                    Packaged::SegmentStart { start, .. } if index == 0 => Some(*start),
                    _ => None,
                };
                change = change.max_with(w.apply(p));
                if let (Some(start), Some(seg)) = (start, w.segments().next_back()) {
                    let mut lead = stream.lead();
                    if lead.starts.len() == LEAD_STARTS {
                        lead.starts.pop_front();
                    }
                    lead.starts.push_back((start, seg.msn));
                    stream.lead_changed.send_modify(|v| *v += 1);
                }
            }
        }
        rendition.notify(change);
        if closed_parts > 0 {
            let now = Instant::now();
            let part_delay = arrivals.last().map(|last| now - *last);
            if let Some(d) = part_delay {
                observe(&metrics.part_publish_delay, d);
            }
            for a in arrivals.drain(..) {
                observe(&metrics.ingest_to_servable, now - a);
            }
            let mut info = rendition.info.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(d) = part_delay {
                info.part_delay_secs = d.as_secs_f64();
            }
            info.parts += closed_parts;
            info.frame_rate = media::VIDEO_TIMESCALE as f64 / packager.frame_duration() as f64;
            info.drift_secs = packager.drift();
        }
    }
    if index == 0 {
        stream.publishing.store(false, Ordering::Relaxed);
    }
    let out = packager.finish();
    let mut w = rendition.lock();
    for p in out {
        w.apply(p);
    }
    w.end();
    drop(w);
    rendition.notify(Change::Position);
}

/// What a following rendition does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// Package it (joined already).
    Go,
    /// Its first segment starts here, numbered so.
    At(u64),
    /// Not a place to join: drop it.
    Drop,
    /// The source has not got this far yet.
    Wait,
}

/// A joining rendition starts at a video keyframe where a source segment starts (mapped with
/// the source's offset, within half a frame), with that segment's number; a stream without
/// video joins at once, at the source's next number. Every follower waits for the source's
/// timeline of the frame's generation.
fn join_at(
    lead: &Lead,
    packager: &Packager,
    generation: u64,
    f: &media::Frame,
    joining: bool,
) -> Join {
    let Some(timeline) = lead.timeline.filter(|t| t.generation >= generation) else {
        return Join::Wait;
    };
    if !joining {
        return Join::Go;
    }
    if packager.video_config().is_none() {
        return match lead.starts.back() {
            Some((_, msn)) => Join::At(msn + 1),
            None => Join::Wait,
        };
    }
    if f.track != media::Track::Video || !f.keyframe {
        return Join::Drop;
    }
    let t = f.pts.rescale(media::VIDEO_TIMESCALE) + timeline.offset;
    let tolerance = packager.frame_duration() / 2;
    if let Some((_, msn)) = lead
        .starts
        .iter()
        .find(|(start, _)| (start - t).abs() <= tolerance)
    {
        return Join::At(*msn);
    }
    match lead.starts.back() {
        Some((last, _)) if *last >= t => Join::Drop, // mid-segment keyframe: the next one
        _ => Join::Wait,
    }
}

impl Change {
    fn max_with(self, other: Change) -> Change {
        match (self, other) {
            (Change::Position, _) | (_, Change::Position) => Change::Position,
            (Change::Bytes, _) | (_, Change::Bytes) => Change::Bytes,
            _ => Change::None,
        }
    }
}
