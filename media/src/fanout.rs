//! One published stream, many consumers: the seam between pipeline stages.
//!
//! A [`Fanout`] carries one stream's [`StreamEvent`]s from its single writer (ingest's
//! publisher, or a transcoder's rung) to any number of [`Subscription`]s (the packager of each
//! rendition, a transcoder, a test). Frames are shared (`Bytes` payloads are reference-counted,
//! never copied per consumer).
//!
//! Buffering rule: each subscription has its own queue of at most `capacity` events. The
//! writer never waits: when a consumer's queue is full, that consumer alone *lags* — its queued
//! events are replaced by a snapshot of the stream's current state (the current publisher and
//! its codec configs) and it receives no more frames until the next keyframe (a video keyframe,
//! or any frame of a stream without video). Each lag is counted. Other consumers and the writer
//! are unaffected.
//!
//! Late joiners get the same snapshot on [`Fanout::subscribe`] and start at the next keyframe.
//! [`Fanout::close`] ends the stream: every subscription drains what it has and then yields
//! `None`.

use crate::{CodecConfig, Frame, Track};
use prometheus::IntCounterVec;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;
use tokio::sync::Notify;

/// How a publisher reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Rtmp,
    /// RTMP inside TLS.
    Rtmps,
    Srt,
    /// Produced inside Ferrocast (a transcoded rung).
    Internal,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Rtmps => "rtmps",
            Protocol::Srt => "srt",
            Protocol::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a stream, stamped with its publisher generation.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// The publisher generation this event belongs to (a takeover or reconnect bumps it).
    pub generation: u64,
    /// When the writer handed the event over (for ingest-to-servable latency).
    pub at: Instant,
    pub kind: StreamEventKind,
}

#[derive(Debug, Clone)]
pub enum StreamEventKind {
    /// A publisher started (first one, a reconnect, or a takeover).
    PublisherStarted {
        peer: SocketAddr,
        protocol: Protocol,
    },
    Config(CodecConfig),
    Frame(Frame),
    /// The publisher of this generation went away; the grace period runs.
    PublisherGone,
}

/// Counters a fan-out keeps per consumer (labels `stream`, `consumer`; both bounded: streams
/// come from configured keys, consumers from configured renditions).
#[derive(Debug, Clone)]
pub struct FanoutMetrics {
    /// Times a consumer fell behind and was resynchronised.
    pub lagged: IntCounterVec,
    /// Frames a consumer did not get (dropped from its queue or skipped until a keyframe).
    pub dropped: IntCounterVec,
}

impl FanoutMetrics {
    pub fn new() -> FanoutMetrics {
        let family = |name: &str, help: &str| {
            IntCounterVec::new(prometheus::Opts::new(name, help), &["stream", "consumer"])
                .unwrap_or_else(|_| unreachable_metric())
        };
        FanoutMetrics {
            lagged: family(
                "ferrocast_consumer_lagged_total",
                "Times a stream consumer fell behind and was resynchronised at a keyframe.",
            ),
            dropped: family(
                "ferrocast_consumer_frames_dropped_total",
                "Frames a lagging stream consumer did not receive.",
            ),
        }
    }

    /// Registers both families with `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.lagged.clone()))?;
        registry.register(Box::new(self.dropped.clone()))
    }
}

impl Default for FanoutMetrics {
    fn default() -> Self {
        FanoutMetrics::new()
    }
}

/// The metric definitions above are constant and valid; prometheus only rejects invalid names.
fn unreachable_metric() -> IntCounterVec {
    panic!("invalid constant metric definition")
}

#[derive(Debug)]
struct State {
    generation: u64,
    publisher: Option<(SocketAddr, Protocol)>,
    video: Option<CodecConfig>,
    audio: Option<CodecConfig>,
    /// A frame of the current generation has been sent: a joiner must wait for a keyframe.
    mid_stream: bool,
    closed: bool,
    subscribers: Vec<Weak<Shared>>,
}

/// A stream's fan-out. Cheap to share (`Arc`); the writer and the subscribers hold it.
#[derive(Debug)]
pub struct Fanout {
    stream: String,
    capacity: usize,
    metrics: FanoutMetrics,
    state: Mutex<State>,
}

#[derive(Debug)]
struct Queue {
    events: VecDeque<StreamEvent>,
    /// No frames until the next keyframe.
    resync: bool,
    closed: bool,
    lags: u64,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
    lagged: prometheus::IntCounter,
    dropped: prometheus::IntCounter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Fanout {
    /// A fan-out for the stream named `stream` (used as a metrics label) with `capacity`
    /// events of room per consumer.
    pub fn new(stream: &str, capacity: usize, metrics: FanoutMetrics) -> Arc<Fanout> {
        Arc::new(Fanout {
            stream: stream.to_owned(),
            capacity: capacity.max(8),
            metrics,
            state: Mutex::new(State {
                generation: 0,
                publisher: None,
                video: None,
                audio: None,
                mid_stream: false,
                closed: false,
                subscribers: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metric families this fan-out counts into (for fan-outs derived from it).
    pub fn metrics(&self) -> &FanoutMetrics {
        &self.metrics
    }

    /// The codec configs the current publisher announced (video, audio).
    pub fn configs(&self) -> (Option<CodecConfig>, Option<CodecConfig>) {
        let s = self.lock();
        (s.video.clone(), s.audio.clone())
    }

    /// The current publisher generation.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Number of live subscriptions.
    pub fn subscribers(&self) -> usize {
        let mut s = self.lock();
        s.subscribers.retain(|w| w.strong_count() > 0);
        s.subscribers.len()
    }

    /// Joins the stream. `consumer` names the reader in metrics (keep the set small).
    pub fn subscribe(self: &Arc<Self>, consumer: &str) -> Subscription {
        let labels = [self.stream.as_str(), consumer];
        let mut s = self.lock();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                events: snapshot(&s),
                resync: s.mid_stream,
                closed: s.closed,
                lags: 0,
            }),
            notify: Notify::new(),
            lagged: self.metrics.lagged.with_label_values(&labels),
            dropped: self.metrics.dropped.with_label_values(&labels),
        });
        s.subscribers.retain(|w| w.strong_count() > 0);
        s.subscribers.push(Arc::downgrade(&shared));
        Subscription {
            shared,
            _fanout: Arc::clone(self),
        }
    }

    /// Delivers `event` to every subscriber without ever blocking (see the module docs).
    pub fn send(&self, event: StreamEvent) {
        let mut s = self.lock();
        if s.closed || event.generation < s.generation {
            return;
        }
        match &event.kind {
            StreamEventKind::PublisherStarted { peer, protocol } => {
                s.generation = event.generation;
                s.publisher = Some((*peer, *protocol));
                s.mid_stream = false;
            }
            StreamEventKind::PublisherGone => {
                if event.generation == s.generation {
                    s.publisher = None;
                }
            }
            StreamEventKind::Config(c @ CodecConfig::Avc(_)) => s.video = Some(c.clone()),
            StreamEventKind::Config(c @ CodecConfig::Aac(_)) => s.audio = Some(c.clone()),
            StreamEventKind::Frame(_) => s.mid_stream = true,
        }
        let has_video = s.video.is_some();
        let mut snap: Option<VecDeque<StreamEvent>> = None;
        let mut live = 0;
        for i in 0..s.subscribers.len() {
            let Some(sub) = s.subscribers[i].upgrade() else {
                continue;
            };
            live += 1;
            let mut q = sub.lock();
            if let StreamEventKind::Frame(f) = &event.kind {
                if q.resync {
                    if !resyncs_at(f, has_video) {
                        sub.dropped.inc();
                        continue;
                    }
                    q.resync = false;
                }
                if q.events.len() >= self.capacity {
                    // This consumer lags: forget its backlog, resume at the next keyframe.
                    let dropped = q
                        .events
                        .iter()
                        .filter(|e| matches!(e.kind, StreamEventKind::Frame(_)))
                        .count()
                        + 1;
                    sub.dropped.inc_by(dropped as u64);
                    sub.lagged.inc();
                    q.lags += 1;
                    q.events = snap.get_or_insert_with(|| snapshot(&s)).clone();
                    q.resync = true;
                    drop(q);
                    sub.notify.notify_one();
                    continue;
                }
            } else if q.events.len() >= self.capacity {
                // Control events are never dropped; a full queue collapses to the snapshot,
                // which already reflects this event.
                sub.lagged.inc();
                q.lags += 1;
                q.events = snap.get_or_insert_with(|| snapshot(&s)).clone();
                q.resync = true;
                drop(q);
                sub.notify.notify_one();
                continue;
            }
            q.events.push_back(event.clone());
            drop(q);
            sub.notify.notify_one();
        }
        if live < s.subscribers.len() {
            s.subscribers.retain(|w| w.strong_count() > 0);
        }
    }

    /// Ends the stream for every subscriber (after they drain their queues).
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        for sub in s.subscribers.iter().filter_map(Weak::upgrade) {
            sub.lock().closed = true;
            sub.notify.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

fn resyncs_at(f: &Frame, has_video: bool) -> bool {
    f.keyframe && (f.track == Track::Video || !has_video)
}

/// The events that bring a new (or lagging) consumer up to the stream's current state.
fn snapshot(s: &State) -> VecDeque<StreamEvent> {
    let mut v = VecDeque::new();
    let at = Instant::now();
    let generation = s.generation;
    if let Some((peer, protocol)) = s.publisher {
        v.push_back(StreamEvent {
            generation,
            at,
            kind: StreamEventKind::PublisherStarted { peer, protocol },
        });
        for c in [&s.video, &s.audio].into_iter().flatten() {
            v.push_back(StreamEvent {
                generation,
                at,
                kind: StreamEventKind::Config(c.clone()),
            });
        }
    } else if generation > 0 {
        v.push_back(StreamEvent {
            generation,
            at,
            kind: StreamEventKind::PublisherGone,
        });
    }
    v
}

/// One consumer's view of a stream. Dropping it leaves the stream.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<Shared>,
    _fanout: Arc<Fanout>,
}

impl Subscription {
    /// The next event, or `None` once the stream is closed and this queue is drained.
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        loop {
            {
                let mut q = self.shared.lock();
                if let Some(ev) = q.events.pop_front() {
                    return Some(ev);
                }
                if q.closed {
                    return None;
                }
            }
            self.shared.notify.notified().await;
        }
    }

    /// The next event if one is queued (`Err(true)` when the stream has ended).
    pub fn try_recv(&mut self) -> Result<StreamEvent, bool> {
        let mut q = self.shared.lock();
        match q.events.pop_front() {
            Some(ev) => Ok(ev),
            None => Err(q.closed),
        }
    }

    /// How often this consumer has lagged and been resynchronised.
    pub fn lags(&self) -> u64 {
        self.shared.lock().lags
    }

    /// Events waiting in this consumer's queue.
    pub fn queued(&self) -> usize {
        self.shared.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    fn frame(track: Track, keyframe: bool, pts: i64) -> StreamEventKind {
        let pts = crate::Timestamp::new(pts, 90_000);
        StreamEventKind::Frame(Frame {
            track,
            pts,
            dts: pts,
            keyframe,
            data: Bytes::from_static(b"x"),
        })
    }

    fn ev(generation: u64, kind: StreamEventKind) -> StreamEvent {
        StreamEvent {
            generation,
            at: Instant::now(),
            kind,
        }
    }

    fn started() -> StreamEventKind {
        StreamEventKind::PublisherStarted {
            peer: "127.0.0.1:1".parse().unwrap(),
            protocol: Protocol::Rtmp,
        }
    }

    fn avc() -> CodecConfig {
        CodecConfig::Avc(
            crate::AvcConfig::parse(Bytes::from_static(include_bytes!(
                "../testdata/avcc_720p_high.bin"
            )))
            .unwrap(),
        )
    }

    fn drain(s: &mut Subscription) -> Vec<StreamEvent> {
        let mut v = Vec::new();
        while let Ok(e) = s.try_recv() {
            v.push(e);
        }
        v
    }

    #[test]
    fn a_stalled_consumer_lags_alone_and_resumes_at_a_keyframe() {
        let metrics = FanoutMetrics::new();
        let f = Fanout::new("demo", 16, metrics.clone());
        let mut fast = f.subscribe("fast");
        let mut slow = f.subscribe("slow");
        f.send(ev(1, started()));
        f.send(ev(1, StreamEventKind::Config(avc())));
        f.send(ev(1, frame(Track::Video, true, 0)));
        let mut fast_frames = 0;
        for i in 1..100 {
            f.send(ev(1, frame(Track::Video, i % 30 == 0, i * 3000)));
            f.send(ev(1, frame(Track::Audio, true, i * 1024)));
            fast_frames += drain(&mut fast)
                .iter()
                .filter(|e| matches!(e.kind, StreamEventKind::Frame(_)))
                .count();
        }
        assert_eq!(fast_frames, 199, "the fast consumer got every frame");
        assert!(slow.lags() >= 1);
        let lagged = metrics.lagged.with_label_values(&["demo", "slow"]).get();
        assert_eq!(lagged, slow.lags());
        assert_eq!(metrics.lagged.with_label_values(&["demo", "fast"]).get(), 0);
        // The slow consumer sees the snapshot (publisher + config), then a video keyframe.
        f.send(ev(1, frame(Track::Video, true, 100 * 3000)));
        let got = drain(&mut slow);
        assert!(matches!(
            got[0].kind,
            StreamEventKind::PublisherStarted { .. }
        ));
        assert!(matches!(got[1].kind, StreamEventKind::Config(_)));
        match &got[2].kind {
            StreamEventKind::Frame(fr) => assert!(fr.keyframe && fr.track == Track::Video),
            other => panic!("expected a keyframe, got {other:?}"),
        }
        assert!(got.len() <= 16);
    }

    #[test]
    fn late_joiners_see_the_current_configs_and_start_at_a_keyframe() {
        let f = Fanout::new("demo", 64, FanoutMetrics::new());
        f.send(ev(1, started()));
        f.send(ev(1, StreamEventKind::Config(avc())));
        f.send(ev(1, frame(Track::Video, true, 0)));
        let mut late = f.subscribe("late");
        f.send(ev(1, frame(Track::Video, false, 3000)));
        f.send(ev(1, frame(Track::Video, true, 6000)));
        let got = drain(&mut late);
        assert_eq!(got.len(), 3);
        assert!(matches!(
            got[1].kind,
            StreamEventKind::Config(CodecConfig::Avc(_))
        ));
        assert!(matches!(&got[2].kind, StreamEventKind::Frame(fr) if fr.pts.ticks() == 6000));
        assert!(f.configs().0.is_some());
    }

    #[test]
    fn audio_only_streams_resync_on_any_frame() {
        let f = Fanout::new("radio", 64, FanoutMetrics::new());
        f.send(ev(1, started()));
        let mut s = f.subscribe("a");
        f.send(ev(1, frame(Track::Audio, true, 0)));
        assert_eq!(drain(&mut s).len(), 2);
    }

    #[test]
    fn stale_generations_are_ignored_and_takeovers_reach_everyone() {
        let f = Fanout::new("demo", 64, FanoutMetrics::new());
        let mut s = f.subscribe("a");
        f.send(ev(2, started()));
        f.send(ev(1, frame(Track::Video, true, 0)));
        f.send(ev(2, StreamEventKind::PublisherGone));
        let got = drain(&mut s);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.generation == 2));
    }

    #[tokio::test]
    async fn close_ends_every_subscription_after_its_queue() {
        let f = Fanout::new("demo", 64, FanoutMetrics::new());
        let mut s = f.subscribe("a");
        f.send(ev(1, started()));
        f.close();
        assert!(s.recv().await.is_some());
        assert!(s.recv().await.is_none());
        let mut after = f.subscribe("b");
        assert!(after.recv().await.is_some(), "snapshot of the last state");
        assert!(after.recv().await.is_none());
    }

    #[tokio::test]
    async fn recv_wakes_on_send() {
        let f = Fanout::new("demo", 64, FanoutMetrics::new());
        let mut s = f.subscribe("a");
        let f2 = Arc::clone(&f);
        let t = tokio::spawn(async move { s.recv().await.map(|e| e.generation) });
        tokio::task::yield_now().await;
        f2.send(ev(3, started()));
        assert_eq!(t.await.unwrap(), Some(3));
    }

    #[test]
    fn dropped_subscriptions_leave() {
        let f = Fanout::new("demo", 64, FanoutMetrics::new());
        let s = f.subscribe("a");
        assert_eq!(f.subscribers(), 1);
        drop(s);
        f.send(ev(1, started()));
        assert_eq!(f.subscribers(), 0);
    }
}
