//! CMAF / fragmented MP4 writers (ISO/IEC 14496-12, ISO/IEC 23000-19): functions from typed
//! config to bytes. The init segment carries `avc1`/`avcC` video and `mp4a`/`esds` audio; each
//! CMAF chunk is one `moof` + `mdat` with a `traf` per track that has samples. A part is a run
//! of chunks, a segment the run of its parts.

use bytes::{BufMut, Bytes, BytesMut};
use media::{AacConfig, AvcConfig};

pub const VIDEO_TRACK_ID: u32 = 1;
pub const AUDIO_TRACK_ID: u32 = 2;

/// Writes a box: reserves the size, runs `body`, patches the size.
fn write_box(buf: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_slice(kind);
    body(buf);
    let size = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn write_full_box(
    buf: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    write_box(buf, kind, |b| {
        b.put_u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
        body(b);
    });
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The tracks of one init segment: video, audio, or both (an audio-only stream: radio,
/// podcasts). The packager never builds one with neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    pub video: Option<AvcConfig>,
    pub audio: Option<AacConfig>,
}

impl InitConfig {
    /// The RFC 6381 CODECS value of these tracks.
    pub fn codecs(&self) -> String {
        let v = self.video.as_ref().map(AvcConfig::codec_string);
        let a = self.audio.as_ref().map(AacConfig::codec_string);
        v.into_iter().chain(a).collect::<Vec<_>>().join(",")
    }
}

/// Writes `ftyp` + `moov` for the given tracks.
pub fn init_segment(config: &InitConfig) -> Bytes {
    let mut b = BytesMut::with_capacity(1024);
    write_box(&mut b, b"ftyp", |b| {
        b.put_slice(b"iso6");
        b.put_u32(0);
        for brand in [b"iso6", b"cmfc", b"mp41", b"dash"] {
            b.put_slice(brand);
        }
    });
    write_box(&mut b, b"moov", |b| {
        write_full_box(b, b"mvhd", 0, 0, |b| {
            b.put_u32(0); // creation_time
            b.put_u32(0); // modification_time
            b.put_u32(1000); // timescale
            b.put_u32(0); // duration
            b.put_u32(0x0001_0000); // rate
            b.put_u16(0x0100); // volume
            b.put_bytes(0, 10);
            MATRIX.iter().for_each(|m| b.put_u32(*m));
            b.put_bytes(0, 24);
            b.put_u32(if config.audio.is_some() { 3 } else { 2 }); // next_track_ID
        });
        if let Some(video) = &config.video {
            video_trak(b, video);
        }
        if let Some(audio) = &config.audio {
            audio_trak(b, audio);
        }
        write_box(b, b"mvex", |b| {
            let trex = |b: &mut BytesMut, id| {
                write_full_box(b, b"trex", 0, 0, |b| {
                    b.put_u32(id);
                    b.put_u32(1); // default_sample_description_index
                    b.put_u32(0);
                    b.put_u32(0);
                    b.put_u32(0);
                });
            };
            if config.video.is_some() {
                trex(b, VIDEO_TRACK_ID);
            }
            if config.audio.is_some() {
                trex(b, AUDIO_TRACK_ID);
            }
        });
    });
    b.freeze()
}

fn tkhd(b: &mut BytesMut, id: u32, audio: bool, width: u32, height: u32) {
    write_full_box(b, b"tkhd", 0, 3, |b| {
        b.put_u32(0);
        b.put_u32(0);
        b.put_u32(id);
        b.put_u32(0);
        b.put_u32(0); // duration
        b.put_bytes(0, 8);
        b.put_u16(0); // layer
        b.put_u16(if audio { 1 } else { 0 }); // alternate_group
        b.put_u16(if audio { 0x0100 } else { 0 });
        b.put_u16(0);
        MATRIX.iter().for_each(|m| b.put_u32(*m));
        b.put_u32(width << 16);
        b.put_u32(height << 16);
    });
}

fn mdhd_hdlr(b: &mut BytesMut, timescale: u32, handler: &[u8; 4], name: &str) {
    write_full_box(b, b"mdhd", 0, 0, |b| {
        b.put_u32(0);
        b.put_u32(0);
        b.put_u32(timescale);
        b.put_u32(0);
        b.put_u16(0x55c4); // "und"
        b.put_u16(0);
    });
    write_full_box(b, b"hdlr", 0, 0, |b| {
        b.put_u32(0);
        b.put_slice(handler);
        b.put_bytes(0, 12);
        b.put_slice(name.as_bytes());
        b.put_u8(0);
    });
}

fn dinf_and_empty_tables(b: &mut BytesMut, stsd: impl FnOnce(&mut BytesMut)) {
    write_box(b, b"dinf", |b| {
        write_full_box(b, b"dref", 0, 0, |b| {
            b.put_u32(1);
            write_full_box(b, b"url ", 0, 1, |_| {});
        });
    });
    write_box(b, b"stbl", |b| {
        write_full_box(b, b"stsd", 0, 0, |b| {
            b.put_u32(1);
            stsd(b);
        });
        write_full_box(b, b"stts", 0, 0, |b| b.put_u32(0));
        write_full_box(b, b"stsc", 0, 0, |b| b.put_u32(0));
        write_full_box(b, b"stsz", 0, 0, |b| {
            b.put_u32(0);
            b.put_u32(0);
        });
        write_full_box(b, b"stco", 0, 0, |b| b.put_u32(0));
    });
}

fn video_trak(b: &mut BytesMut, avc: &AvcConfig) {
    let (w, h) = (avc.info.width, avc.info.height);
    write_box(b, b"trak", |b| {
        tkhd(b, VIDEO_TRACK_ID, false, w, h);
        write_box(b, b"mdia", |b| {
            mdhd_hdlr(b, media::VIDEO_TIMESCALE, b"vide", "Ferrocast video");
            write_box(b, b"minf", |b| {
                write_full_box(b, b"vmhd", 0, 1, |b| b.put_bytes(0, 8));
                dinf_and_empty_tables(b, |b| {
                    write_box(b, b"avc1", |b| {
                        b.put_bytes(0, 6);
                        b.put_u16(1); // data_reference_index
                        b.put_bytes(0, 16);
                        b.put_u16(w as u16);
                        b.put_u16(h as u16);
                        b.put_u32(0x0048_0000);
                        b.put_u32(0x0048_0000);
                        b.put_u32(0);
                        b.put_u16(1); // frame_count
                        b.put_bytes(0, 32); // compressorname
                        b.put_u16(0x0018);
                        b.put_i16(-1);
                        write_box(b, b"avcC", |b| b.put_slice(&avc.record));
                    });
                });
            });
        });
    });
}

/// MPEG-4 descriptor length (ISO/IEC 14496-1 §8.3.3), always in the 4-byte form.
fn put_descriptor(b: &mut BytesMut, tag: u8, body: &[u8]) {
    b.put_u8(tag);
    let len = body.len() as u32;
    b.put_u8(0x80 | ((len >> 21) & 0x7f) as u8);
    b.put_u8(0x80 | ((len >> 14) & 0x7f) as u8);
    b.put_u8(0x80 | ((len >> 7) & 0x7f) as u8);
    b.put_u8((len & 0x7f) as u8);
    b.put_slice(body);
}

fn audio_trak(b: &mut BytesMut, aac: &AacConfig) {
    write_box(b, b"trak", |b| {
        tkhd(b, AUDIO_TRACK_ID, true, 0, 0);
        write_box(b, b"mdia", |b| {
            mdhd_hdlr(b, aac.sample_rate, b"soun", "Ferrocast audio");
            write_box(b, b"minf", |b| {
                write_full_box(b, b"smhd", 0, 0, |b| b.put_u32(0));
                dinf_and_empty_tables(b, |b| {
                    write_box(b, b"mp4a", |b| {
                        b.put_bytes(0, 6);
                        b.put_u16(1);
                        b.put_bytes(0, 8);
                        b.put_u16(u16::from(aac.channels));
                        b.put_u16(16);
                        b.put_u32(0);
                        b.put_u32(aac.sample_rate.min(0xffff) << 16);
                        write_full_box(b, b"esds", 0, 0, |b| {
                            let mut dsi = BytesMut::new();
                            put_descriptor(&mut dsi, 0x05, &aac.asc);
                            let mut dcd = BytesMut::new();
                            dcd.put_u8(0x40); // Audio ISO/IEC 14496-3
                            dcd.put_u8(0x15); // AudioStream, upstream 0, reserved 1
                            dcd.put_bytes(0, 3); // bufferSizeDB
                            dcd.put_u32(0); // maxBitrate
                            dcd.put_u32(0); // avgBitrate
                            dcd.put_slice(&dsi);
                            let mut es = BytesMut::new();
                            es.put_u16(AUDIO_TRACK_ID as u16);
                            es.put_u8(0);
                            put_descriptor(&mut es, 0x04, &dcd);
                            put_descriptor(&mut es, 0x06, &[0x02]);
                            put_descriptor(b, 0x03, &es);
                        });
                    });
                });
            });
        });
    });
}

/// One sample of a chunk.
#[derive(Debug, Clone)]
pub struct Sample {
    pub duration: u32,
    /// PTS − DTS, in the track timescale.
    pub composition_offset: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// The samples of one track in a chunk.
#[derive(Debug, Clone)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub samples: &'a [Sample],
}

const SAMPLE_SYNC: u32 = 0x0200_0000; // sample_depends_on = 2
const SAMPLE_NON_SYNC: u32 = 0x0101_0000; // sample_depends_on = 1, sample_is_non_sync_sample

/// Writes one CMAF chunk (`moof` + `mdat`). Runs with no samples are skipped.
pub fn chunk(sequence: u32, runs: &[TrackRun<'_>]) -> Bytes {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let payload: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    // moof size is fixed by the sample counts, so compute it first for the data offsets.
    let moof_size: usize = 8
        + 16
        + runs
            .iter()
            .map(|r| 8 + 16 + 20 + 20 + 16 * r.samples.len())
            .sum::<usize>();
    let mut b = BytesMut::with_capacity(moof_size + 8 + payload);
    let mut data_offset = moof_size + 8;
    write_box(&mut b, b"moof", |b| {
        write_full_box(b, b"mfhd", 0, 0, |b| b.put_u32(sequence));
        for run in &runs {
            write_box(b, b"traf", |b| {
                write_full_box(b, b"tfhd", 0, 0x02_0000, |b| b.put_u32(run.track_id));
                write_full_box(b, b"tfdt", 1, 0, |b| b.put_u64(run.base_decode_time));
                // data-offset, duration, size, flags, composition offset (signed: version 1)
                write_full_box(
                    b,
                    b"trun",
                    1,
                    0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800,
                    |b| {
                        b.put_u32(run.samples.len() as u32);
                        b.put_i32(data_offset as i32);
                        for s in run.samples {
                            b.put_u32(s.duration);
                            b.put_u32(s.data.len() as u32);
                            b.put_u32(if s.keyframe {
                                SAMPLE_SYNC
                            } else {
                                SAMPLE_NON_SYNC
                            });
                            b.put_i32(s.composition_offset);
                        }
                    },
                );
            });
            data_offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
        }
    });
    debug_assert_eq!(b.len(), moof_size);
    b.put_u32((8 + payload) as u32);
    b.put_slice(b"mdat");
    for s in runs.iter().flat_map(|r| r.samples.iter()) {
        b.put_slice(&s.data);
    }
    b.freeze()
}

/// Walks top-level boxes, returning (type, offset, size). Used by tests and diagnostics.
pub fn top_level_boxes(data: &[u8]) -> Option<Vec<([u8; 4], usize, usize)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let header = data.get(pos..pos + 8)?;
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if size < 8 || pos + size > data.len() {
            return None;
        }
        out.push(([header[4], header[5], header[6], header[7]], pos, size));
        pos += size;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc() -> AvcConfig {
        AvcConfig::parse(Bytes::from_static(include_bytes!(
            "../../media/testdata/avcc_720p_high.bin"
        )))
        .unwrap()
    }

    #[test]
    fn init_segment_layout() {
        let aac = AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap();
        let init = init_segment(&InitConfig {
            video: Some(avc()),
            audio: Some(aac),
        });
        let boxes = top_level_boxes(&init).unwrap();
        let kinds: Vec<_> = boxes.iter().map(|b| &b.0).collect();
        assert_eq!(kinds, vec![b"ftyp", b"moov"]);
        let s = &init[..];
        for needle in [
            &b"avcC"[..],
            b"esds",
            b"mp4a",
            b"trex",
            b"mvex",
            b"smhd",
            b"vmhd",
        ] {
            assert!(s.windows(4).any(|w| w == needle), "missing {needle:?}");
        }
    }

    #[test]
    fn chunk_offsets_point_into_mdat() {
        let v = [
            Sample {
                duration: 3000,
                composition_offset: 6000,
                keyframe: true,
                data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
            },
            Sample {
                duration: 3000,
                composition_offset: -3000,
                keyframe: false,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
            },
        ];
        let a = [Sample {
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10, 0x04]),
        }];
        let c = chunk(
            7,
            &[
                TrackRun {
                    track_id: VIDEO_TRACK_ID,
                    base_decode_time: 90_000,
                    samples: &v,
                },
                TrackRun {
                    track_id: AUDIO_TRACK_ID,
                    base_decode_time: 48_000,
                    samples: &a,
                },
            ],
        );
        let boxes = top_level_boxes(&c).unwrap();
        assert_eq!(boxes.len(), 2);
        let (moof, mdat) = (boxes[0], boxes[1]);
        assert_eq!(&moof.0, b"moof");
        assert_eq!(&mdat.0, b"mdat");
        assert_eq!(mdat.2, 8 + 6 + 5 + 3);
        // The first trun's data offset (relative to moof start) lands on the first sample.
        let trun = c.windows(4).position(|w| w == b"trun").unwrap();
        let off = i32::from_be_bytes(c[trun + 12..trun + 16].try_into().unwrap()) as usize;
        assert_eq!(&c[off..off + 6], &[0, 0, 0, 2, 0x65, 0x88]);
        let trun2 = trun + 4 + c[trun + 4..].windows(4).position(|w| w == b"trun").unwrap();
        let off2 = i32::from_be_bytes(c[trun2 + 12..trun2 + 16].try_into().unwrap()) as usize;
        assert_eq!(&c[off2..off2 + 3], &[0x21, 0x10, 0x04]);
    }

    fn fnv1a(data: &[u8]) -> u64 {
        data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Golden bytes: the init segment for a fixed config must not change by accident (players
    /// and caches see it). Its structure is checked by ffprobe in the integration tests; if you
    /// change the writer on purpose, update the digest and say why in the commit.
    #[test]
    fn init_segment_golden_digest() {
        let aac = AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap();
        let init = init_segment(&InitConfig {
            video: Some(avc()),
            audio: Some(aac),
        });
        assert_eq!(
            (init.len(), format!("{:016x}", fnv1a(&init)).as_str()),
            GOLDEN_INIT,
            "init segment bytes changed"
        );
    }

    const GOLDEN_INIT: (usize, &str) = (1130, "7d575e27d6e63e40");
}
