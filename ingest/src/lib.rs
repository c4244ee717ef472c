//! Ingest for Ferrocast: the RTMP listener (rml_rtmp) and the SRT listener (libsrt), FLV and
//! MPEG-TS demuxing into
//! [`media::Frame`]s, publish authorization, and the stream registry ([`hub::Hub`]) with
//! takeover and the reconnect grace period. It does not package or serve media: consumers
//! receive each stream's events from the hub.

pub mod flv;
pub mod hub;
pub mod rtmp;
pub mod srt;
pub mod ts;

pub use hub::{Hub, NewStream, PublishError, Publisher, StreamEvent, StreamEventKind};
