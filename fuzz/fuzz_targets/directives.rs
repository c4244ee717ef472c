//! The LL-HLS query directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`), the edge's cache key
//! and the viewer session, from any query string.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let _ = media::directives::parse(Some(q));
    let _ = media::directives::is_blocking(Some(q));
    let _ = media::directives::cache_key("/live/cam/source/index.m3u8", Some(q));
    let _ = media::viewers::session_from_query(q);
});
