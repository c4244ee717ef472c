//! The player's report: what a viewer got ([`Report`]: first frame, stalls, switches,
//! latencies, requests), its JSON form and its one-paragraph summary, and [`percentile`].
//! It owns no playing logic: the driver fills a report in, and nothing here does I/O or reads
//! a clock.

use crate::abr::SwitchReason;
use std::time::Duration;

/// A rendition switch, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchRecord {
    /// Seconds since the player started.
    pub at: f64,
    pub from: String,
    pub to: String,
    pub reason: SwitchReason,
    pub estimate_bps: f64,
    pub buffer: f64,
}

/// Requests made, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    pub multivariant: u64,
    pub playlists: u64,
    pub blocking_playlists: u64,
    pub delta_playlists: u64,
    pub inits: u64,
    pub parts: u64,
    pub hinted_parts: u64,
    pub segments: u64,
    pub probes: u64,
}

/// What a player saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seconds: f64,
    /// Time from start to the first frame shown.
    pub ttff: Option<Duration>,
    /// Durations of stalls (seconds), including one in progress at the end.
    pub stalls: Vec<f64>,
    pub switches: Vec<SwitchRecord>,
    pub requests: Requests,
    pub bytes: u64,
    pub errors: Vec<String>,
    /// Why playback gave up, if it did.
    pub fatal: Option<String>,
    /// The stream ended (`EXT-X-ENDLIST`) before the duration was up.
    pub ended: bool,
    pub discontinuities: u64,
    /// Capture → shown latency of each decoded frame whose clock code was read (ms).
    pub visual_latency_ms: Vec<i64>,
    /// Program date-time → shown latency at the start of each part or segment (ms).
    pub pdt_latency_ms: Vec<i64>,
    /// Per frame: visual minus PDT latency (ms): what the encoder and ingest added before the
    /// server stamped the media.
    pub visual_minus_pdt_ms: Vec<i64>,
    pub frames: u64,
    pub unreadable_frames: u64,
    /// Time spent on each variant (URI, seconds).
    pub variant_seconds: Vec<(String, f64)>,
    /// Every decoded frame read, for tests: (capture ms, shown Unix ms).
    pub shown_frames: Vec<(u64, i64)>,
}

/// A percentile of `v` (nearest rank), `None` if empty.
pub fn percentile<T: Copy + Ord>(v: &[T], p: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    v.get(i).copied()
}

impl Report {
    pub fn stall_secs(&self) -> f64 {
        // (A float `sum()` of nothing is -0.0.)
        self.stalls.iter().fold(0.0, |a, b| a + b)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let lat = |v: &[i64]| {
            serde_json::json!({
                "samples": v.len(),
                "p50": percentile(v, 0.5),
                "p95": percentile(v, 0.95),
                "max": percentile(v, 1.0),
            })
        };
        serde_json::json!({
            "seconds": self.seconds,
            "ttff_ms": self.ttff.map(|d| d.as_millis() as u64),
            "latency_ms": lat(&self.visual_latency_ms),
            "pdt_latency_ms": lat(&self.pdt_latency_ms),
            "visual_minus_pdt_ms": lat(&self.visual_minus_pdt_ms),
            "frames": self.frames,
            "unreadable_frames": self.unreadable_frames,
            "stalls": {"count": self.stalls.len(), "total_s": self.stall_secs()},
            "switches": self.switches.iter().map(|s| serde_json::json!({
                "at_s": s.at, "from": s.from, "to": s.to, "reason": s.reason.as_str(),
                "estimate_bps": s.estimate_bps.round(), "buffer_s": s.buffer,
            })).collect::<Vec<_>>(),
            "variant_seconds": self.variant_seconds.iter()
                .map(|(v, s)| serde_json::json!({"variant": v, "seconds": s}))
                .collect::<Vec<_>>(),
            "requests": {
                "multivariant": self.requests.multivariant,
                "playlists": self.requests.playlists,
                "blocking_playlists": self.requests.blocking_playlists,
                "delta_playlists": self.requests.delta_playlists,
                "inits": self.requests.inits,
                "parts": self.requests.parts,
                "hinted_parts": self.requests.hinted_parts,
                "segments": self.requests.segments,
                "probes": self.requests.probes,
            },
            "bytes": self.bytes,
            "discontinuities": self.discontinuities,
            "errors": self.errors.len(),
            "first_errors": self.errors.iter().take(5).collect::<Vec<_>>(),
            "fatal": self.fatal,
            "ended": self.ended,
        })
    }

    /// One human-readable paragraph.
    pub fn summary(&self) -> String {
        let ms = |v: &[i64], p| percentile(v, p).map_or("-".to_owned(), |x| format!("{x}"));
        let mut s = format!(
            "watched {:.1}s: first frame after {}, glass-to-glass p50 {} / p95 {} / max {} ms \
             ({} frames, {} unreadable), PDT latency p50 {} / p95 {} ms; {} stalls ({:.2}s); \
             {} switches; {} parts ({} hinted), {} segments, {} playlists ({} blocking, {} delta); \
             {:.1} MB; {} errors",
            self.seconds,
            self.ttff
                .map_or("-".into(), |d| format!("{} ms", d.as_millis())),
            ms(&self.visual_latency_ms, 0.5),
            ms(&self.visual_latency_ms, 0.95),
            ms(&self.visual_latency_ms, 1.0),
            self.frames,
            self.unreadable_frames,
            ms(&self.pdt_latency_ms, 0.5),
            ms(&self.pdt_latency_ms, 0.95),
            self.stalls.len(),
            self.stall_secs(),
            self.switches.len(),
            self.requests.parts + self.requests.hinted_parts,
            self.requests.hinted_parts,
            self.requests.segments,
            self.requests.playlists,
            self.requests.blocking_playlists,
            self.requests.delta_playlists,
            self.bytes as f64 / 1e6,
            self.errors.len()
        );
        if let Some(f) = &self.fatal {
            s.push_str(&format!("; FATAL: {f}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_percentiles_and_json() {
        assert_eq!(percentile::<i64>(&[], 0.5), None);
        assert_eq!(percentile(&[30, 10, 20], 0.5), Some(20));
        assert_eq!(percentile(&[30, 10, 20], 1.0), Some(30));
        let r = Report {
            visual_latency_ms: vec![1000, 1100, 1200],
            ..Default::default()
        };
        let j = r.to_json();
        assert_eq!(j["latency_ms"]["p50"], 1100);
        assert_eq!(j["stalls"]["total_s"], 0.0);
        assert!(r.summary().contains("p50 1100"));
    }
}
