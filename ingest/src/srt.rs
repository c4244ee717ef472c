//! The SRT listener: libsrt (through the `libsrt` wrapper) in live mode, access control during
//! the handshake (stream id → key → stream, per-stream passphrase, rejection reasons), one
//! thread per publisher feeding the [`TsDemuxer`] and the [`Hub`] — the same frames and the
//! same takeover/grace rules as RTMP.
//!
//! Why libsrt and not srt-tokio: srt-tokio 0.4.4 panics its listener task on a
//! `transtype=file` caller (an `unimplemented!` in srt-protocol) and every later caller fails;
//! libsrt is the implementation OBS, ffmpeg and hardware encoders use, rejects mismatched
//! callers in the handshake itself, supports the access-control callback with per-connection
//! passphrases and SRT rejection reasons, and keeps all its sessions independent.

use crate::hub::Hub;
use crate::ts::{TsDemuxer, TsEvent};
use libsrt::{reject, Access, AccessRequest, ListenOptions, Listener, Recv};
use media::fanout::Protocol;
use media::StreamName;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// SRT listener settings.
#[derive(Debug, Clone)]
pub struct SrtConfig {
    /// TSBPD latency.
    pub latency: Duration,
    /// Server-wide passphrase (callers must encrypt with it).
    pub passphrase: Option<String>,
    /// Per-stream passphrases; they take precedence over the server-wide one.
    pub stream_passphrases: HashMap<StreamName, String>,
    /// A publisher that sends no data for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Handshakes accepted per source address per `handshake_window` (flood protection).
    pub handshakes_per_window: usize,
    pub handshake_window: Duration,
}

impl Default for SrtConfig {
    fn default() -> Self {
        SrtConfig {
            latency: Duration::from_millis(120),
            passphrase: None,
            stream_passphrases: HashMap::new(),
            idle_timeout: Duration::from_secs(10),
            max_connections: 256,
            handshakes_per_window: 20,
            handshake_window: Duration::from_secs(10),
        }
    }
}

/// Why a stream id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("malformed stream id")]
    Malformed,
    #[error("stream id asks for a mode other than publish")]
    Mode,
}

/// Extracts the publish key from an SRT stream id. Accepted forms:
/// `#!::r=live/KEY,m=publish` (SRT Access Control; other `key=value` pairs ignored, `m`
/// optional but must be `publish` when present), `publish:live/KEY`, and `live/KEY`.
pub fn parse_stream_id(id: &str) -> Result<&str, StreamIdError> {
    let resource = if let Some(rest) = id.strip_prefix("#!::") {
        let mut resource = None;
        for pair in rest.split(',') {
            let (k, v) = pair.split_once('=').ok_or(StreamIdError::Malformed)?;
            match k {
                "r" => resource = Some(v),
                "m" if v != "publish" => return Err(StreamIdError::Mode),
                _ => {}
            }
        }
        resource.ok_or(StreamIdError::Malformed)?
    } else if let Some(rest) = id.strip_prefix("publish:") {
        rest
    } else {
        id
    };
    let key = resource
        .strip_prefix("live/")
        .ok_or(StreamIdError::Malformed)?;
    let valid = !key.is_empty()
        && key.len() <= 256
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'/');
    valid.then_some(key).ok_or(StreamIdError::Malformed)
}

/// Per-address handshake rate limit (sliding window).
#[derive(Debug, Default)]
struct RateLimit {
    seen: HashMap<IpAddr, VecDeque<Instant>>,
}

impl RateLimit {
    fn allow(&mut self, ip: IpAddr, now: Instant, max: usize, window: Duration) -> bool {
        if self.seen.len() > 10_000 {
            self.seen
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = self.seen.entry(ip).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() >= max {
            return false;
        }
        q.push_back(now);
        true
    }
}

/// The running SRT listener.
#[derive(Debug)]
pub struct SrtHandle {
    pub local_addr: SocketAddr,
    accept: std::thread::JoinHandle<()>,
    active: Arc<AtomicUsize>,
}

impl SrtHandle {
    /// After shutdown: waits for the accept thread and (up to `timeout`) for the connection
    /// threads to finish, so libsrt's exit-time cleanup finds no socket in use.
    pub fn join(self, timeout: Duration) {
        let _ = self.accept.join();
        let end = Instant::now() + timeout;
        while self.active.load(Ordering::Relaxed) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts the SRT listener on `addr`. Connections are served on their own threads until
/// `shutdown` fires (which closes the listener and every connection).
pub fn start(
    addr: SocketAddr,
    hub: Arc<Hub>,
    config: SrtConfig,
    shutdown: CancellationToken,
) -> std::io::Result<SrtHandle> {
    let runtime = tokio::runtime::Handle::current();
    let active = Arc::new(AtomicUsize::new(0));
    let limiter = Mutex::new(RateLimit::default());
    let access = {
        let hub = Arc::clone(&hub);
        let config = config.clone();
        let active = Arc::clone(&active);
        move |req: &AccessRequest| -> Access {
            let peer = req.peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
            if let Some(ip) = req.peer.map(|p| p.ip()) {
                let mut l = limiter.lock().unwrap_or_else(|e| e.into_inner());
                if !l.allow(
                    ip,
                    Instant::now(),
                    config.handshakes_per_window,
                    config.handshake_window,
                ) {
                    warn!(%peer, "srt handshake refused: too many from this address");
                    return Access::Reject(reject::OVERLOAD);
                }
            }
            if active.load(Ordering::Relaxed) >= config.max_connections {
                warn!(%peer, "srt handshake refused: connection limit");
                return Access::Reject(reject::OVERLOAD);
            }
            let key = match parse_stream_id(&req.stream_id) {
                Ok(k) => k,
                Err(e) => {
                    warn!(%peer, error = %e, "srt handshake refused");
                    hub.metrics.refused();
                    return Access::Reject(match e {
                        StreamIdError::Mode => reject::BAD_MODE,
                        StreamIdError::Malformed => reject::BAD_REQUEST,
                    });
                }
            };
            match hub.authorize(key) {
                Some(name) => Access::Accept(config.stream_passphrases.get(&name).cloned()),
                // The publish hook decides once the connection is up (it may take a while;
                // this callback holds libsrt's handshake thread).
                None if hub.has_publish_hook() => Access::Accept(None),
                None => {
                    warn!(%peer, "srt handshake refused: unknown stream key");
                    hub.metrics.refused();
                    Access::Reject(reject::FORBIDDEN)
                }
            }
        }
    };
    let options = ListenOptions {
        latency_ms: i32::try_from(config.latency.as_millis()).unwrap_or(i32::MAX),
        passphrase: config.passphrase.clone(),
        peer_idle_timeout_ms: 5000,
        backlog: 64,
    };
    let listener = Listener::bind(addr, &options, access)?;
    let local = listener.local_addr()?;
    let config = Arc::new(config);
    let active_count = Arc::clone(&active);
    let accept = std::thread::Builder::new()
        .name("srt-accept".into())
        .spawn(move || loop {
            if shutdown.is_cancelled() {
                // Closed here, by the only thread that accepts on it (see libsrt::Listener).
                listener.close();
                return;
            }
            let (socket, peer) = match listener.accept_timeout(250) {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "srt accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            active.fetch_add(1, Ordering::Relaxed);
            let (hub, config, runtime, active, shutdown) = (
                Arc::clone(&hub),
                Arc::clone(&config),
                runtime.clone(),
                Arc::clone(&active),
                shutdown.clone(),
            );
            let spawned = std::thread::Builder::new().name("srt-conn".into()).spawn(move || {
                let _rt = runtime.enter();
                let peer_s = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
                let span = tracing::info_span!("srt", peer = %peer_s, stream = tracing::field::Empty, session = tracing::field::Empty);
                let _e = span.enter();
                match serve(&socket, peer, &hub, &config, &shutdown) {
                    Ok(why) => info!("srt connection closed: {why}"),
                    Err(e) => warn!(error = %e, "srt connection ended"),
                }
                drop(socket);
                active.fetch_sub(1, Ordering::Relaxed);
            });
            if spawned.is_err() {
                warn!("could not start a thread for an srt connection");
            }
        })?;
    Ok(SrtHandle {
        local_addr: local,
        accept,
        active: active_count,
    })
}

/// Why an SRT connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SrtConnError {
    #[error("refused: {0}")]
    StreamId(#[from] StreamIdError),
    #[error("refused publish: {0}")]
    Refused(String),
    #[error("bad media: {0}")]
    Media(#[from] crate::ts::TsError),
    #[error("no data for {0:?}")]
    Idle(Duration),
}

fn serve(
    socket: &libsrt::Socket,
    peer: Option<SocketAddr>,
    hub: &Arc<Hub>,
    config: &SrtConfig,
    shutdown: &CancellationToken,
) -> Result<&'static str, SrtConnError> {
    let stream_id = socket.stream_id();
    let key = parse_stream_id(&stream_id)?;
    let peer_addr = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let decision = tokio::runtime::Handle::current().block_on(hub.admit(
        "live",
        key,
        Protocol::Srt,
        peer_addr,
    ));
    let mut publisher = hub.publish_admitted(
        decision.map_err(SrtConnError::Refused)?,
        peer_addr,
        Protocol::Srt,
    );
    let span = tracing::Span::current();
    span.record("stream", tracing::field::display(publisher.name()));
    span.record("session", tracing::field::display(publisher.session()));
    info!(generation = publisher.generation(), "publish accepted");
    let counters = hub.metrics.counters(publisher.name());
    let cancelled = publisher.cancelled();
    let _ = socket.set_recv_timeout(250);
    let mut demux = TsDemuxer::default();
    let mut buf = vec![0u8; 1500];
    let mut last_data = Instant::now();
    let mut transport = SrtFigures::new(hub, publisher.name().as_str());
    loop {
        transport.sample(socket);
        if cancelled.is_cancelled() {
            return Ok("taken over by a new publisher");
        }
        if shutdown.is_cancelled() {
            return Ok("server shutting down");
        }
        match socket.recv(&mut buf) {
            Recv::Data(n) => {
                last_data = Instant::now();
                counters.bytes.inc_by(n as u64);
                let dropped_before = demux.stats.dropped_pes;
                let events = demux.push(&buf[..n])?;
                counters
                    .dropped_frames
                    .inc_by(demux.stats.dropped_pes - dropped_before);
                for ev in events {
                    match ev {
                        TsEvent::Config(c) => publisher.config(c),
                        TsEvent::Frame(f) => {
                            let c = if f.track == media::Track::Video {
                                &counters.video_frames
                            } else {
                                &counters.audio_frames
                            };
                            c.inc();
                            publisher.frame(f);
                        }
                    }
                }
            }
            Recv::Timeout => {
                if last_data.elapsed() >= config.idle_timeout {
                    return Err(SrtConnError::Idle(config.idle_timeout));
                }
            }
            Recv::Closed => {
                if demux.stats.continuity_errors > 0 {
                    info!(
                        continuity_errors = demux.stats.continuity_errors,
                        dropped_pes = demux.stats.dropped_pes,
                        "ts damage tolerated during the session"
                    );
                }
                return Ok("publisher disconnected");
            }
        }
    }
}

/// Carries libsrt's per-connection totals into the stream's metrics about once a second.
struct SrtFigures<'a> {
    metrics: &'a crate::metrics::SrtMetrics,
    stream: String,
    last: libsrt::Stats,
    next: Instant,
}

impl<'a> SrtFigures<'a> {
    fn new(hub: &'a Hub, stream: &str) -> SrtFigures<'a> {
        SrtFigures {
            metrics: &hub.metrics.srt,
            stream: stream.to_owned(),
            last: libsrt::Stats::default(),
            next: Instant::now(),
        }
    }

    fn sample(&mut self, socket: &libsrt::Socket) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        let Some(s) = socket.stats() else { return };
        let m = self.metrics;
        let l = [self.stream.as_str()];
        m.rtt.with_label_values(&l).set(s.rtt.as_secs_f64());
        m.receive_buffer
            .with_label_values(&l)
            .set(s.receive_buffer.as_secs_f64());
        m.receive_buffer_bytes
            .with_label_values(&l)
            .set(i64::try_from(s.receive_buffer_bytes).unwrap_or(i64::MAX));
        let add = |c: &prometheus::IntCounterVec, now: u64, before: u64| {
            c.with_label_values(&l).inc_by(now.saturating_sub(before));
        };
        add(&m.received, s.packets_received, self.last.packets_received);
        add(&m.lost, s.packets_lost, self.last.packets_lost);
        add(
            &m.retransmitted,
            s.packets_retransmitted,
            self.last.packets_retransmitted,
        );
        add(&m.dropped, s.packets_dropped, self.last.packets_dropped);
        self.last = s;
    }
}

impl Drop for SrtFigures<'_> {
    fn drop(&mut self) {
        self.metrics.forget(&self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_forms() {
        assert_eq!(parse_stream_id("#!::r=live/k1,m=publish"), Ok("k1"));
        assert_eq!(
            parse_stream_id("#!::m=publish,u=bob,r=live/k1,x=y"),
            Ok("k1")
        );
        assert_eq!(parse_stream_id("#!::r=live/k1"), Ok("k1"));
        assert_eq!(parse_stream_id("publish:live/k1"), Ok("k1"));
        assert_eq!(parse_stream_id("live/k1"), Ok("k1"));
        assert_eq!(
            parse_stream_id("#!::r=live/k1,m=request"),
            Err(StreamIdError::Mode)
        );
        for bad in [
            "",
            "k1",
            "#!::",
            "#!::m=publish",
            "#!::r",
            "live/",
            "other/k1",
            "publish:k1",
            "live/a/b",
            "live/a b",
        ] {
            assert_eq!(
                parse_stream_id(bad),
                Err(StreamIdError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn handshake_rate_limit_is_per_address_and_slides() {
        let mut l = RateLimit::default();
        let t = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.allow(a, t, 3, Duration::from_secs(10)));
        }
        assert!(!l.allow(a, t, 3, Duration::from_secs(10)));
        assert!(l.allow(b, t, 3, Duration::from_secs(10)));
        assert!(l.allow(a, t + Duration::from_secs(11), 3, Duration::from_secs(10)));
    }
}
