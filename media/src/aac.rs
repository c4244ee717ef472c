//! AAC AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).

use crate::MediaError;
use bytes::Bytes;

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// A parsed AudioSpecificConfig; `asc` keeps the exact bytes for the `esds` box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    pub asc: Bytes,
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

impl AacConfig {
    pub fn parse(asc: Bytes) -> Result<AacConfig, MediaError> {
        const WHAT: &str = "AudioSpecificConfig";
        if asc.len() < 2 {
            return Err(MediaError::Truncated {
                what: WHAT,
                offset: asc.len(),
            });
        }
        let mut object_type = asc[0] >> 3;
        let mut bit = 5usize;
        let read = |bit: &mut usize, n: usize| -> Result<u32, MediaError> {
            let mut v = 0u32;
            for _ in 0..n {
                let byte = asc.get(*bit / 8).ok_or(MediaError::Truncated {
                    what: WHAT,
                    offset: *bit / 8,
                })?;
                v = (v << 1) | u32::from((byte >> (7 - *bit % 8)) & 1);
                *bit += 1;
            }
            Ok(v)
        };
        if object_type == 31 {
            object_type = 32 + read(&mut bit, 6)? as u8;
        }
        if object_type == 0 {
            return Err(MediaError::Invalid {
                what: "AAC audioObjectType",
                value: 0,
                offset: 0,
            });
        }
        let index = read(&mut bit, 4)?;
        let sample_rate = if index == 15 {
            read(&mut bit, 24)?
        } else {
            *SAMPLE_RATES
                .get(index as usize)
                .ok_or(MediaError::Invalid {
                    what: "AAC samplingFrequencyIndex",
                    value: u64::from(index),
                    offset: 0,
                })?
        };
        let channels = read(&mut bit, 4)? as u8;
        if sample_rate == 0 || sample_rate > 192_000 {
            return Err(MediaError::Invalid {
                what: "AAC sample rate",
                value: u64::from(sample_rate),
                offset: 0,
            });
        }
        if channels == 0 || channels > 7 {
            return Err(MediaError::Unsupported(
                "AAC channel configuration 0 (PCE) or reserved",
            ));
        }
        Ok(AacConfig {
            asc,
            object_type,
            sample_rate,
            channels,
        })
    }

    /// Builds an AudioSpecificConfig from ADTS header fields.
    pub fn from_adts(
        profile: u8,
        sample_rate_index: u8,
        channels: u8,
    ) -> Result<AacConfig, MediaError> {
        let object_type = profile + 1;
        let asc = [
            (object_type << 3) | (sample_rate_index >> 1),
            ((sample_rate_index & 1) << 7) | (channels << 3),
        ];
        AacConfig::parse(Bytes::copy_from_slice(&asc))
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// Samples per AAC frame (1024 for AAC-LC and HE-AAC core frames).
    pub fn samples_per_frame(&self) -> u32 {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lc_stereo_48k() {
        // What ffmpeg's native AAC encoder writes for 48 kHz stereo LC.
        let c = AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 48000, 2));
        assert_eq!(c.codec_string(), "mp4a.40.2");
        let adts = AacConfig::from_adts(1, 3, 2).unwrap();
        assert_eq!(adts, c);
    }

    #[test]
    fn malformed_configs_are_errors() {
        assert!(AacConfig::parse(Bytes::from_static(&[])).is_err());
        assert!(AacConfig::parse(Bytes::from_static(&[0x11])).is_err());
        assert!(AacConfig::parse(Bytes::from_static(&[0x17, 0x80])).is_err()); // index 14
        assert!(AacConfig::parse(Bytes::from_static(&[0x11, 0x80])).is_err()); // 0 channels
        assert!(AacConfig::parse(Bytes::from_static(&[0x00, 0x10])).is_err()); // object 0
        assert!(AacConfig::parse(Bytes::from_static(&[0xf8, 0x00])).is_err()); // escape, truncated
    }
}
