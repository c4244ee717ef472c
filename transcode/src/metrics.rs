//! What the ladder counts, as `prometheus` families the binary registers and serves. Labels
//! are bounded: `stream` is a configured stream name, `rung` a configured rung, `state` and
//! `reason` fixed sets.

use prometheus::{CounterVec, Gauge, GaugeVec, IntCounterVec, Opts, Registry};

/// Every family of the ladder.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Media seconds encoded per second of work, per rung.
    pub speed: GaugeVec,
    /// Source arrival → encoded frame, per rung.
    pub lag: GaugeVec,
    /// CPU time of each rung's threads.
    pub cpu: CounterVec,
    /// CPU time of each stream's decoder (shared by its rungs).
    pub decoder_cpu: CounterVec,
    /// Rungs per stream and state (`running`, `advertised`, `shed`).
    pub rungs: GaugeVec,
    /// Rungs shed, per stream and reason (`budget`, `overload`).
    pub sheds: IntCounterVec,
    /// The transcode budget in rungs now (+Inf: none).
    pub budget: Gauge,
}

fn must<T>(name: &str, r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Default for Metrics {
    fn default() -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            must(name, GaugeVec::new(Opts::new(name, help), labels))
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            must(name, CounterVec::new(Opts::new(name, help), labels))
        };
        Metrics {
            speed: gauge(
                "ferrocast_transcode_rung_speed",
                "Media seconds a rung encodes per second of its work (x real time).",
                &["stream", "rung"],
            ),
            lag: gauge(
                "ferrocast_transcode_rung_lag_seconds",
                "Arrival of a source frame at ingest to the rung's encoded frame, latest.",
                &["stream", "rung"],
            ),
            cpu: counter(
                "ferrocast_transcode_rung_cpu_seconds_total",
                "CPU time of a rung's scaler and encoder threads.",
                &["stream", "rung"],
            ),
            decoder_cpu: counter(
                "ferrocast_transcode_decoder_cpu_seconds_total",
                "CPU time of a stream's decoder, which its rungs share.",
                &["stream"],
            ),
            rungs: gauge(
                "ferrocast_transcode_rungs",
                "Rungs of a stream by state: running, advertised (in the multivariant), shed.",
                &["stream", "state"],
            ),
            sheds: must(
                "ferrocast_transcode_sheds_total",
                IntCounterVec::new(
                    Opts::new(
                        "ferrocast_transcode_sheds_total",
                        "Rungs a stream's tier wanted that the budget did not grant, by reason.",
                    ),
                    &["stream", "reason"],
                ),
            ),
            budget: must(
                "ferrocast_transcode_budget_rungs",
                Gauge::new(
                    "ferrocast_transcode_budget_rungs",
                    "The transcode budget in rungs over all streams (+Inf: none).",
                ),
            ),
        }
    }
}

impl Metrics {
    pub fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.speed.clone()))?;
        r.register(Box::new(self.lag.clone()))?;
        r.register(Box::new(self.cpu.clone()))?;
        r.register(Box::new(self.decoder_cpu.clone()))?;
        r.register(Box::new(self.rungs.clone()))?;
        r.register(Box::new(self.sheds.clone()))?;
        r.register(Box::new(self.budget.clone()))?;
        Ok(())
    }

    /// Drops a rung's series (it stopped).
    pub fn forget_rung(&self, stream: &str, rung: &str) {
        let _ = self.speed.remove_label_values(&[stream, rung]);
        let _ = self.lag.remove_label_values(&[stream, rung]);
        let _ = self.cpu.remove_label_values(&[stream, rung]);
    }

    /// Drops a stream's series (it ended).
    pub fn forget_stream(&self, stream: &str) {
        let _ = self.decoder_cpu.remove_label_values(&[stream]);
        for state in ["running", "advertised", "shed"] {
            let _ = self.rungs.remove_label_values(&[stream, state]);
        }
    }
}
