//! Ingest for Ferrocast: the RTMP listener (rml_rtmp) and the SRT listener (libsrt), FLV and
//! MPEG-TS demuxing into
//! [`media::Frame`]s, publish authorization, and the stream registry ([`hub::Hub`]) with
//! takeover and the reconnect grace period. Each stream is published into a
//! [`media::fanout::Fanout`] that the binary subscribes consumers to; ingest does not package,
//! transcode or serve media, and knows none of the stages after it.

pub mod admission;
pub mod chunk_guard;
pub mod flv;
pub mod hub;
pub mod metrics;
pub mod rtmp;
pub mod srt;
pub mod ts;
pub mod uplink;

pub use hub::{Admitted, Hub, NewStream, PublishError, PublishLimits, Publisher};
pub use metrics::IngestMetrics;
