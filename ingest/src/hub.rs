//! The stream registry: publish authorization, one live stream per public name, takeover by a
//! new publisher, and the reconnect grace period.
//!
//! A stream is created on its first authorized publish. Its events flow through one bounded
//! channel to whoever consumes the stream (the origin's packager). Each publisher has a
//! *generation*; a new publish with the same key bumps it and cancels the old connection, and
//! consumers ignore events of older generations. When the current publisher goes away the
//! stream waits `grace`; if no one takes over by then the registry drops the channel's sender,
//! which is how consumers learn the stream has ended.

use media::{CodecConfig, Frame, SessionId, StreamKey, StreamName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Capacity of a stream's event channel: about 4 s of 30 fps video plus audio.
pub const STREAM_QUEUE: usize = 512;

/// What a stream's consumer receives.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// The publisher generation this event belongs to.
    pub generation: u64,
    /// When ingest handed the event over (for ingest-to-servable latency).
    pub at: std::time::Instant,
    pub kind: StreamEventKind,
}

#[derive(Debug, Clone)]
pub enum StreamEventKind {
    /// A publisher started (first one, a reconnect, or a takeover).
    PublisherStarted {
        peer: SocketAddr,
        protocol: &'static str,
    },
    Config(CodecConfig),
    Frame(Frame),
    /// The publisher of this generation went away; the grace period runs.
    PublisherGone,
}

/// Handed to the consumer when a stream is created.
#[derive(Debug)]
pub struct NewStream {
    pub name: StreamName,
    pub session: SessionId,
    pub events: mpsc::Receiver<StreamEvent>,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("unknown stream key")]
    UnknownKey,
}

/// Counters the registry keeps (read by the metrics endpoint).
#[derive(Debug, Default)]
pub struct HubStats {
    pub publishes_accepted: AtomicU64,
    pub publishes_refused: AtomicU64,
    pub takeovers: AtomicU64,
    pub frames_dropped: AtomicU64,
}

type OnNewStream = Box<dyn Fn(NewStream) + Send + Sync>;

/// The registry of live streams.
pub struct Hub {
    keys: HashMap<String, (StreamName, StreamKey)>,
    grace: Duration,
    streams: Mutex<HashMap<StreamName, Entry>>,
    on_new: OnNewStream,
    pub stats: HubStats,
}

struct Entry {
    session: SessionId,
    tx: mpsc::Sender<StreamEvent>,
    generation: u64,
    /// Cancels the current publisher's connection (takeover).
    current: Option<CancellationToken>,
}

impl Hub {
    /// `keys` are (public name, secret key) pairs; `on_new` is called (outside any lock) for
    /// every stream that comes to life.
    pub fn new(
        keys: impl IntoIterator<Item = (StreamName, StreamKey)>,
        grace: Duration,
        on_new: impl Fn(NewStream) + Send + Sync + 'static,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            keys: keys
                .into_iter()
                .map(|(name, key)| (key.expose().to_owned(), (name, key)))
                .collect(),
            grace,
            streams: Mutex::new(HashMap::new()),
            on_new: Box::new(on_new),
            stats: HubStats::default(),
        })
    }

    /// Looks up the stream a key publishes to (constant-time per candidate).
    pub fn authorize(&self, key: &str) -> Option<StreamName> {
        let mut found = None;
        for (name, k) in self.keys.values() {
            if k.matches(key) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Names of the streams that currently exist.
    pub fn live_streams(&self) -> Vec<(StreamName, SessionId, bool)> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .map(|(n, e)| (n.clone(), e.session, e.current.is_some()))
            .collect()
    }

    /// Starts publishing with `key`. On success the caller owns the [`Publisher`] for as long as
    /// its connection lives; dropping it starts the grace period.
    pub fn publish(
        self: &Arc<Self>,
        key: &str,
        peer: SocketAddr,
        protocol: &'static str,
    ) -> Result<Publisher, PublishError> {
        let Some(name) = self.authorize(key) else {
            self.stats.publishes_refused.fetch_add(1, Ordering::Relaxed);
            return Err(PublishError::UnknownKey);
        };
        let cancel = CancellationToken::new();
        let mut created = None;
        let (session, tx, generation) = {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            let entry = streams.entry(name.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let session = SessionId::generate();
                created = Some(NewStream {
                    name: name.clone(),
                    session,
                    events: rx,
                });
                Entry {
                    session,
                    tx,
                    generation: 0,
                    current: None,
                }
            });
            entry.generation += 1;
            if let Some(old) = entry.current.replace(cancel.clone()) {
                old.cancel();
                self.stats.takeovers.fetch_add(1, Ordering::Relaxed);
            }
            (entry.session, entry.tx.clone(), entry.generation)
        };
        self.stats
            .publishes_accepted
            .fetch_add(1, Ordering::Relaxed);
        if let Some(new) = created {
            (self.on_new)(new);
        }
        let publisher = Publisher {
            hub: Arc::clone(self),
            name,
            session,
            generation,
            tx,
            cancel,
            resync: false,
        };
        publisher.send_control(StreamEventKind::PublisherStarted { peer, protocol });
        Ok(publisher)
    }

    fn publisher_gone(self: &Arc<Self>, name: &StreamName, generation: u64) {
        {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            match streams.get_mut(name) {
                Some(e) if e.generation == generation => e.current = None,
                _ => return, // taken over already
            }
        }
        let hub = Arc::clone(self);
        let name = name.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (shutting down): end the stream now.
            self.end_if_idle(&name, generation);
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(hub.grace).await;
            hub.end_if_idle(&name, generation);
        });
    }

    fn end_if_idle(&self, name: &StreamName, generation: u64) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = streams.get(name) {
            if e.generation == generation && e.current.is_none() {
                tracing::info!(stream = %name, session = %e.session, "grace period over: stream ended");
                // Dropping the sender ends the consumer's stream once it drains the queue.
                streams.remove(name);
            }
        }
    }
}

/// One publisher's right to feed a stream. Dropping it (connection closed) starts the grace
/// period; a takeover cancels [`Publisher::cancelled`].
pub struct Publisher {
    hub: Arc<Hub>,
    name: StreamName,
    session: SessionId,
    generation: u64,
    tx: mpsc::Sender<StreamEvent>,
    cancel: CancellationToken,
    /// Set after a dropped frame: video is discarded until the next keyframe.
    resync: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .field("session", &self.session)
            .field("generation", &self.generation)
            .finish()
    }
}

impl Publisher {
    pub fn name(&self) -> &StreamName {
        &self.name
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Fires when another publisher took the stream over.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Sends a codec config (never dropped while the queue has room; a full queue means the
    /// consumer is stuck, and the frame resync below handles the rest).
    pub fn config(&mut self, config: CodecConfig) {
        self.send_control(StreamEventKind::Config(config));
    }

    /// Sends a frame without ever blocking the publisher. If the consumer lags and the queue is
    /// full, frames are dropped and video resumes at the next keyframe.
    pub fn frame(&mut self, frame: Frame) {
        let video = frame.track == media::Track::Video;
        if self.resync {
            if !(video && frame.keyframe) {
                self.hub
                    .stats
                    .frames_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.resync = false;
        }
        let ev = StreamEvent {
            generation: self.generation,
            at: std::time::Instant::now(),
            kind: StreamEventKind::Frame(frame),
        };
        if self.tx.try_send(ev).is_err() {
            self.hub
                .stats
                .frames_dropped
                .fetch_add(1, Ordering::Relaxed);
            self.resync = true;
        }
    }

    fn send_control(&self, kind: StreamEventKind) {
        let ev = StreamEvent {
            generation: self.generation,
            at: std::time::Instant::now(),
            kind,
        };
        if let Err(mpsc::error::TrySendError::Full(ev)) = self.tx.try_send(ev) {
            // Control events must arrive: hand them to a task that waits for room.
            let tx = self.tx.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tx.send(ev).await;
                });
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.send_control(StreamEventKind::PublisherGone);
        self.hub.publisher_gone(&self.name, self.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(grace_ms: u64) -> (Arc<Hub>, Arc<Mutex<Vec<NewStream>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let hub = Hub::new(
            [(StreamName::new("demo").unwrap(), StreamKey::new("k1"))],
            Duration::from_millis(grace_ms),
            move |n| s.lock().unwrap().push(n),
        );
        (hub, seen)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_key_is_refused_and_allocates_nothing() {
        let (hub, seen) = hub(1000);
        assert_eq!(
            hub.publish("nope", peer(), "rtmp").unwrap_err(),
            PublishError::UnknownKey
        );
        assert!(seen.lock().unwrap().is_empty());
        assert!(hub.live_streams().is_empty());
        assert_eq!(hub.stats.publishes_refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_cancels_old_publisher_and_keeps_session() {
        let (hub, seen) = hub(1000);
        let a = hub.publish("k1", peer(), "rtmp").unwrap();
        let b = hub.publish("k1", peer(), "rtmp").unwrap();
        assert!(a.cancelled().is_cancelled());
        assert_eq!(a.session(), b.session());
        assert!(b.generation() > a.generation());
        drop(a); // the old connection closing must not start the grace period
        tokio::time::advance(Duration::from_secs(5)).await;
        tokio::task::yield_now().await;
        assert_eq!(hub.live_streams().len(), 1);
        assert_eq!(seen.lock().unwrap().len(), 1, "one stream, one consumer");
    }

    #[tokio::test(start_paused = true)]
    async fn grace_period_then_end() {
        let (hub, seen) = hub(10_000);
        let a = hub.publish("k1", peer(), "rtmp").unwrap();
        drop(a);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(hub.live_streams().len(), 1, "still within grace");
        let b = hub.publish("k1", peer(), "rtmp").unwrap(); // reconnect
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(hub.live_streams().len(), 1, "reconnected stream stays");
        drop(b);
        tokio::time::sleep(Duration::from_millis(10_001)).await;
        assert!(hub.live_streams().is_empty());
        let mut stream = seen.lock().unwrap().pop().unwrap();
        let mut kinds = Vec::new();
        while let Some(ev) = stream.events.recv().await {
            kinds.push((
                ev.generation,
                matches!(ev.kind, StreamEventKind::PublisherGone),
            ));
        }
        assert_eq!(kinds, vec![(1, false), (1, true), (2, false), (2, true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_drops_until_keyframe() {
        let (hub, seen) = hub(1000);
        let mut p = hub.publish("k1", peer(), "rtmp").unwrap();
        let f = |key| Frame {
            track: media::Track::Video,
            pts: 0,
            dts: 0,
            keyframe: key,
            data: bytes::Bytes::new(),
        };
        for _ in 0..STREAM_QUEUE + 10 {
            p.frame(f(false));
        }
        assert!(hub.stats.frames_dropped.load(Ordering::Relaxed) >= 10);
        let mut stream = seen.lock().unwrap().pop().unwrap();
        while stream.events.try_recv().is_ok() {}
        p.frame(f(false));
        assert!(
            stream.events.try_recv().is_err(),
            "non-key frame dropped while resyncing"
        );
        p.frame(f(true));
        assert!(stream.events.try_recv().is_ok());
    }
}
