//! The process's one Prometheus registry: every crate's families are registered here, and this
//! module alone renders the text exposition (`GET /metrics` on origin and edge).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::Arc;

type Refresh = Box<dyn Fn() + Send + Sync>;

/// The registry, plus hooks that bring gauges up to date before each scrape.
pub struct Metrics {
    registry: Registry,
    refresh: Vec<Refresh>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with the process collector (CPU, memory, open fds) on Linux.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = registry.register(Box::new(pc)) {
                tracing::warn!(error = %e, "process metrics unavailable");
            }
        }
        Metrics {
            registry,
            refresh: Vec::new(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `f` before every scrape.
    pub fn on_scrape(&mut self, f: impl Fn() + Send + Sync + 'static) {
        self.refresh.push(Box::new(f));
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> String {
        for f in &self.refresh {
            f();
        }
        let mut out = Vec::with_capacity(8192);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// `GET /metrics`, to merge into a server's router.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&self);
                async move { m.response() }
            }),
        )
    }

    fn response(&self) -> Response {
        (
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            self.render(),
        )
            .into_response()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers a crate's families; a clash is a programming error worth failing start-up for.
pub fn register(what: &str, r: prometheus::Result<()>) -> anyhow::Result<()> {
    r.map_err(|e| anyhow::anyhow!("registering {what} metrics: {e}"))
}
