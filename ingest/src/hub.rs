//! The stream registry: publish authorization, one live stream per public name, takeover by a
//! new publisher, and the reconnect grace period.
//!
//! A stream is created on its first authorized publish. Its events flow through one bounded
//! channel to whoever consumes the stream (the origin's packager). Each publisher has a
//! *generation*; a new publish with the same key bumps it and cancels the old connection, and
//! consumers ignore events of older generations. When the current publisher goes away the
//! stream waits `grace`; if no one takes over by then the registry drops the channel's sender,
//! which is how consumers learn the stream has ended.

use crate::metrics::IngestMetrics;
use media::fanout::{Fanout, Protocol, StreamEvent, StreamEventKind};
use media::limits::Limit;
use media::{CodecConfig, Frame, SessionId, StreamKey, StreamName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Room per consumer in a stream's fan-out: about 4 s of 30 fps video plus audio.
pub const STREAM_QUEUE: usize = 512;

/// How many publishers may publish at once, in total and from one IP address. A publish that
/// takes over (or reconnects to) a stream replaces its publisher and is not counted twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishLimits {
    pub total: usize,
    pub per_ip: usize,
}

impl Default for PublishLimits {
    fn default() -> Self {
        PublishLimits {
            total: 256,
            per_ip: 16,
        }
    }
}

/// Handed to the binary when a stream is created: it subscribes the stream's consumers.
#[derive(Debug)]
pub struct NewStream {
    pub name: StreamName,
    pub session: SessionId,
    pub source: Arc<Fanout>,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("unknown stream key")]
    UnknownKey,
}

type OnNewStream = Box<dyn Fn(NewStream) + Send + Sync>;

/// The registry of live streams.
pub struct Hub {
    keys: HashMap<String, (StreamName, StreamKey)>,
    /// The publish hook, asked for keys `keys` does not know.
    gate: std::sync::OnceLock<Arc<crate::admission::Gate>>,
    limits: std::sync::OnceLock<PublishLimits>,
    grace: Duration,
    streams: Mutex<HashMap<StreamName, Entry>>,
    on_new: OnNewStream,
    pub metrics: IngestMetrics,
}

struct Entry {
    session: SessionId,
    fanout: Arc<Fanout>,
    generation: u64,
    /// Cancels the current publisher's connection (takeover).
    current: Option<CancellationToken>,
    /// Where the current publisher connects from (for the per-address limit).
    current_ip: Option<std::net::IpAddr>,
    /// The current publisher's uplink health.
    uplink: Arc<Mutex<crate::uplink::Uplink>>,
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
            gate: std::sync::OnceLock::new(),
            limits: std::sync::OnceLock::new(),
            streams: Mutex::new(HashMap::new()),
            on_new: Box::new(on_new),
            metrics: IngestMetrics::default(),
        })
    }

    /// Asks `gate` (the publish hook) about keys no `[[streams]]` entry knows. Set once.
    pub fn set_publish_hook(&self, gate: crate::admission::Gate) {
        let _ = self.gate.set(Arc::new(gate));
    }

    /// Whether a publish hook decides about unknown keys.
    pub fn has_publish_hook(&self) -> bool {
        self.gate.get().is_some()
    }

    /// Sets the publisher limits (default [`PublishLimits::default`]). Set once.
    pub fn set_limits(&self, limits: PublishLimits) {
        let _ = self.limits.set(limits);
    }

    /// Why one more publisher from `ip` to `name` is over a limit, if it is.
    fn over_limit(&self, name: &StreamName, ip: std::net::IpAddr) -> Option<String> {
        let limits = self.limits.get().copied().unwrap_or_default();
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        // The stream's own publisher is replaced, not added to.
        let others = streams
            .iter()
            .filter(|(n, e)| *n != name && e.current.is_some());
        let (total, from_ip) = others.fold((0, 0), |(t, i), (_, e)| {
            (t + 1, i + usize::from(e.current_ip == Some(ip)))
        });
        if total >= limits.total {
            self.metrics.refusals.count(Limit::Publishers);
            return Some(format!(
                "publisher limit reached ({} publishing, max_publishers = {})",
                total, limits.total
            ));
        }
        if from_ip >= limits.per_ip {
            self.metrics.refusals.count(Limit::PublishersPerIp);
            return Some(format!(
                "too many publishers from {ip} ({from_ip}, max_publishers_per_ip = {})",
                limits.per_ip
            ));
        }
        None
    }

    /// Decides whether a publish with `key` may go on, and as which stream: a configured key
    /// first, else the publish hook; then the publisher limits. `Err` says why not (never the
    /// key). Counted as refused.
    pub async fn admit(
        &self,
        app: &str,
        key: &str,
        protocol: Protocol,
        peer: SocketAddr,
    ) -> Result<Admitted, String> {
        let admitted = self.identify(app, key, protocol, peer).await?;
        if let Some(why) = self.over_limit(&admitted.name, peer.ip()) {
            self.metrics.refused();
            return Err(why);
        }
        Ok(admitted)
    }

    async fn identify(
        &self,
        app: &str,
        key: &str,
        protocol: Protocol,
        peer: SocketAddr,
    ) -> Result<Admitted, String> {
        let session = SessionId::generate();
        if let Some(name) = self.authorize(key) {
            return Ok(Admitted {
                name,
                session,
                hooked: false,
            });
        }
        let Some(gate) = self.gate.get() else {
            self.metrics.refused();
            return Err("unknown stream key".into());
        };
        let a = crate::admission::Admission {
            app: app.to_owned(),
            key: key.to_owned(),
            protocol,
            peer,
            session,
        };
        match gate.authorize(a, std::time::Instant::now()).await {
            Ok(name) => Ok(Admitted {
                name,
                session,
                hooked: true,
            }),
            Err(why) => {
                self.metrics.refused();
                Err(format!("the publish hook refused: {why}"))
            }
        }
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

    /// A live stream's fan-out, to subscribe another consumer (a test, a recorder).
    pub fn source(&self, name: &str) -> Option<Arc<Fanout>> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, e)| Arc::clone(&e.fanout))
    }

    /// Names of the streams that currently exist.
    pub fn live_streams(&self) -> Vec<(StreamName, SessionId, bool)> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .map(|(n, e)| (n.clone(), e.session, e.current.is_some()))
            .collect()
    }

    /// The uplink health of every live stream's current publisher (call about once a second).
    pub fn uplinks(&self) -> Vec<(StreamName, SessionId, crate::uplink::UplinkStatus)> {
        let now = std::time::Instant::now();
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .filter(|(_, e)| e.current.is_some())
            .map(|(n, e)| {
                let status = e
                    .uplink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .status(now);
                (n.clone(), e.session, status)
            })
            .collect()
    }

    /// Starts publishing with `key`. On success the caller owns the [`Publisher`] for as long as
    /// its connection lives; dropping it starts the grace period.
    pub fn publish(
        self: &Arc<Self>,
        key: &str,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Result<Publisher, PublishError> {
        let Some(name) = self.authorize(key) else {
            self.metrics.refused();
            return Err(PublishError::UnknownKey);
        };
        let admitted = Admitted {
            name,
            session: SessionId::generate(),
            hooked: false,
        };
        Ok(self.publish_admitted(admitted, peer, protocol))
    }

    /// Starts publishing what [`Hub::admit`] let in.
    pub fn publish_admitted(
        self: &Arc<Self>,
        admitted: Admitted,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Publisher {
        let Admitted {
            name,
            session: new_session,
            hooked,
        } = admitted;
        let cancel = CancellationToken::new();
        let mut created = None;
        let (session, fanout, generation, uplink) = {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            let entry = streams.entry(name.clone()).or_insert_with(|| {
                let fanout = Fanout::new(name.as_str(), STREAM_QUEUE, self.metrics.fanout.clone());
                let session = new_session;
                created = Some(NewStream {
                    name: name.clone(),
                    session,
                    source: Arc::clone(&fanout),
                });
                Entry {
                    session,
                    fanout,
                    generation: 0,
                    current: None,
                    current_ip: None,
                    uplink: Default::default(),
                }
            });
            if created.is_some() {
                // The stream's reconnect count exists from its start (0 is information).
                self.metrics.reconnects.with_label_values(&[name.as_str()]);
            } else if entry.current.is_none() {
                // Back within the grace period: the same session goes on.
                self.metrics
                    .reconnects
                    .with_label_values(&[name.as_str()])
                    .inc();
            }
            // Each publisher's uplink is its own.
            entry.uplink = Default::default();
            entry.generation += 1;
            entry.current_ip = Some(peer.ip());
            if let Some(old) = entry.current.replace(cancel.clone()) {
                old.cancel();
                self.metrics.takeovers.inc();
            }
            (
                entry.session,
                Arc::clone(&entry.fanout),
                entry.generation,
                Arc::clone(&entry.uplink),
            )
        };
        self.metrics.accepted();
        if let Some(new) = created {
            (self.on_new)(new);
        }
        let publisher = Publisher {
            hub: Arc::clone(self),
            name,
            session,
            generation,
            fanout,
            cancel,
            uplink,
            peer,
            protocol,
            hooked,
        };
        publisher.send(StreamEventKind::PublisherStarted { peer, protocol });
        publisher
    }

    fn publisher_gone(self: &Arc<Self>, name: &StreamName, generation: u64) {
        {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            match streams.get_mut(name) {
                Some(e) if e.generation == generation => {
                    e.current = None;
                    e.current_ip = None;
                }
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
                // Consumers see the end once they drain their queues.
                e.fanout.close();
                streams.remove(name);
            }
        }
    }
}

/// What [`Hub::admit`] decided: the public stream, the session id a new stream gets, and
/// whether the publish hook let it in (it then hears when the publisher goes).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub name: StreamName,
    pub session: SessionId,
    pub hooked: bool,
}

/// One publisher's right to feed a stream. Dropping it (connection closed) starts the grace
/// period; a takeover cancels [`Publisher::cancelled`].
pub struct Publisher {
    hub: Arc<Hub>,
    name: StreamName,
    session: SessionId,
    generation: u64,
    fanout: Arc<Fanout>,
    cancel: CancellationToken,
    uplink: Arc<Mutex<crate::uplink::Uplink>>,
    peer: SocketAddr,
    protocol: Protocol,
    hooked: bool,
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

    /// Sends a codec config (late joiners and resynchronised consumers see it too).
    pub fn config(&mut self, config: CodecConfig) {
        self.send(StreamEventKind::Config(config));
    }

    /// Sends a frame to every consumer without ever blocking: a consumer that lags is
    /// resynchronised at the next keyframe by the fan-out, alone.
    pub fn frame(&mut self, frame: Frame) {
        self.uplink.lock().unwrap_or_else(|e| e.into_inner()).frame(
            frame.pts.as_secs_f64(),
            frame.data.len(),
            frame.track == media::Track::Video,
            std::time::Instant::now(),
        );
        self.send(StreamEventKind::Frame(frame));
    }

    fn send(&self, kind: StreamEventKind) {
        self.fanout.send(StreamEvent {
            generation: self.generation,
            at: std::time::Instant::now(),
            kind,
        });
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.send(StreamEventKind::PublisherGone);
        self.hub.publisher_gone(&self.name, self.generation);
        if self.hooked {
            if let Some(gate) = self.hub.gate.get() {
                gate.unpublished(crate::admission::Unpublished {
                    name: self.name.clone(),
                    protocol: self.protocol,
                    peer: self.peer,
                    session: self.session,
                });
            }
        }
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
            hub.publish("nope", peer(), Protocol::Rtmp).unwrap_err(),
            PublishError::UnknownKey
        );
        assert!(seen.lock().unwrap().is_empty());
        assert!(hub.live_streams().is_empty());
        assert_eq!(
            hub.metrics.publishes.with_label_values(&["refused"]).get(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_cancels_old_publisher_and_keeps_session() {
        let (hub, seen) = hub(1000);
        let a = hub.publish("k1", peer(), Protocol::Rtmp).unwrap();
        let b = hub.publish("k1", peer(), Protocol::Rtmp).unwrap();
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
    async fn publisher_limits_count_other_streams_never_a_takeover() {
        let hub = Hub::new(
            [
                (StreamName::new("demo").unwrap(), StreamKey::new("k1")),
                (StreamName::new("two").unwrap(), StreamKey::new("k2")),
                (StreamName::new("three").unwrap(), StreamKey::new("k3")),
            ],
            Duration::from_secs(1),
            |_| {},
        );
        hub.set_limits(PublishLimits {
            total: 2,
            per_ip: 1,
        });
        let admit = |key: &'static str, from: &'static str| {
            let hub = Arc::clone(&hub);
            async move {
                hub.admit("live", key, Protocol::Rtmp, from.parse().unwrap())
                    .await
            }
        };
        let a = admit("k1", "127.0.0.1:1").await.unwrap();
        let _p = hub.publish_admitted(a, peer(), Protocol::Rtmp);
        let e = admit("k2", "127.0.0.1:2").await.unwrap_err();
        assert!(e.contains("too many publishers from 127.0.0.1"), "{e}");
        assert!(
            admit("k1", "127.0.0.1:3").await.is_ok(),
            "a takeover replaces"
        );
        let b = admit("k2", "127.0.0.2:1").await.unwrap();
        let _q = hub.publish_admitted(b, "127.0.0.2:1".parse().unwrap(), Protocol::Rtmp);
        let e = admit("k3", "127.0.0.3:1").await.unwrap_err();
        assert!(e.contains("publisher limit reached"), "{e}");
        assert!(admit("nope", "127.0.0.4:1")
            .await
            .unwrap_err()
            .contains("unknown"));
    }

    #[tokio::test(start_paused = true)]
    async fn grace_period_then_end() {
        let (hub, seen) = hub(10_000);
        let mut events = hub_subscribe(&hub, &seen);
        let a = hub.publish("k1", peer(), Protocol::Rtmp).unwrap();
        drop(a);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(hub.live_streams().len(), 1, "still within grace");
        let b = hub.publish("k1", peer(), Protocol::Rtmp).unwrap(); // reconnect
        assert_eq!(
            hub.metrics.reconnects.with_label_values(&["demo"]).get(),
            2,
            "a after the helper's publisher, then b: two reconnects"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(hub.live_streams().len(), 1, "reconnected stream stays");
        drop(b);
        tokio::time::sleep(Duration::from_millis(10_001)).await;
        assert!(hub.live_streams().is_empty());
        let mut kinds = Vec::new();
        while let Some(ev) = events.recv().await {
            kinds.push((
                ev.generation,
                matches!(ev.kind, StreamEventKind::PublisherGone),
            ));
        }
        let want = [
            (1, false),
            (1, true),
            (2, false),
            (2, true),
            (3, false),
            (3, true),
        ];
        assert_eq!(kinds, want, "every generation starts and ends, in order");
    }

    /// Subscribes before the first publish, the way the binary's consumers do.
    fn hub_subscribe(
        hub: &Arc<Hub>,
        seen: &Arc<Mutex<Vec<NewStream>>>,
    ) -> media::fanout::Subscription {
        // The stream exists from its first publish; create it with a throwaway publisher.
        let p = hub.publish("k1", peer(), Protocol::Rtmp).unwrap();
        let sub = seen.lock().unwrap()[0].source.subscribe("test");
        drop(p);
        sub
    }
}
