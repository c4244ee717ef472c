//! A scriptable RTMP client (rml_rtmp's client session over a real TCP socket) for the
//! hostile-input tests: it can stop anywhere and send anything.

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    pub socket: TcpStream,
    pub session: ClientSession,
    /// Everything the server sent after the handshake (AMF status strings are readable in it).
    pub received: Vec<u8>,
}

async fn send_results(
    socket: &mut TcpStream,
    results: Vec<ClientSessionResult>,
) -> std::io::Result<()> {
    for r in results {
        if let ClientSessionResult::OutboundResponse(p) = r {
            socket.write_all(&p.bytes).await?;
        }
    }
    Ok(())
}

/// Completes the handshake only.
pub async fn handshake(addr: SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs.generate_outbound_p0_and_p1().unwrap();
    socket.write_all(&p0p1).await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await.unwrap();
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).await.unwrap();
                return socket;
            }
        }
    }
}

impl Client {
    /// Handshake + `connect` to app `live`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let mut socket = handshake(addr).await;
        let (mut session, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        send_results(&mut socket, results).await.unwrap();
        let r = session.request_connection("live".into()).unwrap();
        send_results(&mut socket, vec![r]).await.unwrap();
        let mut c = Client {
            socket,
            session,
            received: Vec::new(),
        };
        let ok = c
            .until(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await;
        assert!(ok, "connect was not accepted");
        c
    }

    /// Reads until an event matches (true) or the connection closes / 10 s pass (false).
    pub async fn until(&mut self, want: impl Fn(&ClientSessionEvent) -> bool) -> bool {
        let mut buf = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = match tokio::time::timeout_at(deadline, self.socket.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return false,
            };
            self.received.extend_from_slice(&buf[..n]);
            let results = match self.session.handle_input(&buf[..n]) {
                Ok(r) => r,
                Err(_) => return false,
            };
            let mut hit = false;
            let mut out = Vec::new();
            for r in results {
                match r {
                    ClientSessionResult::RaisedEvent(e) => hit |= want(&e),
                    other => out.push(other),
                }
            }
            if send_results(&mut self.socket, out).await.is_err() {
                return false;
            }
            if hit {
                return true;
            }
        }
    }

    /// Requests publishing; true if accepted.
    pub async fn publish(&mut self, key: &str) -> bool {
        let r = self
            .session
            .request_publishing(key.into(), PublishRequestType::Live)
            .unwrap();
        send_results(&mut self.socket, vec![r]).await.unwrap();
        self.until(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            .await
    }

    /// Requests playback of a stream.
    pub async fn play(&mut self, key: &str) -> bool {
        let r = self.session.request_playback(key.into()).unwrap();
        send_results(&mut self.socket, vec![r]).await.unwrap();
        self.until(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted))
            .await
    }

    pub async fn video(&mut self, data: &'static [u8], ts: u32) -> std::io::Result<()> {
        let r = self
            .session
            .publish_video_data(Bytes::from_static(data), RtmpTimestamp::new(ts), false)
            .unwrap();
        send_results(&mut self.socket, vec![r]).await
    }

    /// Sends one FLV tag body as an RTMP audio (8) or video (9) message.
    pub async fn media(&mut self, kind: u8, data: Bytes, ts: u32) -> std::io::Result<()> {
        let ts = RtmpTimestamp::new(ts);
        let r = if kind == 9 {
            self.session.publish_video_data(data, ts, false)
        } else {
            self.session.publish_audio_data(data, ts, false)
        }
        .unwrap();
        send_results(&mut self.socket, vec![r]).await
    }

    pub async fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(bytes).await
    }

    /// True if the server closes the connection within `timeout` (reads drain anything sent).
    pub async fn closed_by_server(&mut self, timeout: Duration) -> bool {
        closed_within(&mut self.socket, timeout, &mut self.received).await
    }

    pub fn received_text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// True if the peer closes (EOF or reset) within `timeout`.
pub async fn closed_within(socket: &mut TcpStream, timeout: Duration, sink: &mut Vec<u8>) -> bool {
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => sink.extend_from_slice(&buf[..n]),
        }
    }
}
