//! Audio-only sources (internet radio, podcasts): the real ffmpeg CLI publishes AAC alone, over
//! RTMP and over SRT; the origin packages audio-only LL-HLS (fMP4 AAC, parts cut on audio
//! frames, CODECS without a video codec, no RESOLUTION) that passes the live conformance
//! checks and that ffmpeg decodes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{conformance, hls, Publisher, Server, Source};
use std::time::Duration;

fn audio_only_stream_is_conformant_and_decodes(srt: bool) {
    let server = Server::start(&common::config(conformance::CONFIG));
    let source = Source::audio(40.0);
    let _publisher = if srt {
        Publisher::srt(&server.srt_url(&format!("live/{}", common::KEY)), &source)
    } else {
        Publisher::rtmp(&server.rtmp_url(common::KEY), &source)
    };
    let rt = common::runtime();
    let c = hls::client();
    let (status, master) = rt.block_on(hls::wait_for(
        &c,
        &format!("{}/live/cam/index.m3u8", server.base()),
    ));
    assert_eq!(status, 200, "{master}\n{}", server.log());
    let inf = master
        .lines()
        .find(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .unwrap();
    assert!(
        inf.contains("CODECS=\"mp4a.40.2\"")
            && !inf.contains("RESOLUTION")
            && !inf.contains("FRAME-RATE"),
        "audio-only variant: {inf}"
    );

    let followed = rt.block_on(hls::follow(
        &c,
        &format!("{}/live/cam/source/index.m3u8", server.base()),
        Duration::from_secs(10),
    ));
    assert!(followed.errors.is_empty(), "{:?}", followed.errors);
    // Ten 1 s segments in: the window is long enough for delta updates to skip some.
    let failures = rt.block_on(conformance::check_live(&server.base(), "source"));
    assert!(
        failures.is_empty(),
        "audio-only LL-HLS rules broken:\n{}",
        failures.join("\n")
    );

    let init = followed.inits.values().next().expect("no init segment");
    let segments: Vec<&[u8]> = followed.segments.values().map(Vec::as_slice).collect();
    assert!(segments.len() >= 2, "only {} segments", segments.len());
    let parts = followed.parts.len();
    assert!(parts >= 6, "only {parts} parts");
    let path = common::write_media(server.dir.path(), "audio.mp4", init, &segments);
    assert_eq!(common::decode_errors(&path), None);
    let packets = common::packets(&path);
    assert!(
        !packets.is_empty() && packets.iter().all(|p| !p.video),
        "audio packets only"
    );
    // Whole segments of ~1 s (TARGETDURATION 1), no sliver of a last part.
    let pl = followed.playlists.last().unwrap();
    for s in pl.segments.iter().filter(|s| s.uri.is_some()) {
        assert!(
            s.parts.iter().all(|p| p.duration >= 0.85 * 0.333 - 0.022),
            "short part in segment {}: {:?}",
            s.msn,
            s.parts
        );
    }
}

#[test]
fn an_audio_only_rtmp_publish_is_packaged() {
    audio_only_stream_is_conformant_and_decodes(false);
}

#[test]
fn an_audio_only_srt_publish_is_packaged() {
    audio_only_stream_is_conformant_and_decodes(true);
}
