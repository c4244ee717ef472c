//! H.264 decoder configuration (`avcC`, ISO/IEC 14496-15 §5.3.3) and the SPS fields we need.

use crate::bits::{rbsp, BitReader};
use crate::MediaError;
use bytes::Bytes;

/// A parsed `AVCDecoderConfigurationRecord`. `record` keeps the publisher's exact bytes, which
/// go unchanged into the fMP4 `avcC` box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub record: Bytes,
    pub profile_idc: u8,
    pub profile_compat: u8,
    pub level_idc: u8,
    /// Bytes in each NAL unit length prefix of a sample (1, 2 or 4).
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub info: SpsInfo,
}

/// What the first SPS says about the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpsInfo {
    pub width: u32,
    pub height: u32,
    /// Frame rate from the VUI timing info, when present, as (numerator, denominator).
    pub frame_rate: Option<(u32, u32)>,
}

impl AvcConfig {
    /// Parses an `AVCDecoderConfigurationRecord`.
    pub fn parse(record: Bytes) -> Result<AvcConfig, MediaError> {
        const WHAT: &str = "avcC";
        let d = &record[..];
        if d.len() < 7 {
            return Err(MediaError::Truncated {
                what: WHAT,
                offset: d.len(),
            });
        }
        if d[0] != 1 {
            return Err(MediaError::Invalid {
                what: WHAT,
                value: u64::from(d[0]),
                offset: 0,
            });
        }
        let nal_length_size = (d[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(MediaError::Invalid {
                what: "avcC lengthSizeMinusOne",
                value: 2,
                offset: 4,
            });
        }
        let mut pos = 5;
        let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, MediaError> {
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let len_bytes = d.get(*pos..*pos + 2).ok_or(MediaError::Truncated {
                    what: WHAT,
                    offset: *pos,
                })?;
                let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                *pos += 2;
                if len == 0 || d.len() < *pos + len {
                    return Err(MediaError::Truncated {
                        what: WHAT,
                        offset: *pos,
                    });
                }
                out.push(record.slice(*pos..*pos + len));
                *pos += len;
            }
            Ok(out)
        };
        let num_sps = usize::from(d[5] & 0x1f);
        pos += 1;
        let sps = read_sets(num_sps, &mut pos)?;
        let num_pps = usize::from(*d.get(pos).ok_or(MediaError::Truncated {
            what: WHAT,
            offset: pos,
        })?);
        pos += 1;
        let pps = read_sets(num_pps, &mut pos)?;
        let first = sps
            .first()
            .ok_or(MediaError::Unsupported("avcC without an SPS"))?;
        if pps.is_empty() {
            return Err(MediaError::Unsupported("avcC without a PPS"));
        }
        let info = parse_sps(first)?;
        Ok(AvcConfig {
            profile_idc: d[1],
            profile_compat: d[2],
            level_idc: d[3],
            nal_length_size,
            sps,
            pps,
            info,
            record,
        })
    }

    /// Builds a record from parameter sets (as found in an Annex B stream).
    pub fn from_parameter_sets(sps: Bytes, pps: Bytes) -> Result<AvcConfig, MediaError> {
        if sps.len() < 4 || sps.len() > 0xffff || pps.is_empty() || pps.len() > 0xffff {
            return Err(MediaError::Unsupported("parameter set size"));
        }
        let mut r = Vec::with_capacity(11 + sps.len() + pps.len());
        r.extend_from_slice(&[1, sps[1], sps[2], sps[3], 0xff, 0xe1]);
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(&sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(&pps);
        AvcConfig::parse(Bytes::from(r))
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.profile_compat, self.level_idc
        )
    }
}

/// Parses the fields of a sequence parameter set NAL unit (header byte included) that describe
/// the picture size and timing.
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, MediaError> {
    const WHAT: &str = "SPS";
    if nal.len() < 4 || nal[0] & 0x1f != 7 {
        return Err(MediaError::Invalid {
            what: WHAT,
            value: nal.first().copied().map_or(0, u64::from),
            offset: 0,
        });
    }
    let data = rbsp(&nal[1..]);
    let mut r = BitReader::new(&data, WHAT);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(MediaError::Invalid {
                what: "SPS chroma_format_idc",
                value: u64::from(chroma_format_idc),
                offset: r.offset(),
            });
        }
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            let delta = r.se()?;
                            // delta_scale is -128..=127 (H.264 7.4.2.1.1.1).
                            if !(-128..=127).contains(&delta) {
                                return Err(MediaError::Invalid {
                                    what: "SPS delta_scale",
                                    value: u64::from(delta.unsigned_abs()),
                                    offset: r.offset(),
                                });
                            }
                            next = (last + delta + 256).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return Err(MediaError::Invalid {
                    what: "SPS num_ref_frames_in_pic_order_cnt_cycle",
                    value: u64::from(n),
                    offset: r.offset(),
                });
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let (crop_x, crop_y) = match chroma_format_idc {
        0 | 3 => (1, 2 - frame_mbs_only),
        1 => (2, 2 * (2 - frame_mbs_only)),
        _ => (2, 2 - frame_mbs_only),
    };
    let width = (width_mbs * 16).saturating_sub(crop_x * (cl + cr));
    let height = ((2 - frame_mbs_only) * height_map_units * 16).saturating_sub(crop_y * (ct + cb));
    if width == 0 || height == 0 || width > 16384 || height > 16384 {
        return Err(MediaError::Invalid {
            what: "SPS picture size",
            value: width * 100_000 + height,
            offset: r.offset(),
        });
    }
    let frame_rate = parse_vui_frame_rate(&mut r).ok().flatten();
    Ok(SpsInfo {
        width: width as u32,
        height: height as u32,
        frame_rate,
    })
}

fn parse_vui_frame_rate(r: &mut BitReader<'_>) -> Result<Option<(u32, u32)>, MediaError> {
    if r.bit()? == 0 {
        return Ok(None);
    }
    if r.bit()? == 1 {
        // aspect_ratio_info_present_flag
        if r.bits(8)? == 255 {
            r.bits(32)?;
        }
    }
    if r.bit()? == 1 {
        r.bit()?; // overscan_appropriate_flag
    }
    if r.bit()? == 1 {
        r.bits(4)?; // video_format, video_full_range_flag
        if r.bit()? == 1 {
            r.bits(24)?;
        }
    }
    if r.bit()? == 1 {
        r.ue()?;
        r.ue()?;
    }
    if r.bit()? == 1 {
        let units = r.bits(32)?;
        let scale = r.bits(32)?;
        if units > 0 && scale > 0 && units < u32::MAX / 2 {
            return Ok(Some((scale, 2 * units)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// avcC captured from `ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30 -c:v libx264
    /// -profile:v high` (FLV sequence header payload after the 5-byte video tag header).
    pub(crate) const AVCC_720P_HIGH: &[u8] = include_bytes!("../testdata/avcc_720p_high.bin");

    #[test]
    fn parses_real_x264_record() {
        let c = AvcConfig::parse(Bytes::from_static(AVCC_720P_HIGH)).unwrap();
        assert_eq!(c.profile_idc, 100);
        assert_eq!(c.nal_length_size, 4);
        assert_eq!((c.info.width, c.info.height), (1280, 720));
        assert_eq!(c.codec_string(), "avc1.64001f");
        assert_eq!(c.sps.len(), 1);
        assert_eq!(c.pps.len(), 1);
        let rebuilt = AvcConfig::from_parameter_sets(c.sps[0].clone(), c.pps[0].clone()).unwrap();
        assert_eq!(rebuilt.info, c.info);
    }

    /// An SPS whose scaling list carries a delta_scale of 2^31 - 1 (found by fuzz/avc_aac,
    /// inputs in fuzz/regressions/avc_aac) is refused, not an overflow.
    #[test]
    fn out_of_range_delta_scale_is_an_error() {
        // High profile: seq_parameter_set_id 0, chroma_format_idc 1, bit depths 0, no bypass,
        // scaling matrix present, list 0 present, then se(v) of 2^31 - 1 (ue 2^32 - 3).
        let mut bits = String::from("1 010 1 1 0 1 1");
        bits.push_str(&"0".repeat(31));
        bits.push('1');
        bits.push_str(&"1".repeat(30));
        bits.push('0');
        let bits: Vec<u8> = bits.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let mut nal = vec![0x67, 100, 0, 31];
        for chunk in bits.chunks(8) {
            let mut byte = 0u8;
            for (i, b) in chunk.iter().enumerate() {
                byte |= (b - b'0') << (7 - i);
            }
            nal.push(byte);
        }
        nal.extend([0xff; 4]);
        let e = parse_sps(&nal).unwrap_err().to_string();
        assert!(e.contains("delta_scale"), "{e}");
    }

    #[test]
    fn truncated_and_garbage_records_are_errors() {
        // The last 4 bytes are the optional High-profile extension; every shorter prefix
        // cuts into a required field.
        for n in 0..AVCC_720P_HIGH.len() - 4 {
            let r = AvcConfig::parse(Bytes::copy_from_slice(&AVCC_720P_HIGH[..n]));
            assert!(r.is_err(), "prefix of {n} bytes parsed");
        }
        let mut bad = AVCC_720P_HIGH.to_vec();
        bad[0] = 7;
        assert!(AvcConfig::parse(Bytes::from(bad)).is_err());
        assert!(AvcConfig::parse(Bytes::from_static(&[
            1, 0x64, 0, 0x1f, 0xff, 0xe1, 0xff, 0xff
        ]))
        .is_err());
    }
}
