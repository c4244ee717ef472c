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
    pub dropped_frames: IntCounter,
}

#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub publishes: IntCounterVec,
    pub takeovers: IntCounter,
    /// Refusals at a limit (shared with the origin's HTTP server).
    pub refusals: media::limits::Refusals,
    pub bytes: IntCounterVec,
    pub frames: IntCounterVec,
    /// Consumers of every stream's fan-out (lag, frames they missed).
    pub fanout: FanoutMetrics,
    /// Ingest lag above its recent floor, per stream (see [`crate::uplink`]).
    pub ingest_lag: GaugeVec,
    /// 1 while a stream's uplink is flagged degraded.
    pub uplink_degraded: IntGaugeVec,
    /// Bitrate (bytes per second, the Prometheus base unit) and video frame rate over the
    /// last few seconds, per stream.
    pub bitrate: GaugeVec,
    pub fps: GaugeVec,
    /// Frames damaged in transport that ingest could not pass on (MPEG-TS over SRT: PES
    /// packets lost to continuity errors). RTMP never drops silently: a bad frame ends the
    /// publish with its reason in the log.
    pub dropped_frames: IntCounterVec,
    /// A publisher came back to its stream within the grace period.
    pub reconnects: IntCounterVec,
    /// libsrt's own figures for each SRT publisher (`srt_bstats`).
    pub srt: SrtMetrics,
}

/// libsrt's receiver statistics per stream.
#[derive(Debug, Clone)]
pub struct SrtMetrics {
    pub rtt: GaugeVec,
    pub receive_buffer: GaugeVec,
    pub receive_buffer_bytes: IntGaugeVec,
    pub received: IntCounterVec,
    pub lost: IntCounterVec,
    pub retransmitted: IntCounterVec,
    pub dropped: IntCounterVec,
}

impl SrtMetrics {
    fn new() -> SrtMetrics {
        let packets = |what: &str, help: &str| {
            counter_vec(
                &format!("ferrocast_srt_packets_{what}_total"),
                help,
                &["stream"],
            )
        };
        SrtMetrics {
            rtt: gauge_vec(
                "ferrocast_srt_rtt_seconds",
                "Round-trip time to an SRT publisher, as libsrt estimates it.",
            ),
            receive_buffer: gauge_vec(
                "ferrocast_srt_receive_buffer_seconds",
                "Media waiting in libsrt's receive buffer (timespan).",
            ),
            receive_buffer_bytes: IntGaugeVec::new(
                Opts::new(
                    "ferrocast_srt_receive_buffer_bytes",
                    "Bytes waiting in libsrt's receive buffer.",
                ),
                &["stream"],
            )
            .unwrap_or_else(|e| panic!("srt buffer: {e}")),
            received: packets("received", "Data packets received from SRT publishers."),
            lost: packets(
                "lost",
                "Data packets an SRT receiver found missing (before retransmission).",
            ),
            retransmitted: packets(
                "retransmitted",
                "Retransmitted data packets received from SRT publishers.",
            ),
            dropped: packets(
                "dropped",
                "Data packets that arrived too late to play or never arrived (dropped by libsrt).",
            ),
        }
    }

    fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.rtt.clone()))?;
        r.register(Box::new(self.receive_buffer.clone()))?;
        r.register(Box::new(self.receive_buffer_bytes.clone()))?;
        r.register(Box::new(self.received.clone()))?;
        r.register(Box::new(self.lost.clone()))?;
        r.register(Box::new(self.retransmitted.clone()))?;
        r.register(Box::new(self.dropped.clone()))
    }

    /// Drops a gone publisher's gauges (its counters stay: they are totals).
    pub fn forget(&self, stream: &str) {
        let _ = self.rtt.remove_label_values(&[stream]);
        let _ = self.receive_buffer.remove_label_values(&[stream]);
        let _ = self.receive_buffer_bytes.remove_label_values(&[stream]);
    }
}

fn gauge_vec(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["stream"]).unwrap_or_else(|e| panic!("{name}: {e}"))
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
            bitrate: gauge_vec(
                "ferrocast_ingest_bytes_per_second",
                "A publisher's bitrate over the last 3 s, in bytes per second.",
            ),
            fps: gauge_vec(
                "ferrocast_ingest_frames_per_second",
                "A publisher's video frame rate over the last 3 s.",
            ),
            dropped_frames: counter_vec(
                "ferrocast_ingest_dropped_frames_total",
                "Frames damaged in transport that ingest could not pass on.",
                &["stream"],
            ),
            reconnects: counter_vec(
                "ferrocast_ingest_reconnects_total",
                "Publishers that came back to their stream within the grace period.",
                &["stream"],
            ),
            srt: SrtMetrics::new(),
            refusals: media::limits::Refusals::new(),
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
        registry.register(Box::new(self.bitrate.clone()))?;
        registry.register(Box::new(self.fps.clone()))?;
        registry.register(Box::new(self.dropped_frames.clone()))?;
        registry.register(Box::new(self.reconnects.clone()))?;
        self.srt.register(registry)?;
        self.refusals.register(registry)?;
        self.fanout.register(registry)
    }

    /// The counters of one stream.
    pub fn counters(&self, stream: &StreamName) -> IngestCounters {
        let s = stream.as_str();
        IngestCounters {
            bytes: self.bytes.with_label_values(&[s]),
            video_frames: self.frames.with_label_values(&[s, "video"]),
            audio_frames: self.frames.with_label_values(&[s, "audio"]),
            dropped_frames: self.dropped_frames.with_label_values(&[s]),
        }
    }

    pub fn accepted(&self) {
        self.publishes.with_label_values(&["accepted"]).inc();
    }

    pub fn refused(&self) {
        self.publishes.with_label_values(&["refused"]).inc();
    }
}
