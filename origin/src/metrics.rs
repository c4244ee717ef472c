//! What the origin counts, as `prometheus` families the binary registers and serves (this
//! crate renders nothing). Labels are bounded: `route` is one of a fixed set, `status` an HTTP
//! status code.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use std::time::Duration;

const FAST: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
];
const SLOW: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.75, 1.0,
    2.0, 5.0, 10.0,
];

/// Everything the origin counts.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Arrival of a part's last frame at ingest → part servable.
    pub part_publish_delay: Histogram,
    /// Arrival of each video frame at ingest → the part holding it servable.
    pub ingest_to_servable: Histogram,
    pub blocked_in_flight: IntGauge,
    pub blocked_hold: Histogram,
    http: IntCounterVec,
    /// Publisher clock jumps turned into splices, per stream.
    pub splices: IntCounterVec,
    /// Frames the packager could not place (after a jump, video without a keyframe after a
    /// pause), per stream.
    pub unplaced_frames: IntCounterVec,
    /// Segments whose program date-time was re-anchored to the wall clock, per stream.
    pub pdt_reanchors: IntCounterVec,
    /// Requests that carried CMCD, by result (`ok`, `malformed`).
    cmcd: IntCounterVec,
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            part_publish_delay: histogram(
                "ferrocast_part_publish_delay_seconds",
                "Arrival of a part's last frame at ingest to the part being servable.",
                FAST,
            ),
            ingest_to_servable: histogram(
                "ferrocast_ingest_to_servable_seconds",
                "Arrival of a video frame at ingest to the part holding it being servable.",
                SLOW,
            ),
            blocked_in_flight: IntGauge::new(
                "ferrocast_blocked_playlist_requests",
                "Blocking playlist requests being held.",
            )
            .unwrap_or_else(|e| panic!("blocked: {e}")),
            blocked_hold: histogram(
                "ferrocast_blocked_playlist_hold_seconds",
                "How long blocking playlist requests were held.",
                SLOW,
            ),
            http: IntCounterVec::new(
                Opts::new(
                    "ferrocast_http_responses_total",
                    "HTTP responses by route and status.",
                ),
                &["route", "status"],
            )
            .unwrap_or_else(|e| panic!("http: {e}")),
            splices: stream_counter(
                "ferrocast_timeline_splices_total",
                "Publisher clock jumps on a live connection, spliced with a discontinuity.",
            ),
            unplaced_frames: stream_counter(
                "ferrocast_timeline_dropped_frames_total",
                "Frames that could not be placed on the output timeline.",
            ),
            pdt_reanchors: stream_counter(
                "ferrocast_pdt_reanchors_total",
                "Segments whose program date-time was re-anchored to the wall clock (clock drift).",
            ),
            cmcd: IntCounterVec::new(
                Opts::new(
                    "ferrocast_cmcd_requests_total",
                    "Requests carrying player telemetry (CMCD), ok or malformed (ignored).",
                ),
                &["result"],
            )
            .unwrap_or_else(|e| panic!("cmcd: {e}")),
        }
    }
}

fn stream_counter(name: &str, help: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &["stream"]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Metrics {
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.part_publish_delay.clone()))?;
        registry.register(Box::new(self.ingest_to_servable.clone()))?;
        registry.register(Box::new(self.blocked_in_flight.clone()))?;
        registry.register(Box::new(self.blocked_hold.clone()))?;
        registry.register(Box::new(self.splices.clone()))?;
        registry.register(Box::new(self.unplaced_frames.clone()))?;
        registry.register(Box::new(self.pdt_reanchors.clone()))?;
        registry.register(Box::new(self.cmcd.clone()))?;
        registry.register(Box::new(self.http.clone()))
    }

    /// Counts a request with CMCD.
    pub fn cmcd(&self, malformed: bool) {
        let result = if malformed { "malformed" } else { "ok" };
        self.cmcd.with_label_values(&[result]).inc();
    }

    pub fn http_response(&self, route: &'static str, status: u16) {
        let status = status.to_string();
        self.http.with_label_values(&[route, status.as_str()]).inc();
    }
}

/// Observes a duration in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}
