//! What an edge counts, as `prometheus` families the binary registers and serves (this crate
//! renders nothing). Labels are bounded: cache phases and report results are fixed sets, and
//! viewer series exist only for (stream, rendition) pairs the origin answered 200 for, capped
//! by [`media::viewers::MAX_RENDITION_KEYS`].

use crate::cache::CacheStats;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct EdgeMetrics {
    pub upstream_requests: IntCounter,
    pub upstream_errors: IntCounter,
    pub bytes_out: IntCounter,
    pub requests: IntCounter,
    pub reports: IntCounterVec,
    /// Viewer requests carrying CMCD, by result (`ok`, `malformed`).
    pub cmcd: IntCounterVec,
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub viewers: IntGaugeVec,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        let m = EdgeMetrics {
            upstream_requests: counter(
                "ferrocast_edge_upstream_requests_total",
                "Requests the edge sent to the origin.",
            ),
            upstream_errors: counter(
                "ferrocast_edge_upstream_errors_total",
                "Origin requests that failed (connection, timeout, broken body).",
            ),
            bytes_out: counter(
                "ferrocast_edge_bytes_out_total",
                "Response body bytes sent to viewers from complete cache entries.",
            ),
            requests: counter(
                "ferrocast_edge_requests_total",
                "Viewer requests for /live/ paths.",
            ),
            reports: IntCounterVec::new(
                Opts::new(
                    "ferrocast_edge_reports_total",
                    "Viewer reports sent to the origin, by result.",
                ),
                &["result"],
            )
            .unwrap_or_else(|e| panic!("reports: {e}")),
            cmcd: IntCounterVec::new(
                Opts::new(
                    "ferrocast_edge_cmcd_requests_total",
                    "Viewer requests carrying player telemetry (CMCD), ok or malformed (ignored).",
                ),
                &["result"],
            )
            .unwrap_or_else(|e| panic!("cmcd: {e}")),
            cache_bytes: gauge(
                "ferrocast_edge_cache_bytes",
                "Bytes of response bodies held in the cache.",
            ),
            cache_entries: gauge("ferrocast_edge_cache_entries", "Entries in the cache."),
            viewers: IntGaugeVec::new(
                Opts::new(
                    "ferrocast_edge_viewers",
                    "Viewers per stream and rendition at this edge.",
                ),
                &["stream", "rendition"],
            )
            .unwrap_or_else(|e| panic!("viewers: {e}")),
        };
        m.reports.with_label_values(&["ok"]);
        m.reports.with_label_values(&["failed"]);
        m.cmcd.with_label_values(&["ok"]);
        m.cmcd.with_label_values(&["malformed"]);
        m
    }
}

impl EdgeMetrics {
    pub fn register(&self, registry: &Registry, cache: &CacheStats) -> prometheus::Result<()> {
        registry.register(Box::new(cache.requests.clone()))?;
        registry.register(Box::new(cache.evictions.clone()))?;
        registry.register(Box::new(self.upstream_requests.clone()))?;
        registry.register(Box::new(self.upstream_errors.clone()))?;
        registry.register(Box::new(self.bytes_out.clone()))?;
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.reports.clone()))?;
        registry.register(Box::new(self.cmcd.clone()))?;
        registry.register(Box::new(self.cache_bytes.clone()))?;
        registry.register(Box::new(self.cache_entries.clone()))?;
        registry.register(Box::new(self.viewers.clone()))
    }
}
