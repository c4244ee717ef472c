//! Ferrocast's transcoding stage: it subscribes to a source stream's [`Fanout`] and publishes
//! one fan-out per rendition, which the origin packages like any other. It never imports
//! ingest or the origin; the binary wires it between them.
//!
//! - [`encode::Transcoder`]: the ffmpeg ladder (one decode per stream, a scaler and libx264
//!   encoder per rung on its own thread), rungs added and removed while it runs;
//! - [`ladder`]: its rules — tiers by viewer count and priority with hysteresis, rung sizes,
//!   frame-rate caps — pure and unit-tested;
//! - [`budget`]: the transcode budget and load shedding — who keeps which rungs — pure;
//! - [`stats`]: what each rung costs (CPU time, speed) and how far behind it runs;
//! - [`copy`]: a rendition that carries the source's own frames under another id (no decode),
//!   for exercising players' switching and rendition reports.
//!
//! Each is the same seam: `source fan-out → rendition fan-out`.

pub mod budget;
pub mod encode;
pub mod ladder;
pub mod metrics;
pub mod stats;

use media::fanout::Fanout;
use std::sync::Arc;
use tracing::Instrument;

/// One rung of a ladder, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    /// Rendition id in playback URLs (`/live/NAME/{id}/index.m3u8`).
    pub name: String,
    /// Output height in pixels (width keeps the source's aspect ratio, even).
    pub height: u32,
    /// Target video bitrate, bits per second.
    pub bitrate: u64,
    /// Frame-rate cap (frames per second).
    pub max_fps: f64,
}

/// A rendition feed for the origin: its id and the fan-out that carries it.
#[derive(Debug, Clone)]
pub struct RenditionFeed {
    pub id: String,
    pub stream: Arc<Fanout>,
}

/// Room per consumer in a rendition's fan-out (as the source's).
pub const RENDITION_QUEUE: usize = 512;

/// A rendition that carries the source's frames unchanged under the id `id`. Runs as a task
/// until the source ends, then ends the rendition. Call from within the tokio runtime.
pub fn copy(source: &Arc<Fanout>, stream_name: &str, id: &str) -> RenditionFeed {
    let out = Fanout::new(stream_name, RENDITION_QUEUE, source.metrics().clone());
    let mut input = source.subscribe(&format!("copy:{id}"));
    let writer = Arc::clone(&out);
    let span = tracing::info_span!("copy", rendition = id);
    tokio::spawn(
        async move {
            while let Some(ev) = input.recv().await {
                writer.send(ev);
            }
            writer.close();
        }
        .instrument(span),
    );
    RenditionFeed {
        id: id.to_owned(),
        stream: out,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use media::fanout::{FanoutMetrics, Protocol, StreamEvent, StreamEventKind};
    use std::time::Instant;

    #[tokio::test]
    async fn a_copy_carries_every_event_and_ends_with_the_source() {
        let src = Fanout::new("demo", 64, FanoutMetrics::new());
        let feed = copy(&src, "demo", "copy");
        let mut sub = feed.stream.subscribe("test");
        let ev = |kind| StreamEvent {
            generation: 1,
            at: Instant::now(),
            kind,
        };
        src.send(ev(StreamEventKind::PublisherStarted {
            peer: "127.0.0.1:1".parse().unwrap(),
            protocol: Protocol::Rtmp,
        }));
        src.send(ev(StreamEventKind::Frame(media::Frame {
            track: media::Track::Audio,
            pts: media::Timestamp::new(7, 48_000),
            dts: media::Timestamp::new(7, 48_000),
            keyframe: true,
            data: bytes::Bytes::from_static(b"a"),
        })));
        src.close();
        let mut got = Vec::new();
        while let Some(e) = sub.recv().await {
            got.push(e);
        }
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[1].kind, StreamEventKind::Frame(f) if f.pts.ticks() == 7));
        assert_eq!(feed.id, "copy");
    }
}
