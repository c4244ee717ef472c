//! What ingest counts, as `prometheus` families the binary registers (this crate renders
//! nothing). Labels are bounded: `stream` is a configured public name, `track` is video or
//! audio, `result` is accepted or refused.

use media::fanout::FanoutMetrics;
use media::StreamName;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Per-stream counters one publisher updates.
#[derive(Debug, Clone)]
pub struct IngestCounters {
    pub bytes: IntCounter,
    pub video_frames: IntCounter,
    pub audio_frames: IntCounter,
}

#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub publishes: IntCounterVec,
    pub takeovers: IntCounter,
    pub bytes: IntCounterVec,
    pub frames: IntCounterVec,
    /// Consumers of every stream's fan-out (lag, frames they missed).
    pub fanout: FanoutMetrics,
    /// Ingest lag above its recent floor, per stream (see [`crate::uplink`]).
    pub ingest_lag: GaugeVec,
    /// 1 while a stream's uplink is flagged degraded.
    pub uplink_degraded: IntGaugeVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Default for IngestMetrics {
    fn default() -> Self {
        let m = IngestMetrics {
            publishes: counter_vec(
                "ferrocast_publishes_total",
                "Publish attempts by result.",
                &["result"],
            ),
            takeovers: IntCounter::new(
                "ferrocast_takeovers_total",
                "Publishes that took over a live stream.",
            )
            .unwrap_or_else(|e| panic!("takeovers: {e}")),
            bytes: counter_vec(
                "ferrocast_ingest_bytes_total",
                "Bytes received from publishers.",
                &["stream"],
            ),
            frames: counter_vec(
                "ferrocast_ingest_frames_total",
                "Frames received from publishers.",
                &["stream", "track"],
            ),
            fanout: FanoutMetrics::new(),
            ingest_lag: GaugeVec::new(
                Opts::new(
                    "ferrocast_ingest_lag_seconds",
                    "How far a publisher's media runs behind the wall clock, above its recent floor.",
                ),
                &["stream"],
            )
            .unwrap_or_else(|e| panic!("ingest lag: {e}")),
            uplink_degraded: IntGaugeVec::new(
                Opts::new(
                    "ferrocast_uplink_degraded",
                    "1 while a publisher's uplink is flagged degraded (lag or bitrate sag).",
                ),
                &["stream"],
            )
            .unwrap_or_else(|e| panic!("uplink: {e}")),
        };
        // Both results exist from the start (a 0 is information; a missing series is not).
        m.publishes.with_label_values(&["accepted"]);
        m.publishes.with_label_values(&["refused"]);
        m
    }
}

impl IngestMetrics {
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.publishes.clone()))?;
        registry.register(Box::new(self.takeovers.clone()))?;
        registry.register(Box::new(self.bytes.clone()))?;
        registry.register(Box::new(self.frames.clone()))?;
        registry.register(Box::new(self.ingest_lag.clone()))?;
        registry.register(Box::new(self.uplink_degraded.clone()))?;
        self.fanout.register(registry)
    }

    /// The counters of one stream.
    pub fn counters(&self, stream: &StreamName) -> IngestCounters {
        let s = stream.as_str();
        IngestCounters {
            bytes: self.bytes.with_label_values(&[s]),
            video_frames: self.frames.with_label_values(&[s, "video"]),
            audio_frames: self.frames.with_label_values(&[s, "audio"]),
        }
    }

    pub fn accepted(&self) {
        self.publishes.with_label_values(&["accepted"]).inc();
    }

    pub fn refused(&self) {
        self.publishes.with_label_values(&["refused"]).inc();
    }
}
