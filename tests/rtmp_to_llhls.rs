//! Acceptance 1: the real ffmpeg CLI publishes 1280x720@30 H.264 High (B-frames) + AAC over
//! RTMP for 20+ s; a client follows the LL-HLS playlist with blocking reloads and every part
//! and segment is checked with ffprobe/ffmpeg.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Publisher, Server, Source};
use std::time::Duration;

#[test]
fn rtmp_publish_plays_as_ll_hls() {
    let server = Server::start(&common::config("grace_period = 2.0"));
    let _publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::hd(24.0));
    let rt = common::runtime();
    let followed = rt.block_on(async {
        let c = hls::client();
        let (status, master) =
            hls::wait_for(&c, &format!("{}/live/cam/index.m3u8", server.base())).await;
        assert_eq!(status, 200, "{master}");
        assert!(master.contains("RESOLUTION=1280x720"), "{master}");
        let uri = master.lines().find(|l| !l.starts_with('#')).unwrap();
        let url = format!("{}/live/cam/{uri}", server.base());
        hls::follow(&c, &url, Duration::from_secs(45)).await
    });
    // 24 s of media at 2 s GOP: about a dozen segments were complete while we followed.
    assert!(
        followed.segments.len() >= 8,
        "only {} segments",
        followed.segments.len()
    );
    assert!(
        followed.parts.len() >= 50,
        "only {} parts",
        followed.parts.len()
    );
    // The client used blocking reloads: most reloads waited for the next part (no polling).
    let waited = followed
        .blocking_times
        .iter()
        .filter(|d| **d > Duration::from_millis(50))
        .count();
    assert!(
        waited * 2 > followed.blocking_times.len(),
        "blocking reloads did not block: {:?}",
        followed.blocking_times
    );
    assert!(
        followed.playlists.last().unwrap().endlist,
        "stream should end after the publisher"
    );
    common::check_followed_media(&followed, 3000);
}
