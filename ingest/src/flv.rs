//! FLV audio/video tag bodies (as carried in RTMP messages) → [`media::Frame`]s.
//!
//! Buffering rule: none. Each tag yields zero or one event immediately; the demuxer only keeps
//! the codec configs and the timestamp unwrappers.

use bytes::Bytes;
use media::{AacConfig, AvcConfig, CodecConfig, Frame, MediaError, Track, Unwrapper};

/// Output of the demuxer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvEvent {
    Config(CodecConfig),
    Frame(Frame),
}

/// Why a tag was refused. Every variant ends the publishing connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("{track:?} tag at {timestamp_ms} ms: truncated ({len} bytes)")]
    Truncated {
        track: Track,
        timestamp_ms: u32,
        len: usize,
    },
    #[error("video codec id {0} is not supported (H.264 only)")]
    UnsupportedVideoCodec(u8),
    #[error("audio format {0} is not supported (AAC only)")]
    UnsupportedAudioCodec(u8),
    #[error("malformed AVC sequence header: {0}")]
    BadAvcConfig(MediaError),
    #[error("malformed AAC AudioSpecificConfig: {0}")]
    BadAacConfig(MediaError),
    #[error("{0:?} data before its sequence header")]
    DataBeforeConfig(Track),
    #[error("video sample at {timestamp_ms} ms: NAL unit length {nal_len} overruns the {len}-byte sample")]
    BadNalLength {
        timestamp_ms: u32,
        nal_len: usize,
        len: usize,
    },
}

/// Demuxes one publisher's FLV tags. Video timestamps come out in 90 kHz, audio in the sample
/// rate; both are unwrapped from RTMP's 32-bit milliseconds.
#[derive(Debug)]
pub struct FlvDemuxer {
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    video_clock: Unwrapper,
    audio_clock: Unwrapper,
    /// Next expected audio DTS in samples; AAC frames are exactly 1024 samples, but RTMP rounds
    /// their timestamps to milliseconds, so we count samples and only resync on a real gap.
    next_audio_dts: Option<i64>,
}

impl Default for FlvDemuxer {
    fn default() -> Self {
        FlvDemuxer {
            video: None,
            audio: None,
            video_clock: Unwrapper::new(32),
            audio_clock: Unwrapper::new(32),
            next_audio_dts: None,
        }
    }
}

impl FlvDemuxer {
    pub fn video_config(&self) -> Option<&AvcConfig> {
        self.video.as_ref()
    }

    pub fn audio_config(&self) -> Option<&AacConfig> {
        self.audio.as_ref()
    }

    /// Handles the body of an FLV video tag (RTMP message type 9).
    pub fn video(&mut self, timestamp_ms: u32, body: &Bytes) -> Result<Option<FlvEvent>, FlvError> {
        let truncated = || FlvError::Truncated {
            track: Track::Video,
            timestamp_ms,
            len: body.len(),
        };
        let first = *body.first().ok_or_else(truncated)?;
        let frame_type = first >> 4;
        let codec = first & 0x0f;
        if first & 0x80 != 0 || codec != 7 {
            // Enhanced RTMP (HEVC/AV1 FourCC) or a legacy codec.
            return Err(FlvError::UnsupportedVideoCodec(codec));
        }
        if frame_type == 5 {
            return Ok(None); // video info/command frame
        }
        if body.len() < 5 {
            return Err(truncated());
        }
        let cts = i32::from_be_bytes([
            if body[2] & 0x80 != 0 { 0xff } else { 0 },
            body[2],
            body[3],
            body[4],
        ]);
        let payload = body.slice(5..);
        match body[1] {
            0 => {
                let config = AvcConfig::parse(payload).map_err(FlvError::BadAvcConfig)?;
                if self.video.as_ref() == Some(&config) {
                    return Ok(None);
                }
                self.video = Some(config.clone());
                Ok(Some(FlvEvent::Config(CodecConfig::Avc(config))))
            }
            1 => {
                let config = self
                    .video
                    .as_ref()
                    .ok_or(FlvError::DataBeforeConfig(Track::Video))?;
                if payload.is_empty() {
                    return Ok(None);
                }
                check_nal_lengths(&payload, config.nal_length_size, timestamp_ms)?;
                let dts = self.video_clock.unwrap(u64::from(timestamp_ms)) * 90;
                Ok(Some(FlvEvent::Frame(Frame {
                    track: Track::Video,
                    dts: media::video_ts(dts),
                    pts: media::video_ts(dts + i64::from(cts) * 90),
                    keyframe: frame_type == 1,
                    data: payload,
                })))
            }
            _ => Ok(None), // end of sequence
        }
    }

    /// Handles the body of an FLV audio tag (RTMP message type 8).
    pub fn audio(&mut self, timestamp_ms: u32, body: &Bytes) -> Result<Option<FlvEvent>, FlvError> {
        let truncated = || FlvError::Truncated {
            track: Track::Audio,
            timestamp_ms,
            len: body.len(),
        };
        let first = *body.first().ok_or_else(truncated)?;
        let format = first >> 4;
        if format != 10 {
            return Err(FlvError::UnsupportedAudioCodec(format));
        }
        let packet_type = *body.get(1).ok_or_else(truncated)?;
        let payload = body.slice(2..);
        if packet_type == 0 {
            let config = AacConfig::parse(payload).map_err(FlvError::BadAacConfig)?;
            if self.audio.as_ref() == Some(&config) {
                return Ok(None);
            }
            self.audio = Some(config.clone());
            self.next_audio_dts = None;
            return Ok(Some(FlvEvent::Config(CodecConfig::Aac(config))));
        }
        let config = self
            .audio
            .as_ref()
            .ok_or(FlvError::DataBeforeConfig(Track::Audio))?;
        if payload.is_empty() {
            return Ok(None);
        }
        let rate = i64::from(config.sample_rate);
        let frame = i64::from(config.samples_per_frame());
        let ms = self.audio_clock.unwrap(u64::from(timestamp_ms));
        let from_clock = ms * rate / 1000;
        let dts = match self.next_audio_dts {
            Some(next) if (from_clock - next).abs() < frame => next,
            _ => from_clock,
        };
        self.next_audio_dts = Some(dts + frame);
        let dts = media::Timestamp::new(dts, config.sample_rate);
        Ok(Some(FlvEvent::Frame(Frame {
            track: Track::Audio,
            pts: dts,
            dts,
            keyframe: true,
            data: payload,
        })))
    }
}

fn check_nal_lengths(sample: &[u8], size: u8, timestamp_ms: u32) -> Result<(), FlvError> {
    let size = usize::from(size);
    let mut pos = 0;
    while pos < sample.len() {
        let Some(prefix) = sample.get(pos..pos + size) else {
            return Err(FlvError::BadNalLength {
                timestamp_ms,
                nal_len: usize::MAX,
                len: sample.len(),
            });
        };
        let nal_len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += size;
        if nal_len > sample.len() - pos {
            return Err(FlvError::BadNalLength {
                timestamp_ms,
                nal_len,
                len: sample.len(),
            });
        }
        pos += nal_len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real FLV file written by `ffmpeg -f lavfi -i testsrc2=size=320x180:rate=30 -f lavfi -i
    /// sine -t 1 -c:v libx264 -profile:v high -g 15 -bf 2 -c:a aac out.flv`.
    const FLV: &[u8] = include_bytes!("../testdata/ffmpeg_180p_h264_aac.flv");

    /// (type, timestamp ms, body) of each tag.
    pub(crate) fn tags(flv: &'static [u8]) -> Vec<(u8, u32, Bytes)> {
        let mut out = Vec::new();
        let mut pos = 13;
        while pos + 11 <= flv.len() {
            let kind = flv[pos];
            let size = usize::from(flv[pos + 1]) << 16
                | usize::from(flv[pos + 2]) << 8
                | usize::from(flv[pos + 3]);
            let ts = u32::from(flv[pos + 4]) << 16
                | u32::from(flv[pos + 5]) << 8
                | u32::from(flv[pos + 6])
                | u32::from(flv[pos + 7]) << 24;
            out.push((
                kind,
                ts,
                Bytes::from_static(&flv[pos + 11..pos + 11 + size]),
            ));
            pos += 11 + size + 4;
        }
        out
    }

    #[test]
    fn demuxes_real_ffmpeg_flv() {
        let mut d = FlvDemuxer::default();
        let (mut video, mut audio, mut keys, mut configs) = (0, 0, 0, 0);
        let mut reordered = false;
        let mut last_audio = None;
        for (kind, ts, body) in tags(FLV) {
            let ev = match kind {
                8 => d.audio(ts, &body).unwrap(),
                9 => d.video(ts, &body).unwrap(),
                _ => None,
            };
            match ev {
                Some(FlvEvent::Config(_)) => configs += 1,
                Some(FlvEvent::Frame(f)) if f.track == Track::Video => {
                    video += 1;
                    keys += usize::from(f.keyframe);
                    reordered |= f.pts != f.dts;
                    assert!(f.pts >= f.dts);
                }
                Some(FlvEvent::Frame(f)) => {
                    if let Some(prev) = last_audio {
                        assert_eq!(
                            f.dts.ticks() - prev,
                            1024,
                            "audio dts steps by one AAC frame"
                        );
                    }
                    last_audio = Some(f.dts.ticks());
                    audio += 1;
                }
                None => {}
            }
        }
        assert_eq!(configs, 2);
        assert_eq!(video, 30);
        assert_eq!(keys, 2);
        assert!(reordered, "B-frames give composition offsets");
        assert!(audio >= 46);
        let v = d.video_config().unwrap();
        assert_eq!((v.info.width, v.info.height), (320, 180));
        assert_eq!(d.audio_config().unwrap().sample_rate, 48000);
    }

    #[test]
    fn hostile_tags_are_errors() {
        let mut d = FlvDemuxer::default();
        let nalu = Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        assert_eq!(
            d.video(0, &nalu),
            Err(FlvError::DataBeforeConfig(Track::Video))
        );
        assert!(matches!(
            d.video(
                0,
                &Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f])
            ),
            Err(FlvError::BadAvcConfig(_))
        ));
        assert!(matches!(
            d.video(0, &Bytes::from_static(&[0x17])),
            Err(FlvError::Truncated { .. })
        ));
        assert_eq!(
            d.video(0, &Bytes::from_static(&[0x12, 0])),
            Err(FlvError::UnsupportedVideoCodec(2))
        );
        assert!(d.audio(0, &Bytes::from_static(&[0xaf, 1, 1, 2])).is_err());
        assert!(matches!(
            d.audio(0, &Bytes::from_static(&[0xaf, 0, 0x11])),
            Err(FlvError::BadAacConfig(_))
        ));
        assert_eq!(
            d.audio(0, &Bytes::from_static(&[0x2f, 1])),
            Err(FlvError::UnsupportedAudioCodec(2))
        );
        // A NAL length that overruns the sample.
        let (_, _, header) = tags(FLV).into_iter().find(|(k, _, _)| *k == 9).unwrap();
        d.video(0, &header).unwrap();
        let overrun = Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 9, 0x41]);
        assert!(matches!(
            d.video(0, &overrun),
            Err(FlvError::BadNalLength { .. })
        ));
    }

    #[test]
    fn timestamps_unwrap_across_32_bits() {
        let mut d = FlvDemuxer::default();
        let (_, _, header) = tags(FLV).into_iter().find(|(k, _, _)| *k == 9).unwrap();
        d.video(u32::MAX - 40, &header).unwrap();
        let frame = Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]);
        let a = match d.video(u32::MAX - 10, &frame).unwrap() {
            Some(FlvEvent::Frame(f)) => f.dts.ticks(),
            other => panic!("{other:?}"),
        };
        let b = match d.video(23, &frame).unwrap() {
            Some(FlvEvent::Frame(f)) => f.dts.ticks(),
            other => panic!("{other:?}"),
        };
        assert_eq!(b - a, 34 * 90);
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    /// xorshift64*: deterministic pseudo-random bytes for the no-panic sweep.
    fn rng(seed: u64) -> impl FnMut() -> u8 {
        let mut x = seed | 1;
        move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        }
    }

    /// Random tag bodies (with valid-looking first bytes half the time) never panic the
    /// demuxer, whatever state it is in.
    #[test]
    fn random_tags_never_panic() {
        let mut next = rng(0x5eed);
        let mut d = FlvDemuxer::default();
        let header = Bytes::from_static(&[
            0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 1,
            0x68,
        ]);
        let _ = d.video(0, &header);
        for i in 0..20_000u32 {
            let len = usize::from(next()) % 64;
            let mut body: Vec<u8> = (0..len).map(|_| next()).collect();
            if i.is_multiple_of(2) && !body.is_empty() {
                body[0] = [0x17, 0x27, 0xaf][usize::from(next()) % 3];
            }
            let body = Bytes::from(body);
            let ts = u32::from(next()) << 24 | i;
            let _ = if next().is_multiple_of(2) {
                d.video(ts, &body)
            } else {
                d.audio(ts, &body)
            };
        }
    }

    #[test]
    fn random_codec_configs_never_panic() {
        let mut next = rng(42);
        for _ in 0..20_000 {
            let len = usize::from(next()) % 48;
            let mut b: Vec<u8> = (0..len).map(|_| next()).collect();
            if len > 8 {
                b[0] = 1; // avcC version, so parsing goes deeper
                b[6] = 0;
            }
            let _ = media::AvcConfig::parse(Bytes::from(b.clone()));
            let _ = media::AacConfig::parse(Bytes::from(b));
        }
    }
}
