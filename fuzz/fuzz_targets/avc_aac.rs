//! The codec configuration parsers publishers hand us: Annex B access units and SPS (as SRT
//! carries them), the AVC decoder configuration record and the AAC AudioSpecificConfig (as
//! FLV sequence headers carry them).
#![no_main]

use bytes::Bytes;
use media::{AacConfig, AvcConfig};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    let _ = media::annexb::access_unit(&b);
    // Every SPS with every PPS in the input, as an SRT publisher's stream gives them.
    let nals = media::annexb::nals(&b);
    let of = |t: u8| {
        nals.iter()
            .filter(move |n| n.first().is_some_and(|h| h & 0x1f == t))
    };
    for sps in of(7).take(4) {
        for pps in of(8).take(4) {
            if let Ok(c) = AvcConfig::from_parameter_sets(sps.clone(), pps.clone()) {
                let _ = c.codec_string();
            }
        }
    }
    if let Ok(c) = AvcConfig::parse(b.clone()) {
        let _ = c.codec_string();
    }
    if let Ok(c) = AacConfig::parse(b) {
        let _ = (c.codec_string(), c.samples_per_frame());
    }
});
