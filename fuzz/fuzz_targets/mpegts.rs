//! MPEG-TS as SRT delivers it (PAT/PMT, PES, ADTS, Annex B), in reads of the size the first
//! byte picks, then flushed.
#![no_main]

use ingest::ts::TsDemuxer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) * 8 + 1;
    let mut d = TsDemuxer::default();
    for chunk in input.chunks(step) {
        if d.push(chunk).is_err() {
            return;
        }
    }
    let _ = d.flush();
});
