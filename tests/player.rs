//! The LL-HLS player (`player_test::play`) against the real server: a clock-stamped source
//! published by the ffmpeg CLI, played from the origin and through an edge, decoded by the
//! ffmpeg CLI with the visual clock code read from every frame.
//!
//! - It plays at the live edge without polling: after the first playlist every reload is a
//!   blocking one, parts come from preload hints, no whole segments, delta updates are used.
//! - It plays through a publisher reconnect (EXT-X-DISCONTINUITY, a new init segment).
//! - Its glass-to-glass figure is right to within a frame: the source stamps alternate runs
//!   of frames 400 ms early, and one session must see exactly that step.
//!
//! Bounds are loose on purpose (a loaded 2-core CI machine); `bench/latency.sh` reports the
//! real figures.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Cluster, Server};
use player_test::glass::{self, PublishOptions};
use player_test::player::{percentile, PlayerConfig, Report};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// These tests each run a real-time encoder and decoders; one at a time, so that a 2-core CI
/// machine measures latency rather than its own overload.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn decode_cfg(seconds: u64) -> PlayerConfig {
    PlayerConfig {
        duration: Duration::from_secs(seconds),
        decode: true,
        session_id: Some(format!("player-test-{}", std::process::id())),
        ..Default::default()
    }
}

fn check_live_edge(name: &str, r: &Report) {
    eprintln!("{name}: {}", r.summary());
    assert!(r.fatal.is_none(), "{name}: {:?}", r.fatal);
    assert!(r.errors.is_empty(), "{name}: {:?}", r.errors);
    let q = &r.requests;
    assert_eq!(
        q.playlists - q.blocking_playlists,
        1,
        "{name}: only the first playlist load may be a plain one (no polling): {q:?}"
    );
    assert!(q.delta_playlists > 0, "{name}: no delta updates: {q:?}");
    assert!(
        q.hinted_parts >= 15,
        "{name}: parts at the live edge come from preload hints: {q:?}"
    );
    assert_eq!(
        q.segments, 0,
        "{name}: whole segments at the live edge: {q:?}"
    );
    assert!(
        r.ttff.is_some_and(|t| t < Duration::from_secs(8)),
        "{name}: TTFF {:?}",
        r.ttff
    );
    assert!(r.frames >= 150, "{name}: {} frames decoded", r.frames);
    assert!(
        r.visual_latency_ms.len() >= 120,
        "{name}: {} frames with a readable code shown",
        r.visual_latency_ms.len()
    );
    let p50 = percentile(&r.visual_latency_ms, 0.5).unwrap();
    assert!(
        (200..6000).contains(&p50),
        "{name}: glass-to-glass p50 {p50} ms"
    );
    // The server stamps program date-time when media arrives, after capture.
    let enc = percentile(&r.visual_minus_pdt_ms, 0.5).unwrap();
    assert!((-50..3000).contains(&enc), "{name}: capture → PDT {enc} ms");
    assert!(r.stall_secs() < 3.0, "{name}: stalled {:?}", r.stalls);
}

#[test]
fn plays_at_the_live_edge_from_origin_and_through_an_edge() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(1, &common::config(""), &[]);
    let url = cluster.rtmp_url(common::KEY);
    let publisher =
        std::thread::spawn(move || glass::publish(&url, &PublishOptions::new(640, 360, 30, 26.0)));
    let rt = common::runtime();
    rt.block_on(async {
        hls::wait_stream(&hls::client(), &cluster.origin_base(), "cam").await;
        let origin = format!("{}/live/cam/index.m3u8", cluster.origin_base());
        let edge = format!("{}/live/cam/index.m3u8", cluster.edge_base(0));
        let (o, e) = tokio::join!(
            player_test::play(&origin, decode_cfg(12)),
            player_test::play(&edge, decode_cfg(12))
        );
        check_live_edge("origin", &o);
        check_live_edge("edge", &e);
    });
    publisher.join().unwrap().unwrap();
}

#[test]
fn plays_through_a_publisher_reconnect() {
    let _serial = one_at_a_time();
    let server = Server::start(&common::config("grace_period = 5.0"));
    let url = server.rtmp_url(common::KEY);
    let second_start = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let mark = second_start.clone();
    let publishers = std::thread::spawn(move || {
        glass::publish(&url, &PublishOptions::new(640, 360, 30, 8.0))?;
        std::thread::sleep(Duration::from_millis(800));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        mark.store(now.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
        glass::publish(&url, &PublishOptions::new(640, 360, 30, 14.0))
    });
    let rt = common::runtime();
    let r = rt.block_on(async {
        hls::wait_stream(&hls::client(), &server.base(), "cam").await;
        let media = format!("{}/live/cam/source/index.m3u8", server.base());
        player_test::play(&media, decode_cfg(16)).await
    });
    publishers.join().unwrap().unwrap();
    eprintln!("reconnect: {}", r.summary());
    assert!(r.fatal.is_none(), "{:?}", r.fatal);
    assert!(r.discontinuities >= 1, "no discontinuity played");
    let second = second_start.load(std::sync::atomic::Ordering::SeqCst);
    let after = r.shown_frames.iter().filter(|(c, _)| *c >= second).count();
    let before = r.shown_frames.iter().filter(|(c, _)| *c < second).count();
    assert!(before >= 60, "{before} frames of the first session shown");
    assert!(after >= 60, "{after} frames of the second session shown");
}

/// The source stamps alternate runs of 30 frames 400 ms early: one player session must see
/// latencies in two groups exactly 400 ms apart, within one frame (33 ms).
#[test]
fn measures_a_known_delay_within_one_frame() {
    let _serial = one_at_a_time();
    const DELAY: i64 = 400;
    let server = Server::start(&common::config(""));
    let url = server.rtmp_url(common::KEY);
    let publisher = std::thread::spawn(move || {
        let o = PublishOptions {
            delay_ms: DELAY as u64,
            delay_every: Some(30),
            ..PublishOptions::new(640, 360, 30, 22.0)
        };
        glass::publish(&url, &o)
    });
    let rt = common::runtime();
    let r = rt.block_on(async {
        hls::wait_stream(&hls::client(), &server.base(), "cam").await;
        let media = format!("{}/live/cam/source/index.m3u8", server.base());
        player_test::play(&media, decode_cfg(12)).await
    });
    publisher.join().unwrap().unwrap();
    eprintln!("known delay: {}", r.summary());
    assert!(r.fatal.is_none(), "{:?}", r.fatal);
    let lat = &r.visual_latency_ms;
    assert!(lat.len() >= 200, "{} frames", lat.len());
    // Split at the midpoint between the extremes' medians.
    let lo_guess = percentile(lat, 0.1).unwrap();
    let hi_guess = percentile(lat, 0.9).unwrap();
    let mid = (lo_guess + hi_guess) / 2;
    let lo: Vec<i64> = lat.iter().copied().filter(|&l| l < mid).collect();
    let hi: Vec<i64> = lat.iter().copied().filter(|&l| l >= mid).collect();
    assert!(
        lo.len() >= 60 && hi.len() >= 60,
        "{} / {}",
        lo.len(),
        hi.len()
    );
    let step = percentile(&hi, 0.5).unwrap() - percentile(&lo, 0.5).unwrap();
    assert!(
        (step - DELAY).abs() <= 33,
        "measured step {step} ms for a {DELAY} ms delay"
    );
    // Frame by frame: neighbours differ by under a frame, or by the delay (a run boundary).
    let good = lat
        .windows(2)
        .filter(|w| {
            let d = (w[1] - w[0]).abs();
            d <= 33 || (d - DELAY).abs() <= 33
        })
        .count();
    assert!(
        good * 100 >= (lat.len() - 1) * 95,
        "only {good} of {} neighbouring frames within a frame",
        lat.len() - 1
    );
}

/// A hostile or broken server: garbage playlists, garbage media, a playlist that never moves
/// and ignores blocking requests. The player reports errors (or gives up) without panicking
/// and without turning blocking reloads into a request storm.
#[test]
fn survives_a_broken_server() {
    use axum::routing::get;
    let rt = common::runtime();
    rt.block_on(async {
        let stuck = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n\
            #EXT-X-PART-INF:PART-TARGET=0.33300\n#EXT-X-MEDIA-SEQUENCE:1\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:00.000Z\n\
            #EXT-X-PART:DURATION=0.33300,URI=\"1.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.33300,URI=\"1.1.m4s\"\n\
            #EXT-X-PART:DURATION=0.33300,URI=\"1.2.m4s\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1.3.m4s\"\n";
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = hits.clone();
        let app = axum::Router::new()
            .route(
                "/garbage.m3u8",
                get(|| async { "\u{0}\u{1}<html>not a playlist" }),
            )
            .route(
                "/multi.m3u8",
                get(|| async { "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=x\nv.m3u8\n" }),
            )
            .route(
                "/stuck/index.m3u8",
                get(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async move { stuck }
                }),
            )
            .route(
                "/stuck/{file}",
                get(|| async { vec![0x5au8; 3000] }), // not MP4 at all
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = |s| PlayerConfig {
            duration: Duration::from_secs(s),
            decode: true,
            fatal_after: Duration::from_secs(3),
            ..Default::default()
        };
        for bad in ["garbage.m3u8", "multi.m3u8", "nothing-here.m3u8"] {
            let r = player_test::play(&format!("http://{addr}/{bad}"), cfg(2)).await;
            assert!(r.fatal.is_some(), "{bad}: {}", r.summary());
        }
        let r = player_test::play(&format!("http://{addr}/stuck/index.m3u8"), cfg(5)).await;
        eprintln!("stuck server: {}", r.summary());
        assert!(
            r.fatal.is_some(),
            "a stream that never moves is given up on"
        );
        assert_eq!(r.frames, 0);
        let n = hits.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n < 40, "{n} playlist requests in a few seconds: polling");
    });
}
