//! Live streams at the origin: one task per rendition runs a packager over that rendition's
//! fan-out subscription and publishes into the rendition's [`LiveWindow`]; HTTP handlers read
//! the windows and wait on their `watch` channels. No lock is held across an `.await`.

use crate::metrics::{observe, Metrics};
use crate::packager::{Packaged, Packager, PackagerConfig};
use crate::window::{Change, LiveWindow};
use media::fanout::{StreamEventKind, Subscription};
use media::{SessionId, StreamName};
use std::collections::HashMap;
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
}

impl Rendition {
    fn new(id: &str, window: LiveWindow) -> Rendition {
        Rendition {
            id: id.to_owned(),
            window: Mutex::new(window),
            position: watch::channel(0).0,
            bytes: watch::channel(0).0,
            info: Mutex::new(TrackInfo::default()),
        }
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
    pub renditions: Vec<Arc<Rendition>>,
    pub started: SystemTime,
    /// A publisher is connected (false during the grace period and after the end).
    pub publishing: AtomicBool,
    /// Renditions still being packaged.
    running: AtomicUsize,
}

/// One rendition to package: its id (in URLs) and the subscription that feeds it.
#[derive(Debug)]
pub struct RenditionInput {
    pub id: String,
    pub events: Subscription,
}

impl LiveStream {
    pub fn is_publishing(&self) -> bool {
        self.publishing.load(Ordering::Relaxed)
    }

    pub fn rendition(&self, id: &str) -> Option<&Arc<Rendition>> {
        self.renditions.iter().find(|r| r.id == id)
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
    /// listed first in the multivariant playlist). Call from within the tokio runtime.
    pub fn start(
        self: &Arc<Self>,
        name: StreamName,
        session: SessionId,
        renditions: Vec<RenditionInput>,
    ) {
        // MSNs start from the wall clock in seconds, so a new session of the same stream name
        // never reuses an earlier session's part and segment URLs (which caches keep).
        let first_msn = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let windows = renditions.iter().map(|r| {
            let window = LiveWindow::new(
                first_msn,
                self.config.window_segments,
                self.config.part_target.as_secs_f64(),
            );
            Arc::new(Rendition::new(&r.id, window))
        });
        let stream = Arc::new(LiveStream {
            name: name.clone(),
            session,
            renditions: windows.collect(),
            started: SystemTime::now(),
            publishing: AtomicBool::new(false),
            running: AtomicUsize::new(renditions.len()),
        });
        {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            map.insert(name.clone(), Arc::clone(&stream));
        }
        for (index, input) in renditions.into_iter().enumerate() {
            let streams = Arc::clone(self);
            let stream = Arc::clone(&stream);
            let span = tracing::info_span!(parent: None, "stream", stream = %name, session = %session, rendition = %input.id);
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
    let rendition = &stream.renditions[index];
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
        let out = packager.push(ev.generation, &ev.kind, SystemTime::now());
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
                change = change.max_with(w.apply(p));
            }
        }
        rendition.notify(change);
        if closed_parts > 0 {
            let now = Instant::now();
            if let Some(last) = arrivals.last() {
                observe(&metrics.part_publish_delay, now - *last);
            }
            for a in arrivals.drain(..) {
                observe(&metrics.ingest_to_servable, now - a);
            }
            let mut info = rendition.info.lock().unwrap_or_else(|e| e.into_inner());
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

impl Change {
    fn max_with(self, other: Change) -> Change {
        match (self, other) {
            (Change::Position, _) | (_, Change::Position) => Change::Position,
            (Change::Bytes, _) | (_, Change::Bytes) => Change::Bytes,
            _ => Change::None,
        }
    }
}
