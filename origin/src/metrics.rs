//! What the origin counts, as `prometheus` families the binary registers and serves (this
//! crate renders nothing). Labels are bounded: `route` is one of a fixed set, `status` an HTTP
//! status code.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
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
    /// Viewers per stream and rendition, direct and through every edge (set at each scrape).
    pub viewers: IntGaugeVec,
    /// Edges whose reports are current.
    pub edges: IntGauge,
    /// What players say in CMCD, per stream and rendition, over the origin and every edge.
    pub players: PlayerMetrics,
}

/// Player telemetry (CMCD) as gauges, set at each scrape from the viewer window.
#[derive(Debug, Clone)]
pub struct PlayerMetrics {
    pub sessions: IntGaugeVec,
    pub buffer: GaugeVec,
    pub bitrate: GaugeVec,
    pub throughput: GaugeVec,
    pub starved: IntGaugeVec,
}

impl PlayerMetrics {
    fn new() -> PlayerMetrics {
        let labels = &["stream", "rendition"];
        let g = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let i = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        PlayerMetrics {
            sessions: i(
                "ferrocast_player_sessions",
                "Player sessions that sent CMCD within the viewer window.",
            ),
            buffer: g(
                "ferrocast_player_buffer_seconds",
                "Mean of the players' latest buffer length (CMCD bl).",
            ),
            bitrate: g(
                "ferrocast_player_encoded_bytes_per_second",
                "Mean encoded bitrate the players fetch (CMCD br), bytes per second.",
            ),
            throughput: g(
                "ferrocast_player_throughput_bytes_per_second",
                "Mean throughput the players measure (CMCD mtp), bytes per second.",
            ),
            starved: i(
                "ferrocast_player_starved_requests",
                "Requests within the viewer window whose player said its buffer ran dry (CMCD bs).",
            ),
        }
    }

    fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.sessions.clone()))?;
        r.register(Box::new(self.buffer.clone()))?;
        r.register(Box::new(self.bitrate.clone()))?;
        r.register(Box::new(self.throughput.clone()))?;
        r.register(Box::new(self.starved.clone()))
    }

    /// Forgets every series (before setting the current ones).
    pub fn reset(&self) {
        self.sessions.reset();
        self.buffer.reset();
        self.bitrate.reset();
        self.throughput.reset();
        self.starved.reset();
    }

    /// Sets one rendition's figures.
    pub fn set(&self, stream: &str, rendition: &str, p: &media::cmcd::PlayerSummary) {
        let l = [stream, rendition];
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions.with_label_values(&l).set(int(p.sessions));
        self.starved.with_label_values(&l).set(int(p.starvations));
        if let Some(ms) = p.mean_buffer_ms() {
            self.buffer.with_label_values(&l).set(ms as f64 / 1000.0);
        }
        if let Some(k) = p.mean_bitrate_kbps() {
            self.bitrate
                .with_label_values(&l)
                .set(k as f64 * 1000.0 / 8.0);
        }
        if let Some(k) = p.mean_throughput_kbps() {
            self.throughput
                .with_label_values(&l)
                .set(k as f64 * 1000.0 / 8.0);
        }
    }
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
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
            viewers: IntGaugeVec::new(
                Opts::new(
                    "ferrocast_viewers",
                    "Viewers per stream and rendition: the origin's own and every edge's.",
                ),
                &["stream", "rendition"],
            )
            .unwrap_or_else(|e| panic!("viewers: {e}")),
            edges: IntGauge::new(
                "ferrocast_edges_reporting",
                "Edges whose viewer reports are current.",
            )
            .unwrap_or_else(|e| panic!("edges: {e}")),
            players: PlayerMetrics::new(),
        };
        // Both results exist from the start (a 0 is information; a missing series is not).
        m.cmcd.with_label_values(&["ok"]);
        m.cmcd.with_label_values(&["malformed"]);
        m
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
        registry.register(Box::new(self.viewers.clone()))?;
        registry.register(Box::new(self.edges.clone()))?;
        self.players.register(registry)?;
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
