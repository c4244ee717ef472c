//! Origin metrics in Prometheus text format (hand-written exposition: a few counters, gauges and
//! fixed-bucket histograms; no global registry).

use ingest::hub::HubStats;
use ingest::rtmp::{IngestCounters, IngestObserver};
use media::StreamName;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fixed-bucket histogram of seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const FAST: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
];
const SLOW: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.75, 1.0,
    2.0, 5.0, 10.0,
];

/// Everything the origin counts.
#[derive(Debug)]
pub struct Metrics {
    /// Arrival of a part's last frame at ingest → part servable.
    pub part_publish_delay: Histogram,
    /// Arrival of each video frame at ingest → the part holding it servable.
    pub ingest_to_servable: Histogram,
    pub blocked_in_flight: AtomicI64,
    pub blocked_hold: Histogram,
    http: Mutex<HashMap<(&'static str, u16), u64>>,
    ingest: Mutex<BTreeMap<StreamName, Arc<IngestCounters>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            part_publish_delay: Histogram::new(FAST),
            ingest_to_servable: Histogram::new(SLOW),
            blocked_in_flight: AtomicI64::new(0),
            blocked_hold: Histogram::new(SLOW),
            http: Mutex::new(HashMap::new()),
            ingest: Mutex::new(BTreeMap::new()),
        }
    }
}

impl IngestObserver for Metrics {
    fn counters(&self, stream: &StreamName) -> Arc<IngestCounters> {
        let mut m = self.ingest.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(m.entry(stream.clone()).or_default())
    }
}

impl Metrics {
    pub fn http_response(&self, route: &'static str, status: u16) {
        let mut m = self.http.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route, status)).or_default() += 1;
    }

    pub fn render(&self, hub: &HubStats) -> String {
        let mut out = String::with_capacity(4096);
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP ferrocast_publishes_total Publish attempts by result.\n# TYPE ferrocast_publishes_total counter"
        );
        let _ = writeln!(
            out,
            "ferrocast_publishes_total{{result=\"accepted\"}} {}",
            c(&hub.publishes_accepted)
        );
        let _ = writeln!(
            out,
            "ferrocast_publishes_total{{result=\"refused\"}} {}",
            c(&hub.publishes_refused)
        );
        let _ = writeln!(
            out,
            "# HELP ferrocast_takeovers_total Publishes that took over a live stream.\n# TYPE ferrocast_takeovers_total counter\nferrocast_takeovers_total {}",
            c(&hub.takeovers)
        );
        let _ = writeln!(
            out,
            "# HELP ferrocast_ingest_frames_dropped_total Frames dropped because the packager lagged.\n# TYPE ferrocast_ingest_frames_dropped_total counter\nferrocast_ingest_frames_dropped_total {}",
            c(&hub.frames_dropped)
        );
        let ingest = self.ingest.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP ferrocast_ingest_bytes_total Bytes received from publishers.\n# TYPE ferrocast_ingest_bytes_total counter");
        for (name, v) in ingest.iter() {
            let _ = writeln!(
                out,
                "ferrocast_ingest_bytes_total{{stream=\"{name}\"}} {}",
                c(&v.bytes)
            );
        }
        let _ = writeln!(out, "# HELP ferrocast_ingest_frames_total Frames received from publishers.\n# TYPE ferrocast_ingest_frames_total counter");
        for (name, v) in ingest.iter() {
            let _ = writeln!(
                out,
                "ferrocast_ingest_frames_total{{stream=\"{name}\",track=\"video\"}} {}",
                c(&v.video_frames)
            );
            let _ = writeln!(
                out,
                "ferrocast_ingest_frames_total{{stream=\"{name}\",track=\"audio\"}} {}",
                c(&v.audio_frames)
            );
        }
        drop(ingest);
        self.part_publish_delay.render(
            &mut out,
            "ferrocast_part_publish_delay_seconds",
            "Arrival of a part's last frame at ingest to the part being servable.",
        );
        self.ingest_to_servable.render(
            &mut out,
            "ferrocast_ingest_to_servable_seconds",
            "Arrival of a video frame at ingest to the part holding it being servable.",
        );
        let _ = writeln!(
            out,
            "# HELP ferrocast_blocked_playlist_requests Blocking playlist requests being held.\n# TYPE ferrocast_blocked_playlist_requests gauge\nferrocast_blocked_playlist_requests {}",
            self.blocked_in_flight.load(Ordering::Relaxed)
        );
        self.blocked_hold.render(
            &mut out,
            "ferrocast_blocked_playlist_hold_seconds",
            "How long blocking playlist requests were held.",
        );
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = http.iter().collect();
        rows.sort();
        let _ = writeln!(out, "# HELP ferrocast_http_responses_total HTTP responses by route and status.\n# TYPE ferrocast_http_responses_total counter");
        for ((route, status), n) in rows {
            let _ = writeln!(
                out,
                "ferrocast_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.1\"} 1\n"));
        assert!(s.contains("x_bucket{le=\"1\"} 2\n"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(s.contains("x_count 3\n"));
    }
}
