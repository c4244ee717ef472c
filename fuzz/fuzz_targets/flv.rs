//! FLV tags into the demuxer (what RTMP audio and video messages carry): the input is an FLV
//! file, cut into tags by their headers as far as they make sense.
#![no_main]

use bytes::Bytes;
use ingest::flv::FlvDemuxer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let mut d = FlvDemuxer::default();
    let mut pos = 13.min(data.len());
    while pos + 11 <= data.len() {
        let kind = data[pos];
        let size = usize::from(data[pos + 1]) << 16
            | usize::from(data[pos + 2]) << 8
            | usize::from(data[pos + 3]);
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let end = (pos + 11 + size).min(data.len());
        let body = data.slice(pos + 11..end);
        let r = match kind {
            9 => d.video(ts, &body),
            8 => d.audio(ts, &body),
            _ => Ok(None),
        };
        if r.is_err() {
            return; // a connection ends at its first bad tag
        }
        pos = end + 4;
    }
});
