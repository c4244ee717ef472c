//! Refusals at a limit, counted in one family: `ferrocast_limit_refusals_total{limit}`, whose
//! label takes only the values of [`Limit`] (all created at 0, so a dashboard sees the limit
//! exists before it is hit). Ingest, the origin's HTTP server and the edge's share it.

use prometheus::{IntCounterVec, Opts, Registry};

/// Every limit that refuses a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RtmpConnections,
    RtmpHandshakeTimeout,
    RtmpIdleTimeout,
    RtmpBytesBeforePublish,
    RtmpChunkSize,
    RtmpMessageSize,
    Publishers,
    PublishersPerIp,
    HttpConnections,
    HttpConnectionsPerIp,
    HttpHeaderSize,
    HttpHeaderTimeout,
    HttpSlowReader,
    HttpIdleTimeout,
    RequestRate,
    BlockedRequests,
    BlockedRequestsPerConnection,
}

impl Limit {
    pub const ALL: [Limit; 17] = [
        Limit::RtmpConnections,
        Limit::RtmpHandshakeTimeout,
        Limit::RtmpIdleTimeout,
        Limit::RtmpBytesBeforePublish,
        Limit::RtmpChunkSize,
        Limit::RtmpMessageSize,
        Limit::Publishers,
        Limit::PublishersPerIp,
        Limit::HttpConnections,
        Limit::HttpConnectionsPerIp,
        Limit::HttpHeaderSize,
        Limit::HttpHeaderTimeout,
        Limit::HttpSlowReader,
        Limit::HttpIdleTimeout,
        Limit::RequestRate,
        Limit::BlockedRequests,
        Limit::BlockedRequestsPerConnection,
    ];

    /// The label value (the config key's stem).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::RtmpConnections => "rtmp_connections",
            Limit::RtmpHandshakeTimeout => "rtmp_handshake_timeout",
            Limit::RtmpIdleTimeout => "rtmp_idle_timeout",
            Limit::RtmpBytesBeforePublish => "rtmp_bytes_before_publish",
            Limit::RtmpChunkSize => "rtmp_chunk_size",
            Limit::RtmpMessageSize => "rtmp_message_size",
            Limit::Publishers => "publishers",
            Limit::PublishersPerIp => "publishers_per_ip",
            Limit::HttpConnections => "http_connections",
            Limit::HttpConnectionsPerIp => "http_connections_per_ip",
            Limit::HttpHeaderSize => "http_header_size",
            Limit::HttpHeaderTimeout => "http_header_timeout",
            Limit::HttpSlowReader => "http_slow_reader",
            Limit::HttpIdleTimeout => "http_idle_timeout",
            Limit::RequestRate => "request_rate",
            Limit::BlockedRequests => "blocked_requests",
            Limit::BlockedRequestsPerConnection => "blocked_requests_per_connection",
        }
    }
}

/// The counter family (cheap to clone; clones count into the same series).
#[derive(Debug, Clone)]
pub struct Refusals {
    family: IntCounterVec,
}

impl Refusals {
    pub fn new() -> Refusals {
        let family = IntCounterVec::new(
            Opts::new(
                "ferrocast_limit_refusals_total",
                "Clients refused or cut off at a configured limit, by limit.",
            ),
            &["limit"],
        )
        .unwrap_or_else(|e| panic!("limit refusals: {e}"));
        for l in Limit::ALL {
            family.with_label_values(&[l.as_str()]);
        }
        Refusals { family }
    }

    pub fn count(&self, limit: Limit) {
        self.family.with_label_values(&[limit.as_str()]).inc();
    }

    pub fn get(&self, limit: Limit) -> u64 {
        self.family.with_label_values(&[limit.as_str()]).get()
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.family.clone()))
    }
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals::new()
    }
}
