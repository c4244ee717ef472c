//! MPEG-TS (ISO/IEC 13818-1) → [`media::Frame`]s: PAT/PMT, PES reassembly, 33-bit PTS/DTS
//! unwrapping, H.264 Annex B → length-prefixed samples with SPS/PPS lifted into an avcC
//! config, AAC ADTS → raw AAC frames with their AudioSpecificConfig.
//!
//! Buffering rule: input may be cut anywhere (not only at 188-byte boundaries): partial
//! packets are kept until complete, and the demuxer resynchronises on the 0x47 sync byte after
//! garbage. A PES packet is emitted when the next one of the same PID starts (or when its
//! declared length is reached), so video frames come out one PES late at most. Continuity
//! errors drop the PES in progress (a damaged frame) and are counted; nothing panics. Video
//! frames after a dropped video PES are dropped too until the next keyframe: they reference
//! what was lost (undecodable), and the lost frame may have been the keyframe that was to start
//! the next segment.

use bytes::{Bytes, BytesMut};
use media::{AacConfig, AvcConfig, CodecConfig, Frame, MediaError, Track, Unwrapper};

const PACKET: usize = 188;
const STREAM_H264: u8 = 0x1b;
const STREAM_AAC_ADTS: u8 = 0x0f;
/// A PES larger than this is dropped (no sane frame is this big).
const MAX_PES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsEvent {
    Config(CodecConfig),
    Frame(Frame),
}

/// Problems that end the connection (most damage is tolerated and only counted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TsError {
    #[error("the PMT has neither H.264 video nor AAC audio (stream types: {0:?})")]
    NoMedia(Vec<u8>),
    #[error("no PAT/PMT in the first {0} bytes: not an MPEG-TS stream")]
    NotTs(usize),
    #[error("bad H.264 parameter sets: {0}")]
    BadAvc(MediaError),
}

/// Counters of tolerated damage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TsStats {
    pub packets: u64,
    pub continuity_errors: u64,
    pub resyncs: u64,
    pub dropped_pes: u64,
    /// Video frames dropped after damage while waiting for a keyframe.
    pub skipped_frames: u64,
}

#[derive(Debug)]
struct Pes {
    pid: u16,
    track: Track,
    buf: BytesMut,
    cc: Option<u8>,
    broken: bool,
    expected_len: Option<usize>,
}

#[derive(Debug)]
pub struct TsDemuxer {
    pending: BytesMut,
    pmt_pid: Option<u16>,
    video_pid: Option<u16>,
    audio_pid: Option<u16>,
    pes: Vec<Pes>,
    video_clock: Unwrapper,
    audio_clock: Unwrapper,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    next_audio: Option<i64>,
    /// Bytes received while no PMT with video has been seen.
    before_pmt: usize,
    /// Frames held back at the start while the PMT's audio stream has not yet given its
    /// config, so that consumers learn every track before the first frame (no mid-stream init
    /// change). Bounded by [`MAX_HOLD_TICKS`] of video.
    held: Vec<TsEvent>,
    holding: bool,
    /// A video PES was damaged: video frames are dropped until the next keyframe.
    video_wait_key: bool,
    pub stats: TsStats,
}

/// How much video (90 kHz) may be held while waiting for the audio config.
const MAX_HOLD_TICKS: i64 = 90_000;

/// Input without a PAT/PMT this long is not MPEG-TS (encoders repeat them every ~100 ms).
const MAX_BYTES_BEFORE_PMT: usize = 512 * 1024;

impl Default for TsDemuxer {
    fn default() -> Self {
        TsDemuxer {
            pending: BytesMut::new(),
            pmt_pid: None,
            video_pid: None,
            audio_pid: None,
            pes: Vec::new(),
            video_clock: Unwrapper::new(33),
            audio_clock: Unwrapper::new(33),
            sps: None,
            pps: None,
            avc: None,
            aac: None,
            next_audio: None,
            before_pmt: 0,
            held: Vec::new(),
            holding: true,
            video_wait_key: false,
            stats: TsStats::default(),
        }
    }
}

impl TsDemuxer {
    /// Feeds bytes (any length, any alignment); returns what became complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TsEvent>, TsError> {
        self.pending.extend_from_slice(data);
        if self.video_pid.is_none() && self.audio_pid.is_none() {
            self.before_pmt += data.len();
            if self.before_pmt > MAX_BYTES_BEFORE_PMT {
                return Err(TsError::NotTs(self.before_pmt));
            }
        }
        let mut out = Vec::new();
        loop {
            // Re-align on a sync byte.
            let Some(start) = self.pending.iter().position(|b| *b == 0x47) else {
                self.stats.resyncs += 1;
                self.pending.clear();
                break;
            };
            if start > 0 {
                self.stats.resyncs += 1;
                let _ = self.pending.split_to(start);
            }
            if self.pending.len() < PACKET {
                break;
            }
            // A real sync byte is followed by another one 188 bytes on (when we have it).
            if self.pending.len() > PACKET && self.pending[PACKET] != 0x47 {
                self.stats.resyncs += 1;
                let _ = self.pending.split_to(1);
                continue;
            }
            let packet = self.pending.split_to(PACKET).freeze();
            self.packet(&packet, &mut out)?;
        }
        Ok(self.release(out))
    }

    /// Flushes PES packets still being assembled (end of stream).
    pub fn flush(&mut self) -> Result<Vec<TsEvent>, TsError> {
        let mut out = Vec::new();
        for i in 0..self.pes.len() {
            self.finish_pes(i, &mut out)?;
        }
        self.holding = false;
        Ok(self.release(out))
    }

    fn packet(&mut self, p: &Bytes, out: &mut Vec<TsEvent>) -> Result<(), TsError> {
        self.stats.packets += 1;
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let afc = (p[3] >> 4) & 0x03;
        let cc = p[3] & 0x0f;
        let mut pos = 4;
        if afc & 0x02 != 0 {
            pos += 1 + usize::from(p[4]);
        }
        if afc & 0x01 == 0 || pos >= PACKET {
            return Ok(()); // no payload
        }
        let payload = p.slice(pos..);
        if pid == 0 {
            if pusi {
                self.pat(&payload);
            }
        } else if Some(pid) == self.pmt_pid {
            if pusi {
                self.pmt(&payload)?;
            }
        } else if Some(pid) == self.video_pid || Some(pid) == self.audio_pid {
            self.pes_payload(pid, pusi, cc, &payload, out)?;
        }
        Ok(())
    }

    /// Applies the start-up hold: configs pass at once; frames wait until every track the PMT
    /// declares has its config (or a second of video has piled up).
    fn release(&mut self, out: Vec<TsEvent>) -> Vec<TsEvent> {
        if !self.holding {
            return out;
        }
        let mut now = Vec::new();
        for ev in out {
            match ev {
                TsEvent::Config(_) => now.push(ev),
                frame => self.held.push(frame),
            }
        }
        let video_span = {
            let mut v = self.held.iter().filter_map(|e| match e {
                TsEvent::Frame(f) if f.track == Track::Video => Some(f.dts.ticks()),
                _ => None,
            });
            let first = v.next();
            let last = v.last();
            first.zip(last).map_or(0, |(a, b)| b - a)
        };
        let audio_ready = self.audio_pid.is_none() || self.aac.is_some();
        let video_ready = self.video_pid.is_none() || self.avc.is_some();
        // Audio-only programs (radio, podcasts) are released as soon as the AAC config is in.
        if (self.avc.is_some() && (audio_ready || video_span >= MAX_HOLD_TICKS))
            || (self.video_pid.is_none() && video_ready && self.aac.is_some())
        {
            self.holding = false;
            now.append(&mut self.held);
        }
        now
    }

    fn psi_section(payload: &[u8]) -> Option<&[u8]> {
        let pointer = usize::from(*payload.first()?);
        let s = payload.get(1 + pointer..)?;
        let len = usize::from(*s.get(1)? & 0x0f) << 8 | usize::from(*s.get(2)?);
        s.get(..3 + len)
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(s) = Self::psi_section(payload) else {
            return;
        };
        if s.first() != Some(&0x00) || s.len() < 12 {
            return;
        }
        // Programs from byte 8 to the CRC; take the first non-zero program number.
        for entry in s[8..s.len() - 4].chunks_exact(4) {
            let program = u16::from(entry[0]) << 8 | u16::from(entry[1]);
            if program != 0 {
                self.pmt_pid = Some(u16::from(entry[2] & 0x1f) << 8 | u16::from(entry[3]));
                return;
            }
        }
    }

    fn pmt(&mut self, payload: &[u8]) -> Result<(), TsError> {
        let Some(s) = Self::psi_section(payload) else {
            return Ok(());
        };
        if s.first() != Some(&0x02) || s.len() < 16 {
            return Ok(());
        }
        let info_len = usize::from(s[10] & 0x0f) << 8 | usize::from(s[11]);
        let mut pos = 12 + info_len;
        let end = s.len() - 4;
        let (mut video, mut audio, mut types) = (None, None, Vec::new());
        while pos + 5 <= end {
            let stream_type = s[pos];
            let pid = u16::from(s[pos + 1] & 0x1f) << 8 | u16::from(s[pos + 2]);
            let es_len = usize::from(s[pos + 3] & 0x0f) << 8 | usize::from(s[pos + 4]);
            types.push(stream_type);
            match stream_type {
                STREAM_H264 if video.is_none() => video = Some(pid),
                STREAM_AAC_ADTS if audio.is_none() => audio = Some(pid),
                _ => {}
            }
            pos += 5 + es_len;
        }
        if video.is_none() && audio.is_none() {
            return Err(TsError::NoMedia(types));
        }
        self.video_pid = video;
        self.audio_pid = audio;
        Ok(())
    }

    fn pes_payload(
        &mut self,
        pid: u16,
        pusi: bool,
        cc: u8,
        payload: &Bytes,
        out: &mut Vec<TsEvent>,
    ) -> Result<(), TsError> {
        let idx = match self.pes.iter().position(|p| p.pid == pid) {
            Some(i) => i,
            None => {
                let track = if Some(pid) == self.video_pid {
                    Track::Video
                } else {
                    Track::Audio
                };
                self.pes.push(Pes {
                    pid,
                    track,
                    buf: BytesMut::new(),
                    cc: None,
                    broken: true,
                    expected_len: None,
                });
                self.pes.len() - 1
            }
        };
        if let Some(prev) = self.pes[idx].cc {
            if cc == prev {
                return Ok(()); // duplicate packet
            }
            if cc != (prev + 1) & 0x0f {
                self.stats.continuity_errors += 1;
                self.pes[idx].broken = true;
            }
        }
        self.pes[idx].cc = Some(cc);
        if pusi {
            self.finish_pes(idx, out)?;
            let pes = &mut self.pes[idx];
            pes.broken = false;
            pes.buf.clear();
            pes.expected_len = None;
            if payload.len() >= 6 && payload[..3] == [0, 0, 1] {
                let len = usize::from(payload[4]) << 8 | usize::from(payload[5]);
                pes.expected_len = (len > 0).then_some(len + 6);
            }
        }
        let pes = &mut self.pes[idx];
        if pes.broken {
            return Ok(());
        }
        if pes.buf.len() + payload.len() > MAX_PES {
            pes.broken = true;
            pes.buf.clear();
            self.stats.dropped_pes += 1;
            return Ok(());
        }
        pes.buf.extend_from_slice(payload);
        if pes.expected_len.is_some_and(|l| pes.buf.len() >= l) {
            self.finish_pes(idx, out)?;
        }
        Ok(())
    }

    fn finish_pes(&mut self, idx: usize, out: &mut Vec<TsEvent>) -> Result<(), TsError> {
        let pes = &mut self.pes[idx];
        let data = std::mem::take(&mut pes.buf).freeze();
        let track = pes.track;
        let broken = std::mem::replace(&mut pes.broken, true);
        pes.expected_len = None;
        if data.is_empty() {
            return Ok(());
        }
        let parsed = if broken {
            None
        } else {
            parse_pes_header(&data)
        };
        let Some((pts, dts, body)) = parsed else {
            self.stats.dropped_pes += 1;
            if track == Track::Video {
                self.video_wait_key = true;
            }
            return Ok(());
        };
        match track {
            Track::Video => self.video_access_unit(pts, dts, body, out),
            Track::Audio => {
                self.adts(pts, body, out);
                Ok(())
            }
        }
    }

    fn video_access_unit(
        &mut self,
        pts: Option<u64>,
        dts: Option<u64>,
        body: Bytes,
        out: &mut Vec<TsEvent>,
    ) -> Result<(), TsError> {
        let Some(pts) = pts else {
            self.stats.dropped_pes += 1;
            self.video_wait_key = true;
            return Ok(());
        };
        let media::annexb::AccessUnit {
            sample,
            keyframe,
            sps,
            pps,
        } = media::annexb::access_unit(&body);
        if let (Some(s), Some(p)) = (sps.or(self.sps.clone()), pps.or(self.pps.clone())) {
            if self.sps.as_ref() != Some(&s) || self.pps.as_ref() != Some(&p) || self.avc.is_none()
            {
                let config = AvcConfig::from_parameter_sets(s.clone(), p.clone())
                    .map_err(TsError::BadAvc)?;
                self.sps = Some(s);
                self.pps = Some(p);
                if self.avc.as_ref().map(|c| &c.record) != Some(&config.record) {
                    self.avc = Some(config.clone());
                    out.push(TsEvent::Config(CodecConfig::Avc(config)));
                }
            }
        }
        if self.avc.is_none() || sample.is_empty() {
            return Ok(()); // nothing decodable before the first SPS/PPS
        }
        if self.video_wait_key {
            if !keyframe {
                self.stats.skipped_frames += 1;
                return Ok(());
            }
            self.video_wait_key = false;
        }
        let pts = self.video_clock.unwrap(pts);
        let dts = dts.map_or(pts, |d| {
            pts - ((pts as u64).wrapping_sub(d) & ((1 << 33) - 1)) as i64
        });
        out.push(TsEvent::Frame(Frame {
            track: Track::Video,
            pts: media::video_ts(pts),
            dts: media::video_ts(dts.min(pts)),
            keyframe,
            data: sample,
        }));
        Ok(())
    }

    fn adts(&mut self, pts: Option<u64>, body: Bytes, out: &mut Vec<TsEvent>) {
        let Some(pts) = pts else { return };
        let base = self.audio_clock.unwrap(pts);
        let mut pos = 0;
        let mut index = 0i64;
        while pos + 7 <= body.len() {
            let h = &body[pos..];
            if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
                self.stats.dropped_pes += 1;
                return;
            }
            let protection_absent = h[1] & 0x01 != 0;
            let profile = h[2] >> 6;
            let rate_index = (h[2] >> 2) & 0x0f;
            let channels = (h[2] & 0x01) << 2 | h[3] >> 6;
            let frame_len =
                usize::from(h[3] & 0x03) << 11 | usize::from(h[4]) << 3 | usize::from(h[5] >> 5);
            let header_len = if protection_absent { 7 } else { 9 };
            if frame_len < header_len || pos + frame_len > body.len() {
                self.stats.dropped_pes += 1;
                return;
            }
            let config = match AacConfig::from_adts(profile, rate_index, channels) {
                Ok(c) => c,
                Err(_) => {
                    self.stats.dropped_pes += 1;
                    return;
                }
            };
            if self.aac.as_ref() != Some(&config) {
                self.aac = Some(config.clone());
                self.next_audio = None;
                out.push(TsEvent::Config(CodecConfig::Aac(config.clone())));
            }
            let rate = i64::from(config.sample_rate);
            let from_clock = base * rate / 90_000 + index * 1024;
            let dts = match self.next_audio {
                Some(next) if (from_clock - next).abs() < 1024 => next,
                _ => from_clock,
            };
            self.next_audio = Some(dts + 1024);
            let dts = media::Timestamp::new(dts, config.sample_rate);
            out.push(TsEvent::Frame(Frame {
                track: Track::Audio,
                pts: dts,
                dts,
                keyframe: true,
                data: body.slice(pos + header_len..pos + frame_len),
            }));
            pos += frame_len;
            index += 1;
        }
    }
}

/// Parses a PES header: (PTS, DTS, payload).
fn parse_pes_header(d: &Bytes) -> Option<(Option<u64>, Option<u64>, Bytes)> {
    if d.len() < 9 || d[..3] != [0, 0, 1] {
        return None;
    }
    let flags = d[7];
    let header_len = usize::from(d[8]);
    let body_start = 9 + header_len;
    if d.len() < body_start {
        return None;
    }
    let ts = |at: usize| -> Option<u64> {
        let b = d.get(at..at + 5)?;
        Some(
            u64::from(b[0] >> 1 & 0x07) << 30
                | u64::from(b[1]) << 22
                | u64::from(b[2] >> 1) << 15
                | u64::from(b[3]) << 7
                | u64::from(b[4] >> 1),
        )
    };
    let pts = if flags & 0x80 != 0 { ts(9) } else { None };
    let dts = if flags & 0xc0 == 0xc0 { ts(14) } else { None };
    Some((pts, dts, d.slice(body_start..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real MPEG-TS file written by `ffmpeg -f lavfi -i testsrc2=size=320x180:rate=30 -f lavfi
    /// -i sine -t 1 -c:v libx264 -profile:v high -g 15 -bf 2 -c:a aac -f mpegts`.
    const TS: &[u8] = include_bytes!("../testdata/ffmpeg_180p_h264_aac.ts");

    fn demux_all(chunk: usize) -> (Vec<TsEvent>, TsStats) {
        let mut d = TsDemuxer::default();
        let mut out = Vec::new();
        for c in TS.chunks(chunk) {
            out.extend(d.push(c).unwrap());
        }
        out.extend(d.flush().unwrap());
        (out, d.stats)
    }

    #[test]
    fn demuxes_real_ffmpeg_ts_at_any_read_size() {
        let (reference, stats) = demux_all(188 * 7);
        assert_eq!(stats.continuity_errors, 0);
        let video: Vec<&Frame> = reference
            .iter()
            .filter_map(|e| match e {
                TsEvent::Frame(f) if f.track == Track::Video => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(video.len(), 30);
        assert_eq!(video.iter().filter(|f| f.keyframe).count(), 2);
        assert!(video.iter().any(|f| f.pts != f.dts), "B-frames");
        assert!(video.windows(2).all(|w| w[1].dts > w[0].dts));
        let audio: Vec<&Frame> = reference
            .iter()
            .filter_map(|e| match e {
                TsEvent::Frame(f) if f.track == Track::Audio => Some(f),
                _ => None,
            })
            .collect();
        assert!(audio.len() >= 40, "{}", audio.len());
        assert!(audio
            .windows(2)
            .all(|w| w[1].dts.ticks() - w[0].dts.ticks() == 1024));
        let configs: Vec<_> = reference
            .iter()
            .filter_map(|e| match e {
                TsEvent::Config(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(configs.len(), 2);
        match configs[0] {
            CodecConfig::Avc(c) => assert_eq!((c.info.width, c.info.height), (320, 180)),
            CodecConfig::Aac(_) => panic!("video config first"),
        }
        // Both configs come before the first frame (audio PES start after the first keyframe in
        // this file; the demuxer holds frames until the AAC config is known).
        let first_frame = reference
            .iter()
            .position(|e| matches!(e, TsEvent::Frame(_)))
            .unwrap();
        let configs_before = reference[..first_frame]
            .iter()
            .filter(|e| matches!(e, TsEvent::Config(_)))
            .count();
        assert_eq!(configs_before, 2);
        // Reads of any size give the same result (mpeg2ts-reader's pitfall).
        for chunk in [1, 7, 100, 187, 189, 1000, 65536] {
            assert_eq!(demux_all(chunk).0, reference, "read size {chunk}");
        }
    }

    #[test]
    fn lost_and_garbage_packets_are_tolerated() {
        let mut d = TsDemuxer::default();
        let mut out = Vec::new();
        // Drop every 50th packet and splice garbage in every 97th position.
        for (i, p) in TS.chunks(188).enumerate() {
            if i % 50 == 49 {
                continue;
            }
            if i % 97 == 0 {
                out.extend(d.push(&[0x47, 1, 2, 3, 0x47, 9]).unwrap());
            }
            out.extend(d.push(p).unwrap());
        }
        assert!(d.stats.continuity_errors > 0);
        // Video after a damaged frame waits for the next keyframe.
        assert!(d.stats.skipped_frames > 0, "{:?}", d.stats);
        let frames = out
            .iter()
            .filter(|e| matches!(e, TsEvent::Frame(_)))
            .count();
        assert!(frames > 40, "{frames}");
    }

    #[test]
    fn pmt_without_media_we_serve_is_an_error() {
        // PAT → PMT pid 0x1000; PMT lists only an MPEG-2 video stream (type 0x02).
        let mut d = TsDemuxer::default();
        let mut pat = vec![
            0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xb0, 0x0d, 0, 1, 0xc1, 0, 0, 0, 1, 0xf0, 0x00,
        ];
        pat.extend([0u8; 4]);
        pat.resize(188, 0xff);
        let mut pmt = vec![
            0x47, 0x50, 0x00, 0x10, 0x00, 0x02, 0xb0, 0x12, 0, 1, 0xc1, 0, 0, 0xe1, 0x00, 0xf0,
            0x00, 0x02, 0xe1, 0x01, 0xf0, 0x00,
        ];
        pmt.extend([0u8; 4]);
        pmt.resize(188, 0xff);
        d.push(&pat).unwrap();
        assert_eq!(d.push(&pmt), Err(TsError::NoMedia(vec![0x02])));
    }

    #[test]
    fn garbage_is_not_ts() {
        let mut d = TsDemuxer::default();
        let junk = vec![0x11u8; MAX_BYTES_BEFORE_PMT + 1];
        assert!(matches!(d.push(&junk), Err(TsError::NotTs(_))));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut d = TsDemuxer::default();
        // Start from a real stream so the PIDs are known, then feed random packets.
        let _ = d.push(&TS[..188 * 20]);
        for _ in 0..5000 {
            let mut p = [0u8; 188];
            for b in p.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            p[0] = 0x47;
            p[1] = (p[1] & 0xe0) | 0x01; // PID 0x100/0x101 region, where the real PIDs live
            let _ = d.push(&p);
        }
    }
}
