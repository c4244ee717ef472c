//! H.264 Annex B byte streams — NAL units behind `00 00 01` / `00 00 00 01` start codes, as
//! MPEG-TS carries them and as encoders (libx264, NVENC) write them — turned into the
//! length-prefixed samples of MP4 and FLV, with the parameter sets lifted out for the
//! decoder configuration record.

use bytes::{Bytes, BytesMut};

/// One access unit of an Annex B stream, as an MP4 sample.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessUnit {
    /// The slices and SEI, each behind a 4-byte big-endian length; empty if the access unit
    /// held only parameter sets or delimiters.
    pub sample: Bytes,
    /// An IDR slice is in it.
    pub keyframe: bool,
    /// The last sequence and picture parameter sets in it (they belong in the avcC).
    pub sps: Option<Bytes>,
    pub pps: Option<Bytes>,
}

/// Splits an Annex B byte stream into NAL units (start codes removed; bytes before the first
/// start code are not a NAL unit and are skipped).
pub fn nals(data: &Bytes) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |n| n - 3);
        // Trailing zero bytes belong to the next (4-byte) start code.
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            out.push(data.slice(s..end));
        }
    }
    out
}

/// Converts one Annex B access unit: SPS (7) and PPS (8) are lifted out, access unit
/// delimiters (9) and filler (12) dropped, everything else length-prefixed in order.
pub fn access_unit(data: &Bytes) -> AccessUnit {
    let mut sample = BytesMut::with_capacity(data.len() + 16);
    let mut au = AccessUnit::default();
    for nal in nals(data) {
        let Some(&header) = nal.first() else { continue };
        match header & 0x1f {
            7 => au.sps = Some(nal),
            8 => au.pps = Some(nal),
            9 | 12 => {}
            t => {
                au.keyframe |= t == 5;
                sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                sample.extend_from_slice(&nal);
            }
        }
    }
    au.sample = sample.freeze();
    au
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AvcConfig;

    /// The first access units of a real libx264 Annex B stream:
    /// `ffmpeg -f lavfi -i testsrc2=size=320x180:rate=30 -frames:v 3 -c:v libx264 -preset
    /// veryfast -tune zerolatency -bsf:v h264_mp4toannexb -f h264`: SPS, PPS, SEI, then three
    /// frames of two slices each (zerolatency's sliced threads), the first an IDR.
    const STREAM: &[u8] = include_bytes!("../testdata/x264_180p_3frames.h264");

    #[test]
    fn a_real_x264_stream_splits_into_its_nal_units_and_becomes_samples() {
        let data = Bytes::from_static(STREAM);
        let types: Vec<u8> = nals(&data).iter().map(|n| n[0] & 0x1f).collect();
        assert_eq!(types, [7, 8, 6, 5, 5, 1, 1, 1, 1]);

        let au = access_unit(&data);
        assert!(au.keyframe);
        let config = AvcConfig::from_parameter_sets(au.sps.unwrap(), au.pps.unwrap()).unwrap();
        assert_eq!((config.info.width, config.info.height), (320, 180));
        // The sample is the SEI and the slices, each behind its length, nothing lost.
        let mut rest = &au.sample[..];
        let mut n = 0;
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(matches!(rest[4] & 0x1f, 1 | 5 | 6));
            rest = &rest[4 + len..];
            n += 1;
        }
        assert_eq!(n, types.len() - 2);
    }

    #[test]
    fn three_and_four_byte_start_codes_garbage_and_empty_units() {
        let data = Bytes::from_static(&[
            0xaa, 0xbb, // not a NAL: before the first start code
            0, 0, 0, 1, 0x09, 0xf0, // AUD, 4-byte start code
            0, 0, 1, 0x65, 0x88, 0x00, // IDR, 3-byte start code, a zero before the next code
            0, 0, 0, 1, // an empty unit
            0, 0, 1, 0x41, 0x9a,
        ]);
        let n = nals(&data);
        assert_eq!(
            n.iter().map(|b| b.to_vec()).collect::<Vec<_>>(),
            vec![vec![0x09, 0xf0], vec![0x65, 0x88], vec![0x41, 0x9a]]
        );
        let au = access_unit(&data);
        assert!(au.keyframe);
        assert_eq!(
            &au.sample[..],
            &[0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 2, 0x41, 0x9a]
        );
        assert_eq!(access_unit(&Bytes::new()), AccessUnit::default());
        assert_eq!(access_unit(&Bytes::from_static(&[0, 0, 1])).sample.len(), 0);
    }
}
