//! Ingest for Ferrocast: the RTMP listener (rml_rtmp), FLV tag demuxing into
//! [`media::Frame`]s, publish authorization, and the stream registry ([`hub::Hub`]) with
//! takeover and the reconnect grace period. It does not package or serve media: consumers
//! receive each stream's events from the hub.

pub mod flv;
pub mod hub;
pub mod rtmp;

pub use hub::{Hub, NewStream, PublishError, Publisher, StreamEvent, StreamEventKind};
