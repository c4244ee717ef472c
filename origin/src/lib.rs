//! The Ferrocast origin: packages each live stream as CMAF (fMP4) parts and segments, keeps a
//! live window per rendition in memory, and serves Low-Latency HLS over HTTP (blocking
//! playlist reload, preload hints streamed while written, delta updates, rendition reports,
//! program date-time) plus `/api/streams`, the edge registry and the director. It consumes
//! rendition fan-outs ([`media::fanout`]) that the binary subscribes it to; it never imports
//! ingest or transcode, does not render metrics text (the binary serves the families of
//! [`metrics::Metrics`]) and does not cache for viewers at scale (see the edge).

pub mod blocking;
pub mod dashboard;
pub mod edges;
pub mod fmp4;
pub mod http;
pub mod live;
pub mod metrics;
pub mod packager;
pub mod playlist;
pub mod window;

pub use live::{OriginConfig, RenditionInput, Streams};
