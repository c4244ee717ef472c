//! RTMP after the handshake, as a connection's session layer gets it: the chunk guard,
//! rml_rtmp's chunk stream and AMF0 commands, connect/publish accepted, media into the FLV
//! demuxer. The first byte picks how many bytes arrive at a time (reads of any size).
#![no_main]

use ingest::chunk_guard::ChunkLimits;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) * 16 + 1;
    let _ = ingest::rtmp::replay(input, step, ChunkLimits::default());
});
