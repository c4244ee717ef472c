//! A guard in front of rml_rtmp's chunk deserializer: it reads the RTMP chunk headers as they
//! arrive (the same framing, RTMP 1.0 §5.3) and refuses, before a byte reaches the session,
//! what would cost memory or break the parser: a message longer than the limit (rml_rtmp
//! reserves a message's whole length when its first chunk header arrives, so one 12-byte
//! header claiming 16 MB would otherwise allocate 16 MB), a Set Chunk Size beyond the limit
//! or of 0, too many chunk streams, a chunk on a stream that never had a full header, and an
//! extended timestamp below 0xFFFFFF on a delta header (malformed; rml_rtmp would underflow).
//!
//! Pure: bytes in, a verdict out; it keeps only the headers' state (a few bytes per chunk
//! stream), never the payload.

use std::collections::HashMap;

/// What the guard enforces.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Largest Set Chunk Size a peer may announce.
    pub max_chunk_size: u32,
    /// Largest message (one FLV tag, one command).
    pub max_message_size: u32,
    /// Distinct chunk stream ids a connection may use.
    pub max_chunk_streams: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_chunk_size: 65_536,
            max_message_size: 8 << 20,
            max_chunk_streams: 64,
        }
    }
}

/// Why the guard refused the connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("message of {size} bytes is over the limit of {limit}")]
    MessageTooLarge { size: u32, limit: u32 },
    #[error("chunk size {size} is over the limit of {limit}")]
    ChunkSizeTooLarge { size: u32, limit: u32 },
    #[error("chunk size 0")]
    ZeroChunkSize,
    #[error("more than {0} chunk streams")]
    TooManyChunkStreams(usize),
    #[error("chunk on stream {0} without a full header first")]
    NoPreviousHeader(u32),
    #[error("extended timestamp {0:#x} below 0xffffff")]
    BadExtendedTimestamp(u32),
    #[error("command or data message of {0} bytes (at most 65536)")]
    CommandTooLarge(u32),
    /// rml_rtmp 0.8 indexes the first three values of a command without checking there are
    /// three (a panic).
    #[error("AMF0 command with {0} values (name, transaction id and object needed)")]
    ShortCommand(usize),
    /// rml_rtmp 0.8 removes the third value of an `@setDataFrame` / `onMetaData` data
    /// message without checking it is there (a panic).
    #[error("@setDataFrame data message with {0} values (name, handler and metadata needed)")]
    ShortDataFrame(usize),
    /// rml_rtmp assembles one message at a time: a chunk of another message before the
    /// current one is complete would corrupt it (or underflow its length arithmetic).
    #[error(
        "chunk stream {next} interleaved with the incomplete message on {open} (not supported)"
    )]
    Interleaved { open: u32, next: u32 },
}

/// The last header seen on a chunk stream and how far its message has come.
#[derive(Debug, Clone, Copy)]
struct StreamState {
    length: u32,
    type_id: u8,
    /// The header's 3-byte timestamp field (0xFFFFFF: an extended timestamp follows, also in
    /// the type 3 chunks that continue it).
    timestamp_field: u32,
    received: u32,
}

/// Tracks the chunk framing of one connection's inbound bytes.
#[derive(Debug)]
pub struct ChunkGuard {
    limits: ChunkLimits,
    /// The limit on messages in force now (smaller before the publish is accepted).
    message_limit: u32,
    chunk_size: u32,
    streams: HashMap<u32, StreamState>,
    /// Bytes of a header not complete yet (at most 18).
    header: Vec<u8>,
    /// Payload bytes left in the current chunk, and its chunk stream.
    payload_left: u32,
    current: u32,
    /// The first bytes of a Set Chunk Size message's payload.
    control: Vec<u8>,
    /// The chunk stream whose message is incomplete, if one is.
    open: Option<u32>,
}

const INITIAL_CHUNK_SIZE: u32 = 128;
const EXTENDED: u32 = 0xFF_FFFF;
const SET_CHUNK_SIZE: u8 = 1;
/// AMF3-flagged and AMF0 commands: kept whole and checked before rml_rtmp decodes them.
const COMMANDS: [u8; 2] = [17, 20];
const MAX_COMMAND: u32 = 64 << 10;
/// Data messages (metadata; rml_rtmp decodes type 15 as AMF0 too): kept whole and checked
/// like commands, at any length — an AMF0 object-end marker ends the value list, so a long
/// message can still hold only two values.
const DATA: [u8; 2] = [15, 18];

impl ChunkGuard {
    /// A guard whose message limit is `initial_message_limit` until [`ChunkGuard::publishing`].
    pub fn new(limits: ChunkLimits, initial_message_limit: u32) -> ChunkGuard {
        ChunkGuard {
            limits,
            message_limit: initial_message_limit.min(limits.max_message_size),
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: HashMap::new(),
            header: Vec::with_capacity(18),
            payload_left: 0,
            current: 0,
            control: Vec::new(),
            open: None,
        }
    }

    /// The publish was accepted: media messages up to the full limit may follow.
    pub fn publishing(&mut self) {
        self.message_limit = self.limits.max_message_size;
    }

    /// The chunk size the peer announced last.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Checks the next bytes of the stream (after the handshake).
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), ChunkError> {
        while !input.is_empty() {
            if self.payload_left > 0 {
                let n = (self.payload_left as usize).min(input.len());
                self.payload(&input[..n])?;
                input = &input[n..];
                continue;
            }
            self.header.push(input[0]);
            input = &input[1..];
            self.try_header()?;
        }
        Ok(())
    }

    /// Parses the header collected so far, if it is complete.
    fn try_header(&mut self) -> Result<(), ChunkError> {
        let h = &self.header;
        let fmt = h[0] >> 6;
        let (csid, basic) = match h[0] & 0x3f {
            0 if h.len() < 2 => return Ok(()),
            0 => (64 + u32::from(h[1]), 2),
            1 if h.len() < 3 => return Ok(()),
            1 => (64 + u32::from(h[1]) + 256 * u32::from(h[2]), 3),
            id => (u32::from(id), 1),
        };
        let message_header = [11, 7, 3, 0][usize::from(fmt)];
        if h.len() < basic + message_header {
            return Ok(());
        }
        // Only the open message's own type 3 continuation may follow an incomplete message.
        if let Some(open) = self.open {
            if open != csid || fmt != 3 {
                return Err(ChunkError::Interleaved { open, next: csid });
            }
        }
        let previous = self.streams.get(&csid).copied();
        if fmt != 0 && previous.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        let m = &h[basic..];
        let be24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let mut state = previous.unwrap_or(StreamState {
            length: 0,
            type_id: 0,
            timestamp_field: 0,
            received: 0,
        });
        if fmt <= 2 {
            state.timestamp_field = be24(&m[0..3]);
        }
        if fmt <= 1 {
            state.length = be24(&m[3..6]);
            state.type_id = m[6];
        }
        let extended = state.timestamp_field == EXTENDED;
        let total = basic + message_header + if extended { 4 } else { 0 };
        if h.len() < total {
            return Ok(());
        }
        if extended && fmt != 0 {
            let e = &h[basic + message_header..total];
            let v = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            if v < EXTENDED {
                return Err(ChunkError::BadExtendedTimestamp(v));
            }
        }
        // A type 0/1/2 header starts a new message; a type 3 header continues the one in
        // progress or starts another of the same length once it is complete.
        if fmt != 3 || state.received >= state.length {
            state.received = 0;
            self.control.clear();
        }
        let checked = COMMANDS.contains(&state.type_id) || DATA.contains(&state.type_id);
        if checked && state.length > MAX_COMMAND {
            return Err(ChunkError::CommandTooLarge(state.length));
        }
        if state.length > self.message_limit {
            return Err(ChunkError::MessageTooLarge {
                size: state.length,
                limit: self.message_limit,
            });
        }
        if previous.is_none() && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ChunkError::TooManyChunkStreams(
                self.limits.max_chunk_streams,
            ));
        }
        self.header.clear();
        self.current = csid;
        self.payload_left = (state.length - state.received).min(self.chunk_size);
        self.streams.insert(csid, state);
        if self.payload_left == 0 {
            self.payload(&[])?;
        }
        Ok(())
    }

    /// Accounts for payload bytes of the current chunk.
    fn payload(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        let n = bytes.len() as u32;
        self.payload_left -= n;
        let Some(s) = self.streams.get_mut(&self.current) else {
            return Ok(());
        };
        let command = COMMANDS.contains(&s.type_id);
        let data = DATA.contains(&s.type_id);
        if command || data {
            self.control.extend_from_slice(bytes);
        } else if s.type_id == SET_CHUNK_SIZE && self.control.len() < 4 {
            let take = (4 - self.control.len()).min(bytes.len());
            self.control.extend_from_slice(&bytes[..take]);
        }
        s.received += n;
        if self.payload_left > 0 {
            return Ok(());
        }
        if s.received < s.length {
            self.open = Some(self.current);
            return Ok(());
        }
        self.open = None;
        if command {
            // AMF3-flagged commands usually carry AMF0 after a 0 byte (rml_rtmp skips it too).
            let skip = usize::from(s.type_id == 17 && self.control.first() == Some(&0));
            let mut cursor = std::io::Cursor::new(&self.control[skip..]);
            if let Ok(values) = rml_amf0::deserialize(&mut cursor) {
                if values.len() < 3 {
                    return Err(ChunkError::ShortCommand(values.len()));
                }
            }
        }
        if data {
            let mut cursor = std::io::Cursor::new(&self.control[..]);
            if let Ok(values) = rml_amf0::deserialize(&mut cursor) {
                let set_data_frame = matches!(values.first(),
                    Some(rml_amf0::Amf0Value::Utf8String(name)) if name == "@setDataFrame");
                if set_data_frame && values.len() < 3 {
                    return Err(ChunkError::ShortDataFrame(values.len()));
                }
            }
        }
        if s.type_id == SET_CHUNK_SIZE && self.control.len() == 4 {
            let c = &self.control;
            let size = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            if size == 0 {
                return Err(ChunkError::ZeroChunkSize);
            }
            if size > self.limits.max_chunk_size {
                return Err(ChunkError::ChunkSizeTooLarge {
                    size,
                    limit: self.limits.max_chunk_size,
                });
            }
            self.chunk_size = size;
        }
        self.control.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::{MessagePayload, RtmpMessage};
    use rml_rtmp::time::RtmpTimestamp;

    fn serialize(messages: &[(u32, RtmpMessage)], chunk_size: Option<u32>) -> Vec<u8> {
        let mut s = ChunkSerializer::new();
        let mut out = Vec::new();
        if let Some(size) = chunk_size {
            out.extend(
                s.set_max_chunk_size(size, RtmpTimestamp::new(0))
                    .unwrap()
                    .bytes,
            );
        }
        for (ts, m) in messages {
            let p =
                MessagePayload::from_rtmp_message(m.clone(), RtmpTimestamp::new(*ts), 1).unwrap();
            out.extend(s.serialize(&p, false, false).unwrap().bytes);
        }
        out
    }

    fn video(len: usize) -> RtmpMessage {
        RtmpMessage::VideoData {
            data: bytes::Bytes::from(vec![0x17; len]),
        }
    }

    #[test]
    fn real_chunking_passes_byte_by_byte_and_whole() {
        // Messages split over many chunks, type 3 continuations, header compression on later
        // messages, a chunk size change mid-stream, a timestamp past 0xFFFFFF (extended).
        let mut msgs = vec![(0, video(1000)), (33, video(50)), (66, video(5000))];
        msgs.push((0x0100_0000, video(300)));
        msgs.push((0x0100_0021, video(20_000)));
        for chunk_size in [None, Some(4096), Some(65_536)] {
            let bytes = serialize(&msgs, chunk_size);
            let mut g = ChunkGuard::new(ChunkLimits::default(), 1 << 20);
            g.feed(&bytes).unwrap();
            assert_eq!(g.payload_left, 0);
            assert!(g.header.is_empty());
            let mut g = ChunkGuard::new(ChunkLimits::default(), 1 << 20);
            for b in &bytes {
                g.feed(std::slice::from_ref(b)).unwrap();
            }
            assert_eq!(g.chunk_size(), chunk_size.unwrap_or(128));
            assert_eq!(g.payload_left, 0);
        }
    }

    /// What ffmpeg 5.1 sent after the handshake of a 1 s publish (connect, releaseStream,
    /// FCPublish, createStream, publish, @setDataFrame, the AVC and AAC headers, media).
    const FFMPEG: &[u8] = include_bytes!("../testdata/ffmpeg_publish_after_handshake.rtmp");

    #[test]
    fn ffmpegs_publish_passes_whole_and_split_anywhere() {
        let mut g = ChunkGuard::new(ChunkLimits::default(), 64 << 10);
        g.feed(&FFMPEG[..1000]).unwrap();
        g.publishing();
        g.feed(&FFMPEG[1000..]).unwrap();
        assert_eq!(g.chunk_size(), 4096);
        for split in (0..FFMPEG.len()).step_by(997) {
            let mut g = ChunkGuard::new(ChunkLimits::default(), 8 << 20);
            g.feed(&FFMPEG[..split]).unwrap();
            g.feed(&FFMPEG[split..]).unwrap();
            assert_eq!(g.chunk_size(), 4096);
        }
        // With a chunk size limit below ffmpeg's 4096 it is refused.
        let small = ChunkLimits {
            max_chunk_size: 1024,
            ..ChunkLimits::default()
        };
        let mut g = ChunkGuard::new(small, 8 << 20);
        assert!(matches!(
            g.feed(FFMPEG),
            Err(ChunkError::ChunkSizeTooLarge { size: 4096, .. })
        ));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_at_its_header() {
        let bytes = serialize(&[(0, video(70_000))], Some(4096));
        let mut g = ChunkGuard::new(ChunkLimits::default(), 64 << 10);
        // Refused once the 12-byte header is in, before its payload.
        let header_end = bytes.len() - 70_000 - 70_000 / 4096;
        let e = g.feed(&bytes[..header_end]).unwrap_err();
        assert_eq!(
            e,
            ChunkError::MessageTooLarge {
                size: 70_000,
                limit: 64 << 10
            }
        );
        let mut g = ChunkGuard::new(ChunkLimits::default(), 64 << 10);
        g.publishing();
        g.feed(&bytes).unwrap();
    }

    #[test]
    fn chunk_sizes_over_the_limit_or_zero_are_refused() {
        let limits = ChunkLimits {
            max_chunk_size: 4096,
            ..ChunkLimits::default()
        };
        let mut g = ChunkGuard::new(limits, 1 << 20);
        assert_eq!(
            g.feed(&serialize(&[], Some(8192))),
            Err(ChunkError::ChunkSizeTooLarge {
                size: 8192,
                limit: 4096
            })
        );
        // Set Chunk Size 0, by hand: csid 2, type 0 header, length 4, type 1, stream 0.
        let zero = [2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut g = ChunkGuard::new(limits, 1 << 20);
        assert_eq!(g.feed(&zero), Err(ChunkError::ZeroChunkSize));
    }

    #[test]
    fn malformed_framing_is_refused() {
        let limits = ChunkLimits {
            max_chunk_streams: 3,
            ..ChunkLimits::default()
        };
        // A type 3 chunk on a stream that never had a header.
        let mut g = ChunkGuard::new(limits, 1 << 20);
        assert_eq!(g.feed(&[0xc5]), Err(ChunkError::NoPreviousHeader(5)));
        // Four chunk streams with zero-length messages.
        let mut g = ChunkGuard::new(limits, 1 << 20);
        let mut bytes = Vec::new();
        for csid in 3..7u8 {
            bytes.extend([csid, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0]);
        }
        assert_eq!(g.feed(&bytes), Err(ChunkError::TooManyChunkStreams(3)));
        // A type 1 header with an extended timestamp field whose value is below 0xFFFFFF.
        let mut g = ChunkGuard::new(limits, 1 << 20);
        let mut bytes = vec![3, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0];
        bytes.extend([0x43, 0xff, 0xff, 0xff, 0, 0, 0, 9, 0, 0, 0, 1]);
        assert_eq!(g.feed(&bytes), Err(ChunkError::BadExtendedTimestamp(1)));
        // A chunk of another stream (or a new message on the same one) in the middle of a
        // message: rml_rtmp would mix the two (and its length arithmetic underflowed on what
        // the rtmp_session fuzz target found).
        for next in [
            [0x04u8, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0],
            [0x03, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0],
        ] {
            let mut g = ChunkGuard::new(limits, 1 << 20);
            let mut bytes = vec![3, 0, 0, 0, 0, 0x01, 0, 9, 1, 0, 0, 0];
            bytes.extend([0u8; 128]);
            bytes.extend(next);
            assert_eq!(
                g.feed(&bytes),
                Err(ChunkError::Interleaved {
                    open: 3,
                    next: u32::from(next[0])
                })
            );
        }
        // An AMF0 command with only its name (found by the rtmp_session fuzz target: rml_rtmp
        // panicked), whole and in pieces.
        let mut bytes = vec![3, 0, 0, 0, 0, 0, 7, 20, 0, 0, 0, 0];
        bytes.extend([2, 0, 4, b'p', b'l', b'a', b'y']);
        for step in [1, bytes.len()] {
            let mut g = ChunkGuard::new(limits, 1 << 20);
            let r = bytes.chunks(step).try_for_each(|b| g.feed(b));
            assert_eq!(r, Err(ChunkError::ShortCommand(1)));
        }
        // `@setDataFrame` and `onMetaData` without the metadata (found by the rtmp_session
        // fuzz target: rml_rtmp panicked), whole and in pieces; with it, it passes.
        let mut short = vec![3, 0, 0, 0, 0, 0, 29, 18, 1, 0, 0, 0];
        short.extend([2, 0, 13]);
        short.extend(b"@setDataFrame");
        short.extend([2, 0, 10]);
        short.extend(b"onMetaData");
        for step in [1, short.len()] {
            let mut g = ChunkGuard::new(limits, 1 << 20);
            let r = short.chunks(step).try_for_each(|b| g.feed(b));
            assert_eq!(r, Err(ChunkError::ShortDataFrame(2)));
        }
        let mut whole = short.clone();
        whole[6] = 29 + 4;
        whole.extend([3, 0, 0, 9]); // an empty object
        let mut g = ChunkGuard::new(limits, 1 << 20);
        g.feed(&whole).unwrap();
        // The same two values, then an object-end marker (it ends rml_amf0's value list) and
        // 300 bytes of anything, in 128-byte chunks, as type 18 and as type 15 (which rml_rtmp
        // decodes as AMF0 too): found by the rtmp_session fuzz target past a length check.
        let mut payload = short[12..].to_vec();
        payload.push(9);
        payload.extend([0x55u8; 300]);
        for type_id in [18u8, 15] {
            let len = payload.len() as u32;
            let mut bytes = vec![3, 0, 0, 0];
            bytes.extend(&len.to_be_bytes()[1..]);
            bytes.extend([type_id, 1, 0, 0, 0]);
            for (i, chunk) in payload.chunks(128).enumerate() {
                if i > 0 {
                    bytes.push(0xC3);
                }
                bytes.extend(chunk);
            }
            let mut g = ChunkGuard::new(limits, 1 << 20);
            assert_eq!(g.feed(&bytes), Err(ChunkError::ShortDataFrame(2)));
        }
        // A data message over 64 KiB is refused like a command.
        let mut g = ChunkGuard::new(limits, 1 << 20);
        assert_eq!(
            g.feed(&[3, 0, 0, 0, 0x01, 0, 1, 18, 1, 0, 0, 0]),
            Err(ChunkError::CommandTooLarge(0x1_0001))
        );
        // A 3-byte chunk stream id (basic header form 1) is read whole.
        let mut g = ChunkGuard::new(limits, 1 << 20);
        g.feed(&[1, 0x10, 0x01, 0, 0, 0, 0, 0, 2, 9, 1, 0, 0, 0, 0xaa, 0xbb])
            .unwrap();
        assert!(g.streams.contains_key(&(64 + 0x10 + 256)));
    }
}
