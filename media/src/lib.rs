//! Shared media types for Ferrocast: frames with explicit timescales, codec configurations
//! (H.264 decoder configuration record, AAC AudioSpecificConfig), stream names, keys and session
//! ids; and the small pieces every stage shares: H.264 Annex B → samples ([`annexb`], for
//! MPEG-TS ingest and encoder output), the stream fan-out ([`fanout`]), the growing
//! response body ([`body`]), player telemetry ([`cmcd`], CTA-5004), LL-HLS delivery directives ([`directives`]), the CORS policy
//! ([`http`]), the built-in player page ([`page`]), the edge→origin report
//! ([`viewers::Report`]) and a constant-time compare.
//! Parsing is pure; the fan-out and the body use tokio's sync primitives only (no I/O).

mod aac;
pub mod annexb;
mod avc;
mod bits;
pub mod body;
pub mod cmcd;
pub mod directives;
pub mod fanout;
pub mod http;
pub mod limits;
pub mod page;
pub mod server;
mod time;
pub mod tls;
pub mod viewers;

pub use aac::AacConfig;
pub use avc::{AvcConfig, SpsInfo};
pub use time::{format_rfc3339_millis, Timestamp, Unwrapper};

use bytes::Bytes;
use std::fmt;

/// Timescale of every video timestamp in Ferrocast (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// A video timestamp (90 kHz ticks).
pub const fn video_ts(ticks: i64) -> Timestamp {
    Timestamp::new(ticks, VIDEO_TIMESCALE)
}

/// Which elementary stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

/// One access unit. Its timestamps carry their timescale: [`VIDEO_TIMESCALE`] for video, the
/// sample rate of the track's [`AacConfig`] for audio; already unwrapped to 64 bits.
///
/// Video `data` is an AVC sample in length-prefixed form (as in `avcC`/MP4, with the NAL length
/// size of the track's [`AvcConfig`]); audio `data` is one raw AAC frame (no ADTS header).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: Track,
    pub pts: Timestamp,
    pub dts: Timestamp,
    pub keyframe: bool,
    pub data: Bytes,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("track", &self.track)
            .field("pts", &self.pts)
            .field("dts", &self.dts)
            .field("keyframe", &self.keyframe)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Codec configuration of one track, as announced by the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecConfig {
    Avc(AvcConfig),
    Aac(AacConfig),
}

/// Errors from parsing codec configuration or elementary stream data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("{what}: truncated at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("{what}: invalid value {value} at byte {offset}")]
    Invalid {
        what: &'static str,
        value: u64,
        offset: usize,
    },
    #[error("{0}")]
    Unsupported(&'static str),
}

/// The public name of a stream, as it appears in playback URLs (`/live/{name}/…`).
///
/// Restricted to `[A-Za-z0-9_-]{1,64}` so it is safe in paths, metrics labels and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

impl StreamName {
    pub fn new(name: &str) -> Option<StreamName> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| StreamName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret publish key. Its `Debug` and `Display` never show the key itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamKey(String);

impl StreamKey {
    pub fn new(key: impl Into<String>) -> StreamKey {
        StreamKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so that key checks do not leak timing.
    pub fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(&self.0, candidate)
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// Compares two secrets in time that depends only on their lengths, not on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Identifies one live stream from ingest to the edge; shown in logs and response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A fresh id: unpredictable enough for correlation (not a secret).
    pub fn generate() -> SessionId {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        SessionId(h.finish())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_restricted() {
        assert!(StreamName::new("demo_1-a").is_some());
        assert!(StreamName::new("").is_none());
        assert!(StreamName::new("../etc").is_none());
        assert!(StreamName::new(&"a".repeat(65)).is_none());
    }

    #[test]
    fn keys_never_print() {
        let k = StreamKey::new("s3cret");
        assert!(!format!("{k:?}").contains("s3cret"));
        assert!(k.matches("s3cret"));
        assert!(!k.matches("s3cres"));
        assert!(!k.matches("s3cret2"));
    }

    #[test]
    fn session_ids_differ() {
        assert_ne!(SessionId::generate(), SessionId::generate());
    }
}
