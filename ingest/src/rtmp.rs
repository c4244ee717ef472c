//! The RTMP listener: a thin tokio driver around rml_rtmp's handshake and server session, the
//! [`FlvDemuxer`] and the [`Hub`].
//!
//! Per connection: handshake (with a deadline) → `connect` (app must be `live`) → `publish`
//! with a key the hub accepts → media. Nothing stream-related is allocated before the publish
//! is authorized. Any protocol error, a play request, or an unknown key ends the connection
//! with one log line naming the peer (never the key).

use crate::chunk_guard::{ChunkError, ChunkGuard, ChunkLimits};
use crate::flv::{FlvDemuxer, FlvEvent};
use crate::hub::{Hub, Publisher};
use crate::metrics::IngestCounters;
use bytes::Bytes;
use media::fanout::Protocol;
use media::limits::Limit;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// Listener settings.
#[derive(Debug, Clone)]
pub struct RtmpConfig {
    /// The RTMP application publishers connect to (`rtmp://host/live`).
    pub app: String,
    /// The whole handshake must finish within this time.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (a publisher sends many
    /// messages per second; OBS sends acknowledgements even when idle).
    pub idle_timeout: Duration,
    /// Connections served at once; further ones are closed at accept.
    pub max_connections: usize,
    /// Bytes a connection may send before its publish is accepted.
    pub max_bytes_before_publish: u64,
    /// Chunk size and message size limits (checked before rml_rtmp sees the bytes).
    pub chunks: ChunkLimits,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            app: "live".into(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_bytes_before_publish: 1 << 20,
            chunks: ChunkLimits::default(),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed (a plain RTMP client on the RTMPS port?): {0}")]
    Tls(std::io::Error),
    #[error("rtmp session: {0}")]
    Session(String),
    #[error("refused connect to app {0:?}")]
    WrongApp(String),
    #[error("refused publish: {0}")]
    Refused(String),
    #[error("refused play request: playback is HLS only")]
    Play,
    #[error("sent {0} bytes without publishing")]
    TooMuchBeforePublish(u64),
    #[error("refused chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("bad media: {0}")]
    Media(#[from] crate::flv::FlvError),
    #[error("taken over by a new publisher")]
    TakenOver,
}

impl ConnError {
    /// The limit this ending is a refusal at, if any.
    fn limit(&self) -> Option<Limit> {
        match self {
            ConnError::HandshakeTimeout(_) => Some(Limit::RtmpHandshakeTimeout),
            ConnError::Idle(_) => Some(Limit::RtmpIdleTimeout),
            ConnError::TooMuchBeforePublish(_) => Some(Limit::RtmpBytesBeforePublish),
            ConnError::Chunk(
                ChunkError::MessageTooLarge { .. } | ChunkError::CommandTooLarge(_),
            ) => Some(Limit::RtmpMessageSize),
            ConnError::Chunk(ChunkError::ChunkSizeTooLarge { .. } | ChunkError::ZeroChunkSize) => {
                Some(Limit::RtmpChunkSize)
            }
            _ => None,
        }
    }
}

/// Accepts RTMP connections until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: RtmpConfig,
    shutdown: CancellationToken,
) {
    accept(listener, None, hub, config, shutdown).await
}

/// Accepts RTMPS connections (RTMP inside TLS, what OBS calls `rtmps://`) until `shutdown`
/// fires: the same session, authorization and limits as RTMP once TLS is up. A client that
/// does not speak TLS (plain RTMP on this port) fails the TLS handshake and is closed.
pub async fn run_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    hub: Arc<Hub>,
    config: RtmpConfig,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    accept(listener, Some(acceptor), hub, config, shutdown).await
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Arc<Hub>,
    config: RtmpConfig,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let config = Arc::new(config);
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            warn!(%peer, max_connections = config.max_connections, "rtmp connection refused: too many connections");
            hub.metrics.refusals.count(Limit::RtmpConnections);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let hub = Arc::clone(&hub);
        let config = Arc::clone(&config);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let span = match tls {
            Some(_) => {
                tracing::info_span!("rtmps", %peer, stream = tracing::field::Empty, session = tracing::field::Empty)
            }
            None => {
                tracing::info_span!("rtmp", %peer, stream = tracing::field::Empty, session = tracing::field::Empty)
            }
        };
        tokio::spawn(
            async move {
                let _permit = permit;
                let result = tokio::select! {
                    r = connection(socket, tls, peer, &hub, &config) => r,
                    _ = shutdown.cancelled() => Ok(()),
                };
                match result {
                    Ok(()) => info!("rtmp connection closed"),
                    Err(e) => {
                        if let Some(limit) = e.limit() {
                            hub.metrics.refusals.count(limit);
                        }
                        warn!(error = %e, "rtmp connection ended")
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// One connection: TLS first when this is the RTMPS listener, then the RTMP session.
async fn connection(
    socket: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
    hub: &Arc<Hub>,
    config: &RtmpConfig,
) -> Result<(), ConnError> {
    let Some(acceptor) = tls else {
        return serve(socket, Protocol::Rtmp, peer, hub, config).await;
    };
    let stream = tokio::time::timeout(config.handshake_timeout, acceptor.accept(socket))
        .await
        .map_err(|_| ConnError::HandshakeTimeout(config.handshake_timeout))?
        .map_err(ConnError::Tls)?;
    serve(stream, Protocol::Rtmps, peer, hub, config).await
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    protocol: Protocol,
    peer: SocketAddr,
    hub: &Arc<Hub>,
    config: &RtmpConfig,
) -> Result<(), ConnError> {
    let remaining = tokio::time::timeout(config.handshake_timeout, handshake(&mut socket))
        .await
        .map_err(|_| ConnError::HandshakeTimeout(config.handshake_timeout))??;

    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
        .map_err(|e| ConnError::Session(e.to_string()))?;
    let mut conn = Conn {
        session: &mut session,
        out: Vec::new(),
        publisher: None,
        demux: FlvDemuxer::default(),
        counters: None,
        hub,
        peer,
        protocol,
        config,
        received: 0,
        pending: None,
        guard: ChunkGuard::new(config.chunks, MAX_MESSAGE_BEFORE_PUBLISH),
    };
    conn.results(initial)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = remaining;
    let mut cancelled = CancellationToken::new();
    loop {
        if !pending.is_empty() {
            let input = std::mem::take(&mut pending);
            let step = conn.input(&input);
            socket.write_all(&conn.out).await?;
            conn.out.clear();
            step?;
            if let Some(p) = conn.pending.take() {
                let decision = hub.admit(&p.app, &p.key, protocol, peer).await;
                let step = conn.decide(p.request_id, decision);
                socket.write_all(&conn.out).await?;
                conn.out.clear();
                step?;
            }
            if let Some(p) = &conn.publisher {
                cancelled = p.cancelled();
            }
        }
        let n = tokio::select! {
            r = tokio::time::timeout(config.idle_timeout, socket.read(&mut buf)) => {
                r.map_err(|_| ConnError::Idle(config.idle_timeout))??
            }
            _ = cancelled.cancelled() => return Err(ConnError::TakenOver),
        };
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
) -> Result<Vec<u8>, ConnError> {
    let mut hs = Handshake::new(PeerType::Server);
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(ConnError::Handshake("peer closed during handshake".into()));
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| ConnError::Handshake(e.to_string()))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// The per-connection protocol state: feeds bytes to the session and reacts to its events.
/// Pure with respect to I/O: outbound bytes collect in `out` for the driver to write.
struct Conn<'a> {
    session: &'a mut ServerSession,
    out: Vec<u8>,
    publisher: Option<Publisher>,
    demux: FlvDemuxer,
    counters: Option<IngestCounters>,
    hub: &'a Arc<Hub>,
    peer: SocketAddr,
    protocol: Protocol,
    config: &'a RtmpConfig,
    received: u64,
    /// A publish request waiting for its authorization.
    pending: Option<PendingPublish>,
    guard: ChunkGuard,
}

/// Commands before a publish (connect, createStream, publish) are a few hundred bytes.
const MAX_MESSAGE_BEFORE_PUBLISH: u32 = 64 << 10;

/// A publish request the driver must authorize before the session answers it.
struct PendingPublish {
    request_id: u32,
    app: String,
    key: String,
}

impl Conn<'_> {
    fn input(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.received += bytes.len() as u64;
        match &self.counters {
            Some(c) => {
                c.bytes.inc_by(bytes.len() as u64);
            }
            None if self.received > self.config.max_bytes_before_publish => {
                return Err(ConnError::TooMuchBeforePublish(self.received));
            }
            None => {}
        }
        self.guard.feed(bytes)?;
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|e| ConnError::Session(e.to_string()))?;
        self.results(results)
    }

    fn results(&mut self, results: Vec<ServerSessionResult>) -> Result<(), ConnError> {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(ev) => self.event(ev)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    /// Answers the pending publish request with what [`Hub::admit`] decided.
    fn decide(
        &mut self,
        request_id: u32,
        decision: Result<crate::hub::Admitted, String>,
    ) -> Result<(), ConnError> {
        match decision {
            Ok(admitted) => {
                let p = self
                    .hub
                    .publish_admitted(admitted, self.peer, self.protocol);
                let span = tracing::Span::current();
                span.record("stream", tracing::field::display(p.name()));
                span.record("session", tracing::field::display(p.session()));
                info!(generation = p.generation(), "publish accepted");
                self.counters = Some(self.hub.metrics.counters(p.name()));
                self.publisher = Some(p);
                self.guard.publishing();
                let r = self
                    .session
                    .accept_request(request_id)
                    .map_err(|e| ConnError::Session(e.to_string()))?;
                self.results(r)
            }
            Err(why) => {
                let r = self
                    .session
                    .reject_request(request_id, "NetStream.Publish.BadName", &why)
                    .map_err(|e| ConnError::Session(e.to_string()))?;
                self.results(r)?;
                Err(ConnError::Refused(why))
            }
        }
    }

    fn event(&mut self, ev: ServerSessionEvent) -> Result<(), ConnError> {
        match ev {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') != self.config.app {
                    let r = self
                        .session
                        .reject_request(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            "unknown application",
                        )
                        .map_err(|e| ConnError::Session(e.to_string()))?;
                    self.results(r)?;
                    return Err(ConnError::WrongApp(app_name));
                }
                let r = self
                    .session
                    .accept_request(request_id)
                    .map_err(|e| ConnError::Session(e.to_string()))?;
                self.results(r)?;
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                // OBS and ffmpeg may append a query string to the key. The driver decides
                // (a configured key, else the publish hook) and answers with `decide`.
                let key = stream_key.split('?').next().unwrap_or_default();
                self.pending = Some(PendingPublish {
                    request_id,
                    app: app_name,
                    key: key.to_owned(),
                });
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let r = self
                    .session
                    .reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "RTMP playback is not offered: play the stream over HLS at /live/{name}/index.m3u8",
                    )
                    .map_err(|e| ConnError::Session(e.to_string()))?;
                self.results(r)?;
                return Err(ConnError::Play);
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.media(true, timestamp.value, &data)?;
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.media(false, timestamp.value, &data)?;
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                info!("publisher sent deleteStream/FCUnpublish");
                self.publisher = None;
            }
            _ => {}
        }
        Ok(())
    }

    fn media(&mut self, video: bool, ts: u32, data: &Bytes) -> Result<(), ConnError> {
        let Some(publisher) = self.publisher.as_mut() else {
            return Ok(()); // media on a stream that is not publishing: ignore
        };
        let ev = if video {
            self.demux.video(ts, data)?
        } else {
            self.demux.audio(ts, data)?
        };
        match ev {
            Some(FlvEvent::Config(c)) => publisher.config(c),
            Some(FlvEvent::Frame(f)) => {
                if let Some(c) = &self.counters {
                    let counter = if video {
                        &c.video_frames
                    } else {
                        &c.audio_frames
                    };
                    counter.inc();
                }
                publisher.frame(f);
            }
            None => {}
        }
        Ok(())
    }
}

/// What [`replay`] saw.
#[derive(Debug, Default)]
pub struct Replay {
    pub configs: usize,
    pub frames: usize,
    /// Why the connection would have ended, if it would have.
    pub error: Option<String>,
}

/// Drives the session layer over `input` (what a client sends after the handshake, fed
/// `step` bytes at a time) the way a connection does — the chunk guard, rml_rtmp's session,
/// `connect` and `publish` accepted whatever the app and key, media through the FLV demuxer —
/// without a hub or a socket: for the fuzz targets and tests with captured bytes.
pub fn replay(input: &[u8], step: usize, limits: ChunkLimits) -> Replay {
    let mut out = Replay::default();
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else {
        return out;
    };
    let mut guard = ChunkGuard::new(limits, MAX_MESSAGE_BEFORE_PUBLISH);
    let mut demux = FlvDemuxer::default();
    let mut publishing = false;
    let mut results = Vec::new();
    let fail = |out: &mut Replay, e: String| out.error = Some(e);
    for bytes in input.chunks(step.max(1)) {
        if let Err(e) = guard.feed(bytes) {
            fail(&mut out, e.to_string());
            return out;
        }
        match session.handle_input(bytes) {
            Ok(r) => results.extend(r),
            Err(e) => {
                fail(&mut out, e.to_string());
                return out;
            }
        }
        for r in std::mem::take(&mut results) {
            let ServerSessionResult::RaisedEvent(ev) = r else {
                continue;
            };
            let answer = match ev {
                ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                    session.accept_request(request_id)
                }
                ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    publishing = true;
                    guard.publishing();
                    session.accept_request(request_id)
                }
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } if publishing => {
                    match demux.video(timestamp.value, &data) {
                        Ok(Some(FlvEvent::Config(_))) => out.configs += 1,
                        Ok(Some(FlvEvent::Frame(_))) => out.frames += 1,
                        Ok(None) => {}
                        Err(e) => fail(&mut out, e.to_string()),
                    }
                    Ok(Vec::new())
                }
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } if publishing => {
                    match demux.audio(timestamp.value, &data) {
                        Ok(Some(FlvEvent::Config(_))) => out.configs += 1,
                        Ok(Some(FlvEvent::Frame(_))) => out.frames += 1,
                        Ok(None) => {}
                        Err(e) => fail(&mut out, e.to_string()),
                    }
                    Ok(Vec::new())
                }
                _ => Ok(Vec::new()),
            };
            if out.error.is_some() {
                return out;
            }
            if let Err(e) = answer {
                fail(&mut out, e.to_string());
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG: &[u8] = include_bytes!("../testdata/ffmpeg_publish_after_handshake.rtmp");

    #[test]
    fn replaying_ffmpegs_publish_gives_its_configs_and_frames_in_any_split() {
        // 1 s at 30 fps and 48 kHz AAC (1024 samples a frame): 30 video + ~47 audio frames.
        // (Steps small enough that the publish is answered before media arrives: rml_rtmp
        // drops media that comes in the same input as the publish request, and ffmpeg waits
        // for the answer, as OBS does.)
        for step in [1, 7, 100] {
            let r = replay(FFMPEG, step, ChunkLimits::default());
            assert_eq!(r.error, None, "step {step}");
            assert_eq!(r.configs, 2, "step {step}: {r:?}");
            assert!(
                (70..=85).contains(&r.frames),
                "step {step}: {} frames",
                r.frames
            );
        }
    }

    #[test]
    fn replay_stops_at_the_first_refusal() {
        let mut bad = FFMPEG.to_vec();
        // A 12-byte header claiming a 9 MiB video message on chunk stream 7.
        bad.extend([7, 0, 0, 0, 0x90, 0, 0, 9, 1, 0, 0, 0]);
        let r = replay(&bad, 512, ChunkLimits::default());
        assert!(r.error.is_some_and(|e| e.contains("over the limit")));
    }
}
