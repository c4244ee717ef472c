//! Glass-to-glass latency through the origin, measured with the visual clock code: a source
//! that stamps each frame with its capture time (published by the real ffmpeg CLI), a player
//! that follows LL-HLS parts and decodes them with ffmpeg, reading the stamp back per frame.
//! The bounds are loose on purpose (a loaded CI machine); `bench/` reports the real figures.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Server};
use std::time::Duration;

#[test]
fn clock_code_gives_glass_to_glass_latency() {
    let server = Server::start(&common::config("grace_period = 2.0"));
    let url = server.rtmp_url(common::KEY);
    let publisher =
        std::thread::spawn(move || player_test::glass::publish(&url, 640, 360, 30, 20.0, 0));
    let rt = common::runtime();
    let report = rt.block_on(async {
        let media = format!("{}/live/cam/source/index.m3u8", server.base());
        let (status, text) = hls::wait_for(&hls::client(), &media).await;
        assert_eq!(status, 200, "{text}");
        player_test::glass::watch(&media, Duration::from_secs(10)).await
    });
    publisher.join().unwrap().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        report.frames >= 150,
        "only {} frames decoded",
        report.frames
    );
    assert!(
        report.latencies_ms.len() as u64 * 10 >= report.frames * 9,
        "codes unreadable in {} of {} frames",
        report.unreadable_frames,
        report.frames
    );
    let p50 = report.percentile(0.5).unwrap();
    assert!((50..5000).contains(&p50), "glass-to-glass p50 {p50} ms");
    eprintln!(
        "glass-to-glass through the origin: p50 {p50} ms, p95 {:?} ms, TTFF {:?}",
        report.percentile(0.95),
        report.ttff
    );
}
