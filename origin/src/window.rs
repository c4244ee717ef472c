//! The live window of one rendition: segments, their parts (complete or being written), init
//! segments, and the stream's end. Pure data: [`LiveWindow::apply`] takes packager output;
//! HTTP handlers read it (under a short lock) to render playlists and serve bytes.

use crate::packager::Packaged;
use bytes::Bytes;
use media::body::Body;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

const TICKS: f64 = media::VIDEO_TIMESCALE as f64;

/// One part: complete (`bytes` set) or still being written (`body` growing; readers stream
/// it as it grows).
#[derive(Debug, Clone)]
pub struct Part {
    pub independent: bool,
    /// 90 kHz ticks; `None` while being written.
    pub duration: Option<i64>,
    pub body: Arc<Body>,
    pub bytes: Option<Bytes>,
    pub etag: u64,
}

impl Part {
    pub fn duration_secs(&self) -> f64 {
        self.duration.unwrap_or(0) as f64 / TICKS
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub msn: u64,
    pub discontinuity: bool,
    pub init_version: u32,
    pub program_date_time: SystemTime,
    /// 90 kHz ticks; `None` while open.
    pub duration: Option<i64>,
    pub parts: Vec<Part>,
    pub size: usize,
}

impl Segment {
    pub fn duration_secs(&self) -> f64 {
        self.duration.unwrap_or(0) as f64 / TICKS
    }

    pub fn complete_parts(&self) -> usize {
        self.parts.iter().take_while(|p| p.bytes.is_some()).count()
    }

    pub fn etag(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in &self.parts {
            p.etag.hash(&mut h);
        }
        h.finish()
    }
}

/// What a request for a part finds.
#[derive(Debug, Clone)]
pub enum PartState {
    Complete {
        bytes: Bytes,
        etag: u64,
    },
    /// Being written: stream it from its growing body.
    Writing(Arc<Body>),
    /// Not started yet, but it is the next part to be written (the preload hint).
    Next,
    /// Not there and not coming (too old, or beyond the next part).
    Missing,
}

/// What changed, for the driver to wake the right waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// Bytes appended to the part being written.
    Bytes,
    /// A part, segment or init completed, or the stream ended: playlists change.
    Position,
}

/// Per-rendition live window.
#[derive(Debug)]
pub struct LiveWindow {
    pub max_segments: usize,
    pub part_target_secs: f64,
    /// Segments whose parts are listed in the playlist (the last N, counting the open one).
    pub part_segments: usize,
    next_msn: u64,
    segments: VecDeque<Segment>,
    inits: BTreeMap<u32, Bytes>,
    target_duration: Option<u32>,
    ended: bool,
    discontinuity_sequence: u64,
}

impl LiveWindow {
    pub fn new(first_msn: u64, max_segments: usize, part_target_secs: f64) -> LiveWindow {
        LiveWindow {
            max_segments: max_segments.max(2),
            part_target_secs,
            part_segments: 3,
            next_msn: first_msn,
            segments: VecDeque::new(),
            inits: BTreeMap::new(),
            target_duration: None,
            ended: false,
            discontinuity_sequence: 0,
        }
    }

    /// Numbers this window's first segment `msn` (a rendition joining a running stream takes
    /// the number the source gave the same media). Ignored once a segment exists.
    pub fn set_next_msn(&mut self, msn: u64) {
        if self.segments.is_empty() {
            self.next_msn = msn;
        }
    }

    /// The number the next segment will get.
    pub fn next_msn(&self) -> u64 {
        self.next_msn
    }

    pub fn apply(&mut self, ev: Packaged) -> Change {
        match ev {
            Packaged::Init { version, bytes, .. } => {
                self.inits.insert(version, bytes);
                Change::Position
            }
            Packaged::TargetDuration(td) => {
                self.target_duration = Some(td);
                Change::Position
            }
            Packaged::SegmentStart {
                discontinuity,
                init_version,
                program_date_time,
                ..
            } => {
                self.segments.push_back(Segment {
                    msn: self.next_msn,
                    discontinuity,
                    init_version,
                    program_date_time,
                    duration: None,
                    parts: Vec::new(),
                    size: 0,
                });
                self.next_msn += 1;
                Change::Position
            }
            Packaged::PartStart { independent } => {
                if let Some(seg) = self.segments.back_mut() {
                    seg.parts.push(Part {
                        independent,
                        duration: None,
                        body: Body::new(),
                        bytes: None,
                        etag: 0,
                    });
                }
                Change::Bytes
            }
            Packaged::Chunk(bytes) => {
                if let Some(part) = self.segments.back_mut().and_then(|s| s.parts.last_mut()) {
                    part.body.push(bytes);
                }
                Change::Bytes
            }
            Packaged::PartEnd { duration } => {
                if let Some(seg) = self.segments.back_mut() {
                    if let Some(part) = seg.parts.last_mut() {
                        part.body.finish(Ok(()));
                        let bytes = part.body.bytes().unwrap_or_default();
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        bytes.hash(&mut h);
                        part.etag = h.finish();
                        seg.size += bytes.len();
                        part.bytes = Some(bytes);
                        part.duration = Some(duration);
                    }
                }
                Change::Position
            }
            Packaged::SegmentEnd { duration } => {
                if let Some(seg) = self.segments.back_mut() {
                    seg.duration = Some(duration);
                }
                self.evict();
                Change::Position
            }
        }
    }

    /// The stream ended: no more media; playlists get EXT-X-ENDLIST.
    pub fn end(&mut self) {
        // A part still being written never completes: its readers see a broken transfer.
        for seg in &self.segments {
            for p in seg.parts.iter().filter(|p| p.bytes.is_none()) {
                p.body.finish(Err("stream ended".into()));
            }
        }
        // Drop a segment that never got a part (e.g. ended right at a cut).
        if self.segments.back().is_some_and(|s| s.duration.is_none()) {
            self.segments.pop_back();
        }
        self.ended = true;
    }

    fn evict(&mut self) {
        let complete = self
            .segments
            .iter()
            .filter(|s| s.duration.is_some())
            .count();
        let mut excess = complete.saturating_sub(self.max_segments);
        while excess > 0 {
            match self.segments.pop_front() {
                Some(s) => {
                    excess -= 1;
                    if s.discontinuity {
                        self.discontinuity_sequence += 1;
                    }
                }
                None => break,
            }
        }
        let oldest = self.segments.front().map_or(0, |s| s.init_version);
        self.inits.retain(|v, _| *v >= oldest);
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn target_duration(&self) -> Option<u32> {
        self.target_duration
    }

    /// Playlists are served once the first segment is complete (that fixes TARGETDURATION).
    pub fn ready(&self) -> bool {
        self.target_duration.is_some() && self.segments.iter().any(|s| s.duration.is_some())
    }

    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &Segment> + ExactSizeIterator {
        self.segments.iter()
    }

    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    pub fn init(&self, version: u32) -> Option<&Bytes> {
        self.inits.get(&version)
    }

    pub fn latest_init(&self) -> Option<(u32, &Bytes)> {
        self.inits.iter().next_back().map(|(v, b)| (*v, b))
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// Highest MSN of a complete segment.
    pub fn last_complete_msn(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.duration.is_some())
            .map(|s| s.msn)
    }

    /// The last complete part: (msn, part index).
    pub fn last_part(&self) -> Option<(u64, usize)> {
        self.segments.iter().rev().find_map(|s| {
            let n = s.complete_parts();
            (n > 0).then(|| (s.msn, n - 1))
        })
    }

    /// The part the preload hint names: the one being written, else the next one to start.
    pub fn preload_hint(&self) -> Option<(u64, usize)> {
        if self.ended {
            return None;
        }
        match self.segments.back() {
            Some(s) if s.duration.is_none() => {
                let n = s.complete_parts();
                Some((s.msn, n))
            }
            _ => Some((self.next_msn, 0)),
        }
    }

    pub fn part_state(&self, msn: u64, index: usize) -> PartState {
        if let Some(seg) = self.segment(msn) {
            match seg.parts.get(index) {
                Some(p) => match &p.bytes {
                    Some(b) => PartState::Complete {
                        bytes: b.clone(),
                        etag: p.etag,
                    },
                    None => PartState::Writing(Arc::clone(&p.body)),
                },
                None if self.preload_hint() == Some((msn, index)) => PartState::Next,
                None => PartState::Missing,
            }
        } else if self.preload_hint() == Some((msn, index)) {
            PartState::Next
        } else {
            PartState::Missing
        }
    }

    /// Complete segment bytes, as its parts (a segment is exactly their concatenation).
    pub fn segment_bytes(&self, msn: u64) -> Option<(Vec<Bytes>, u64)> {
        let seg = self.segment(msn)?;
        seg.duration?;
        let parts = seg.parts.iter().filter_map(|p| p.bytes.clone()).collect();
        Some((parts, seg.etag()))
    }

    /// Peak and average bitrate (bits/s) over the complete segments in the window.
    pub fn bandwidth(&self) -> Option<(u64, u64)> {
        let mut peak = 0f64;
        let (mut bytes, mut secs) = (0usize, 0f64);
        for s in self.segments.iter().filter(|s| s.duration.is_some()) {
            let d = s.duration_secs();
            if d > 0.0 {
                peak = peak.max(s.size as f64 * 8.0 / d);
                bytes += s.size;
                secs += d;
            }
        }
        (secs > 0.0).then(|| {
            (
                peak.ceil() as u64,
                (bytes as f64 * 8.0 / secs).ceil() as u64,
            )
        })
    }

    /// Bytes of media held (for memory accounting).
    pub fn bytes_held(&self) -> usize {
        self.segments
            .iter()
            .map(|s| {
                s.size
                    + s.parts
                        .iter()
                        .filter(|p| p.bytes.is_none())
                        .map(|p| p.body.len())
                        .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg_start(w: &mut LiveWindow, disc: bool) {
        w.apply(Packaged::SegmentStart {
            discontinuity: disc,
            init_version: 0,
            program_date_time: SystemTime::UNIX_EPOCH,
            start: 0,
        });
    }

    fn part(w: &mut LiveWindow, bytes: &'static [u8]) {
        w.apply(Packaged::PartStart { independent: true });
        w.apply(Packaged::Chunk(Bytes::from_static(bytes)));
        w.apply(Packaged::PartEnd { duration: 27000 });
    }

    #[test]
    fn parts_concatenate_into_segments_and_window_slides() {
        let mut w = LiveWindow::new(100, 2, 0.333);
        w.apply(Packaged::TargetDuration(2));
        for i in 0..4 {
            seg_start(&mut w, i == 1);
            part(&mut w, b"ab");
            part(&mut w, b"cd");
            w.apply(Packaged::SegmentEnd { duration: 54000 });
        }
        assert!(w.ready());
        let msns: Vec<u64> = w.segments().map(|s| s.msn).collect();
        assert_eq!(msns, vec![102, 103]);
        assert_eq!(w.discontinuity_sequence(), 1);
        let (parts, _) = w.segment_bytes(103).unwrap();
        assert_eq!(parts.concat(), b"abcd");
        assert!(w.segment_bytes(101).is_none());
        assert_eq!(w.last_part(), Some((103, 1)));
        assert_eq!(w.preload_hint(), Some((104, 0)));
        assert!(matches!(w.part_state(104, 0), PartState::Next));
        assert!(matches!(w.part_state(104, 1), PartState::Missing));
        assert!(matches!(w.part_state(103, 1), PartState::Complete { .. }));
        w.end();
        assert_eq!(w.preload_hint(), None);
        assert!(matches!(w.part_state(104, 0), PartState::Missing));
    }

    /// A window whose part 0.0 is being written, with one chunk `1` so far.
    fn writing_part_0() -> (LiveWindow, Arc<Body>) {
        let mut w = LiveWindow::new(0, 6, 0.333);
        seg_start(&mut w, false);
        w.apply(Packaged::PartStart { independent: true });
        w.apply(Packaged::Chunk(Bytes::from_static(b"1")));
        let PartState::Writing(body) = w.part_state(0, 0) else {
            panic!("part 0 is being written");
        };
        (w, body)
    }

    #[tokio::test]
    async fn part_being_written_streams_chunk_by_chunk() {
        use futures_util::StreamExt;
        let (mut w, body) = writing_part_0();
        assert_eq!(w.preload_hint(), Some((0, 0)));
        let mut reader = Box::pin(body.reader(std::time::Duration::from_secs(5)));
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"1");
        w.apply(Packaged::Chunk(Bytes::from_static(b"2")));
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"2");
        w.apply(Packaged::PartEnd { duration: 3000 });
        assert!(reader.next().await.is_none(), "the body ends with the part");
        assert!(matches!(w.part_state(0, 0), PartState::Complete { .. }));
        assert_eq!(w.preload_hint(), Some((0, 1)));
    }

    #[tokio::test]
    async fn a_part_cut_off_by_the_end_is_a_broken_transfer() {
        use futures_util::StreamExt;
        let (mut w, body) = writing_part_0();
        w.end();
        let got: Vec<_> = body
            .reader(std::time::Duration::from_secs(5))
            .collect()
            .await;
        assert!(got.last().is_some_and(|r| r.is_err()));
    }
}
