//! The Ferrocast origin: packages each live stream as CMAF (fMP4) parts and segments, keeps a
//! live window per rendition in memory, and serves Low-Latency HLS over HTTP (blocking
//! playlist reload, preload hints streamed while written, delta updates, rendition reports,
//! program date-time) plus `/metrics` and `/api/streams`. It does not ingest (see `ingest`)
//! and does not cache for viewers at scale (see the edge).

pub mod blocking;
pub mod edges;
pub mod fmp4;
pub mod http;
pub mod live;
pub mod metrics;
pub mod packager;
pub mod playlist;
pub mod window;

pub use live::{OriginConfig, Streams};
