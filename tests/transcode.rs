//! The transcoded ladder end to end: the real ffmpeg CLI publishes 1280x720@30 H.264 High with
//! B-frames + AAC over RTMP to an origin with `[transcode]` (the standard ladder); with no
//! viewers the stream gets the source and the 480p rung, encoded in-process by libx264. Every
//! rendition decodes at its declared size and frame rate, each media sequence number's
//! segments start at the same presentation time in every rendition with an IDR, and both
//! renditions pass the LL-HLS conformance checks, rendition reports included.

#![allow(clippy::unwrap_used)]

mod common;

use common::{conformance, hls, Publisher, Server, Source};
use std::process::Command;
use std::time::{Duration, Instant};

/// One real-time encode at a time: two of these tests side by side on a 2-core machine would
/// measure the machine, not the ladder.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// (width, height, average frame rate) of the first video stream of `path`, by ffprobe.
fn video_stream(path: &std::path::Path) -> (u32, u32, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,avg_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.trim().split(',').collect();
    let rate = f[2]
        .split_once('/')
        .map(|(n, d)| n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap().max(1.0))
        .unwrap();
    (f[0].parse().unwrap(), f[1].parse().unwrap(), rate)
}

/// One complete segment of a rendition, as fetched.
#[derive(Debug, Clone)]
struct Seg {
    msn: u64,
    /// When its first video frame is presented (90 kHz, tfdt + composition offset: as MSE
    /// reads it; ffprobe shifts the PTS of a track with negative offsets).
    presented: i64,
    /// Video keyframes in it, and whether the first video frame is one.
    keyframes: usize,
    starts_with_key: bool,
}

/// The last `n` complete segments of `rendition` (init + each segment probed), and the
/// rendition's init + those segments in one file.
async fn last_segments(
    c: &reqwest::Client,
    base: &str,
    rendition: &str,
    n: usize,
    dir: &std::path::Path,
) -> (Vec<Seg>, std::path::PathBuf) {
    let url = format!("{base}/live/cam/{rendition}/index.m3u8");
    let (_, text) = hls::get_text(c, &url).await;
    let pl = hls::MediaPlaylist::parse(&text).unwrap();
    let complete: Vec<_> = pl.segments.iter().filter(|s| s.uri.is_some()).collect();
    // The init of the last segment (a new size has a new one): segments under it only.
    let map = complete
        .last()
        .and_then(|s| s.map.clone())
        .unwrap_or_else(|| "init.mp4".into());
    let complete: Vec<_> = complete
        .into_iter()
        .filter(|s| s.map.as_ref().is_none_or(|m| *m == map))
        .collect();
    let (_, init) = hls::get_bytes(c, &format!("{base}/live/cam/{rendition}/{map}")).await;
    let track = player_test::mp4::video_track(&init).unwrap();
    let mut all = init.clone();
    let mut out = Vec::new();
    for s in &complete[complete.len().saturating_sub(n)..] {
        let uri = s.uri.as_ref().unwrap();
        let (status, seg) = hls::get_bytes(c, &format!("{base}/live/cam/{rendition}/{uri}")).await;
        assert_eq!(status, 200, "{rendition}/{uri}");
        let path = common::write_media(dir, &format!("{rendition}-{uri}.mp4"), &init, &[&seg]);
        let video: Vec<_> = common::packets(&path)
            .into_iter()
            .filter(|p| p.video)
            .collect();
        let run = player_test::mp4::video_run(&seg, track).unwrap().unwrap();
        out.push(Seg {
            msn: s.msn,
            presented: (run.first_presented_secs * 90_000.0).round() as i64,
            keyframes: video.iter().filter(|p| p.keyframe).count(),
            starts_with_key: video.first().is_some_and(|p| p.keyframe),
        });
        all.extend_from_slice(&seg);
    }
    let whole = dir.join(format!("{rendition}-all.mp4"));
    std::fs::write(&whole, &all).unwrap();
    (out, whole)
}

/// Waits (at most 30 s) until `rendition` lists `n` complete segments.
async fn wait_segments(c: &reqwest::Client, base: &str, rendition: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = hls::get_text(c, &format!("{base}/live/cam/{rendition}/index.m3u8")).await;
        let complete = hls::MediaPlaylist::parse(&text)
            .map(|p| p.segments.iter().filter(|s| s.uri.is_some()).count())
            .unwrap_or(0);
        if complete >= n || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Each media sequence number both lists have starts at the same presentation time (±1 tick);
/// at least `min_common` of them. Fetch the rung first and more of the source after it: on a
/// loaded machine fetching and probing a list takes seconds, and a list taken later has moved
/// on by as many segments.
fn assert_aligned(a: (&str, &[Seg]), b: (&str, &[Seg]), min_common: usize) {
    let common: Vec<(&Seg, &Seg)> =
        a.1.iter()
            .filter_map(|x| b.1.iter().find(|y| y.msn == x.msn).map(|y| (x, y)))
            .collect();
    assert!(
        common.len() >= min_common,
        "{} {:?}\n{} {:?}",
        a.0,
        a.1,
        b.0,
        b.1
    );
    for (x, y) in common {
        assert!(
            (x.presented - y.presented).abs() <= 1,
            "segment {} starts at {} in {} and {} in {}",
            x.msn,
            x.presented,
            a.0,
            y.presented,
            b.0
        );
    }
}

#[test]
fn a_720p_b_frame_publish_gets_the_source_and_an_aligned_480p_rung() {
    let _turn = turn();
    // 1 s segments, so the 16-segment window (and with it delta updates) fills in 16 s.
    let server = Server::start(&common::config(&format!(
        "{}\n[transcode]\n",
        conformance::CONFIG
    )));
    let mut source = Source::hd(60.0);
    source.gop = 30;
    let mut publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &source);
    let base = server.base();
    let tmp = tempfile::tempdir().unwrap();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let multivariant = loop {
            let (_, text) = hls::get_text(&c, &format!("{base}/live/cam/index.m3u8")).await;
            if text.contains("480p/index.m3u8") || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let variants: Vec<&str> = multivariant
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split('?').next().unwrap())
            .collect();
        assert_eq!(
            variants,
            ["source/index.m3u8", "480p/index.m3u8"],
            "no viewers: the source and 480p only\n{multivariant:?}"
        );
        assert!(
            multivariant.contains("RESOLUTION=854x480"),
            "{multivariant}"
        );

        // Wait for a few complete segments in the rung.
        wait_segments(&c, &base, "480p", 6).await;

        // The same media sequence numbers in both renditions, fetched whole.
        // The rung first, then more of the source: the source's list, taken later, still
        // holds the rung's media sequence numbers however slow the fetching is.
        let mut listed = Vec::new();
        for (rendition, n) in [("480p", 6), ("source", 10)] {
            let (segs, whole) = last_segments(&c, &base, rendition, n, tmp.path()).await;
            for seg in &segs {
                assert!(
                    seg.starts_with_key,
                    "{rendition} {seg:?} does not start with a keyframe"
                );
            }
            assert_eq!(
                common::decode_errors(&whole),
                None,
                "{rendition} does not decode"
            );
            let (w, h, fps) = video_stream(&whole);
            let want = if rendition == "source" {
                (1280, 720)
            } else {
                (854, 480)
            };
            assert_eq!((w, h), want, "{rendition} size");
            assert!((fps - 30.0).abs() < 0.5, "{rendition} frame rate {fps}");
            listed.push(segs);
        }
        assert_aligned(("source", &listed[1]), ("480p", &listed[0]), 3);

        // Every LL-HLS rule in both renditions, rendition reports included (this ends with the
        // publisher killed and the playlists ended).
        let failures =
            conformance::check_renditions(&base, &mut publisher, &["source", "480p"]).await;
        assert!(
            failures.is_empty(),
            "LL-HLS rules broken:\n{}",
            failures.join("\n")
        );
    });
}

/// The rendition ids the multivariant playlist of `cam` lists, in order.
async fn variants(c: &reqwest::Client, base: &str) -> Vec<String> {
    variants_of(c, base, "cam").await
}

async fn variants_of(c: &reqwest::Client, base: &str, stream: &str) -> Vec<String> {
    let (_, text) = hls::get_text(c, &format!("{base}/live/{stream}/index.m3u8")).await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split('/').next())
        .map(str::to_owned)
        .collect()
}

/// Viewers: each session fetches its rendition's playlist every 500 ms (as a player's reload
/// would, with its session id) until `stop` is set.
fn watch(
    base: &str,
    rendition: &str,
    sessions: std::ops::Range<u32>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    for i in sessions {
        let url = format!("{base}/live/cam/{rendition}/index.m3u8?fcsid=viewer-{i}");
        let stop = std::sync::Arc::clone(stop);
        tokio::spawn(async move {
            let c = hls::client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

/// Waits (polling every 300 ms, at most `limit`) until `check` holds of the multivariant's
/// renditions; how long it took, or `None`.
async fn until_variants(
    c: &reqwest::Client,
    base: &str,
    limit: Duration,
    check: impl Fn(&[String]) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check(&variants(c, base).await) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

/// Advertise by tier, stop by demand, with a two-tier ladder of our own on a 640x360 B-frame
/// source: `low` (180p) for everyone, `mid` (270p) from 10 viewers on. Twelve viewer sessions
/// bring `mid` into the multivariant within 10 s; it joins aligned with the source (same media
/// sequence numbers at the same presentation times, starting with an IDR) while the running
/// `low` rung goes on untouched (one init, no discontinuity, IDRs only at segment starts).
/// When the viewers leave, `mid` leaves the multivariant only after the hysteresis, and a
/// viewer still on it keeps getting media until it leaves too; then the rung stops (ENDLIST).
#[test]
fn the_ladder_follows_the_viewers() {
    let _turn = turn();
    const HYSTERESIS: f64 = 6.0;
    let server = Server::start(&common::config(&format!(
        "{}\nviewer_window = 3.0\n[transcode]\nhysteresis = {HYSTERESIS}\nquiet_period = 4.0\n\
         [[transcode.rungs]]\nname = \"low\"\nheight = 180\nbitrate_kbps = 300\n\
         [[transcode.rungs]]\nname = \"mid\"\nheight = 270\nbitrate_kbps = 500\n\
         [[transcode.tiers]]\nmin_viewers = 0\nrungs = [\"low\"]\n\
         [[transcode.tiers]]\nmin_viewers = 10\nrungs = [\"mid\", \"low\"]\n",
        conformance::CONFIG
    )));
    let mut source = Source::small(80.0);
    source.gop = 30;
    let _publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &source);
    let base = server.base();
    let tmp = tempfile::tempdir().unwrap();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let tier0 = until_variants(&c, &base, Duration::from_secs(20), |v| v == ["source", "low"])
            .await;
        assert!(tier0.is_some(), "no viewers: source + low, got {:?}", variants(&c, &base).await);

        // Twelve viewers on `low`: the second tier within 10 s.
        let crowd = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        watch(&base, "low", 0..12, &crowd);
        let up = until_variants(&c, &base, Duration::from_secs(10), |v| {
            v.iter().any(|r| r == "mid")
        })
        .await;
        assert!(up.is_some(), "12 viewers: mid not listed within 10 s: {:?}", variants(&c, &base).await);
        eprintln!("tier up after {:?}", up.unwrap_or_default());
        // One viewer moves to `mid` and stays there.
        let stayer = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        watch(&base, "mid", 100..101, &stayer);

        // Let a few segments of `mid` complete, then compare with the source and look at `low`.
        tokio::time::sleep(Duration::from_secs(6)).await;
        // Rungs first, the source last and longer (see `assert_aligned`).
        let (low, low_all) = last_segments(&c, &base, "low", 12, tmp.path()).await;
        let (mid, mid_all) = last_segments(&c, &base, "mid", 4, tmp.path()).await;
        let (src, _) = last_segments(&c, &base, "source", 10, tmp.path()).await;
        for seg in mid.iter().chain(&low) {
            assert!(seg.starts_with_key, "{seg:?} does not start with a keyframe");
            assert_eq!(seg.keyframes, 1, "{seg:?}: an IDR inside a segment");
        }
        assert_aligned(("source", &src), ("mid", &mid), 3);
        assert_aligned(("source", &src), ("low", &low), 4);
        for (rendition, whole, want) in [("mid", &mid_all, (480, 270)), ("low", &low_all, (320, 180))] {
            assert_eq!(common::decode_errors(whole), None, "{rendition} does not decode");
            let (w, h, _) = video_stream(whole);
            assert_eq!((w, h), want, "{rendition} size");
        }
        let (_, low_text) = hls::get_text(&c, &format!("{base}/live/cam/low/index.m3u8")).await;
        assert!(!low_text.contains("#EXT-X-DISCONTINUITY"), "low was restarted:\n{low_text}");
        assert_eq!(low_text.matches("#EXT-X-MAP").count(), 1, "low was restarted:\n{low_text}");

        // The crowd leaves: `mid` stays listed for the hysteresis after the count falls.
        crowd.store(true, std::sync::atomic::Ordering::Relaxed);
        let left = Instant::now();
        let down = until_variants(&c, &base, Duration::from_secs(40), |v| {
            !v.iter().any(|r| r == "mid")
        })
        .await
        .expect("mid still listed 40 s after the viewers left");
        eprintln!("tier down {down:?} after the viewers left");
        assert!(
            down.as_secs_f64() >= HYSTERESIS,
            "mid left the multivariant {down:?} after the viewers, before the {HYSTERESIS} s hysteresis"
        );
        let _ = left;
        // Its last viewer still gets media: the playlist goes on past the quiet period.
        let mid_url = format!("{base}/live/cam/mid/index.m3u8");
        let before = hls::MediaPlaylist::parse(&hls::get_text(&c, &mid_url).await.1).unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (status, text) = hls::get_text(&c, &mid_url).await;
        let after = hls::MediaPlaylist::parse(&text).unwrap();
        assert_eq!(status, 200);
        assert!(!text.contains("#EXT-X-ENDLIST"), "mid ended while watched:\n{text}");
        let last = |p: &hls::MediaPlaylist| p.segments.last().map_or(0, |s| s.msn);
        assert!(last(&after) > last(&before), "mid stopped advancing while watched:\n{text}");

        // The last viewer leaves: the rung stops and its playlist ends.
        stayer.store(true, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let (_, text) = hls::get_text(&c, &mid_url).await;
            if text.contains("#EXT-X-ENDLIST") {
                break;
            }
            assert!(Instant::now() < deadline, "mid still running 25 s after its last viewer left");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(variants(&c, &base).await, ["source", "low"]);
    });
}

/// Odd sources: 638x358 (even, not a multiple of 16) at 60 fps with a 180-line rung capped at
/// 30 fps: the rung keeps the aspect ratio with even dimensions, runs at 30 fps (every other
/// frame kept, the one at each keyframe always), its segments start with the source's IDRs
/// at the same times and hold no other IDR. And a source smaller than every rung of the
/// standard ladder is offered alone.
#[test]
fn odd_sizes_and_rates_and_a_source_smaller_than_every_rung() {
    let _turn = turn();
    let server = Server::start(&common::config(&format!(
        "{}\n[transcode]\n[[transcode.rungs]]\nname = \"r180\"\nheight = 180\nbitrate_kbps = 300\nmax_fps = 30\n\
         [[transcode.tiers]]\nmin_viewers = 0\nrungs = [\"r180\"]\n",
        conformance::CONFIG
    )));
    let source = Source {
        width: 638,
        height: 358,
        fps: "60",
        gop: 60,
        seconds: 30.0,
        video_bitrate: "800k",
        audio_only: false,
    };
    let publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &source);
    let base = server.base();
    let tmp = tempfile::tempdir().unwrap();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let listed = until_variants(&c, &base, Duration::from_secs(20), |v| {
            v == ["source", "r180"]
        })
        .await;
        assert!(listed.is_some(), "{:?}", variants(&c, &base).await);
        wait_segments(&c, &base, "r180", 6).await;
        let (rung, rung_all) = last_segments(&c, &base, "r180", 5, tmp.path()).await;
        let (src, src_all) = last_segments(&c, &base, "source", 9, tmp.path()).await;
        for seg in &rung {
            assert!(
                seg.starts_with_key,
                "{seg:?} does not start with a keyframe"
            );
            assert_eq!(seg.keyframes, 1, "{seg:?}: an IDR inside a segment");
        }
        assert_aligned(("source", &src), ("r180", &rung), 3);
        assert_eq!(
            common::decode_errors(&rung_all),
            None,
            "r180 does not decode"
        );
        let (w, h, fps) = video_stream(&rung_all);
        let exact = 638.0 * 180.0 / 358.0;
        assert!(
            h == 180 && w % 2 == 0 && (f64::from(w) - exact).abs() <= 2.0,
            "{w}x{h}"
        );
        assert!((fps - 30.0).abs() < 0.5, "r180 at {fps} fps");
        let (_, _, source_fps) = video_stream(&src_all);
        assert!(
            (source_fps - 60.0).abs() < 0.5,
            "source at {source_fps} fps"
        );
    });
    drop(publisher);

    // 320x180 against the standard ladder (480p is its smallest rung of the first tier).
    let server = Server::start(&common::config(&format!(
        "{}\n[transcode]\n",
        conformance::CONFIG
    )));
    let mut small = Source::small(20.0);
    (small.width, small.height) = (320, 180);
    let _publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &small);
    let base = server.base();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        // Once the source has a few segments the ladder has had every chance to add a rung.
        wait_segments(&c, &base, "source", 4).await;
        assert_eq!(
            variants(&c, &base).await,
            ["source"],
            "a 180-line source gets no 480p"
        );
    });
}

/// `/api/streams`' entry for `name`.
async fn api_stream(c: &reqwest::Client, base: &str, name: &str) -> serde_json::Value {
    let (_, text) = hls::get_text(c, &format!("{base}/api/streams")).await;
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// A transcode budget of one rung over all streams: `other` (priority `free`) publishes first
/// and gets its rung; `cam` (`normal`) arrives and takes the budget: `other`'s rung is shed
/// (out of its multivariant playlist, stopped since nobody watches it), its source rendition
/// keeps flowing, and `/api/streams` and `/metrics` say which rung was shed and why. The
/// running rung's figures are there too: encoder, speed, CPU seconds, the CPU the tiering saved.
#[test]
fn a_small_budget_sheds_the_lowest_priority_stream_first() {
    let _turn = turn();
    let server = Server::start(&format!(
        "{}\n[transcode]\nmax_rungs = 1\n\
         [[transcode.rungs]]\nname = \"r120\"\nheight = 120\nbitrate_kbps = 200\n\
         [[transcode.rungs]]\nname = \"r240\"\nheight = 240\nbitrate_kbps = 400\n\
         [[transcode.tiers]]\nmin_viewers = 0\nrungs = [\"r120\"]\n\
         [[transcode.tiers]]\nmin_viewers = 10\nrungs = [\"r240\", \"r120\"]\n\
         [[streams]]\nname = \"cam\"\nkey = \"{}\"\n\
         [[streams]]\nname = \"other\"\nkey = \"{}\"\npriority = \"free\"\n",
        conformance::CONFIG,
        common::KEY,
        common::KEY2
    ));
    let base = server.base();
    let _other = Publisher::rtmp(&server.rtmp_url(common::KEY2), &Source::small(70.0));
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "other").await;
        let alone = async {
            for _ in 0..60 {
                if variants_of(&c, &base, "other").await == ["source", "r120"] {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            false
        };
        assert!(
            alone.await,
            "other alone: {:?}",
            variants_of(&c, &base, "other").await
        );
    });
    let _cam = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::small(60.0));
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let cam = variants_of(&c, &base, "cam").await;
            let other = variants_of(&c, &base, "other").await;
            if cam == ["source", "r120"] && other == ["source"] {
                break;
            }
            assert!(Instant::now() < deadline, "cam {cam:?}, other {other:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The shed stream's source goes on.
        let url = format!("{base}/live/other/source/index.m3u8");
        let last = |t: &str| {
            hls::MediaPlaylist::parse(t)
                .ok()
                .and_then(|p| p.segments.last().map(|s| s.msn))
                .unwrap_or(0)
        };
        let before = last(&hls::get_text(&c, &url).await.1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while last(&hls::get_text(&c, &url).await.1) < before + 2 {
            assert!(
                Instant::now() < deadline,
                "other's source stopped after the shed"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Why, in the API; the shed rung stops (nobody watches it).
        let deadline = Instant::now() + Duration::from_secs(15);
        let (cam, other) = loop {
            let cam = api_stream(&c, &base, "cam").await;
            let other = api_stream(&c, &base, "other").await;
            let measured = cam["ladder"]["rungs"][0]["speed"].is_f64()
                && cam["ladder"]["cpu_saved_seconds"].is_f64();
            if measured && other["ladder"]["running"] == serde_json::json!([]) {
                break (cam, other);
            }
            assert!(Instant::now() < deadline, "cam {cam}\nother {other}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        eprintln!(
            "cam ladder {}\nother ladder {}",
            cam["ladder"], other["ladder"]
        );
        assert_eq!(other["ladder"]["priority"], "free");
        assert_eq!(
            other["ladder"]["shed"],
            serde_json::json!([{"rung": "r120", "reason": "budget"}])
        );
        assert_eq!(cam["ladder"]["shed"], serde_json::json!([]));
        assert_eq!(cam["ladder"]["advertised"], serde_json::json!(["r120"]));
        let rung = &cam["ladder"]["rungs"][0];
        assert_eq!(rung["name"], "r120");
        assert_eq!(rung["encoder"], "x264");
        assert!(rung["speed"].as_f64().unwrap() > 1.0, "{rung}");
        assert!(rung["cpu_seconds"].as_f64().unwrap() > 0.0, "{rung}");
        // Running only r120 instead of r240 + r120 saves something from the start.
        assert!(
            cam["ladder"]["cpu_saved_seconds"].as_f64().unwrap() > 0.0,
            "{cam}"
        );

        for (series, want) in [
            (
                r#"ferrocast_transcode_sheds_total{reason="budget",stream="other"}"#,
                1.0,
            ),
            (
                r#"ferrocast_transcode_rungs{state="shed",stream="other"}"#,
                1.0,
            ),
            (
                r#"ferrocast_transcode_rungs{state="running",stream="other"}"#,
                0.0,
            ),
            (
                r#"ferrocast_transcode_rungs{state="advertised",stream="cam"}"#,
                1.0,
            ),
            ("ferrocast_transcode_budget_rungs", 1.0),
        ] {
            assert_eq!(hls::metric(&c, &base, series).await, Some(want), "{series}");
        }
        let speed = hls::metric(
            &c,
            &base,
            r#"ferrocast_transcode_rung_speed{rung="r120",stream="cam"}"#,
        )
        .await;
        assert!(speed.is_some_and(|s| s > 1.0), "{speed:?}");
        let cpu = hls::metric(
            &c,
            &base,
            r#"ferrocast_transcode_rung_cpu_seconds_total{rung="r120",stream="cam"}"#,
        )
        .await;
        assert!(cpu.is_some_and(|s| s > 0.0), "{cpu:?}");
    });
}

/// ffmpeg making a file (not in real time) with `args`; panics on failure.
fn ffmpeg_file(args: &[String]) {
    let out = Command::new("ffmpeg").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `source`'s ffmpeg arguments without `-re` (for making a file ahead).
fn file_args(source: &Source) -> Vec<String> {
    source
        .ffmpeg_args()
        .into_iter()
        .filter(|a| a != "-re")
        .collect()
}

/// A resolution change mid-stream over SRT: 640x360 for 8 s, then 480x360 (a new SPS, 4:3) in
/// the same MPEG-TS, relayed by the ffmpeg CLI in real time. The decoder is rebuilt; the
/// 180-line rung reopens its encoder at the new size (320x180 → 240x180) at the change's
/// keyframe, with a new init segment and a discontinuity, and both its sizes decode; segments
/// still start with an IDR aligned with the source's.
#[test]
fn a_resolution_change_mid_stream_reopens_the_rung_at_the_new_size() {
    let _turn = turn();
    let server = Server::start(&common::config(&format!(
        "{}\n[transcode]\n[[transcode.rungs]]\nname = \"r180\"\nheight = 180\nbitrate_kbps = 300\n\
         [[transcode.tiers]]\nmin_viewers = 0\nrungs = [\"r180\"]\n",
        conformance::CONFIG
    )));
    let tmp = tempfile::tempdir().unwrap();
    let part = |name: &str, width: u32, seconds: f64, offset: &str| {
        let mut s = Source::small(seconds);
        (s.width, s.gop) = (width, 30);
        let mut args = file_args(&s);
        args.extend(["-output_ts_offset", offset, "-f", "mpegts", "-y"].map(String::from));
        args.push(tmp.path().join(name).to_string_lossy().into_owned());
        ffmpeg_file(&args);
    };
    part("a.ts", 640, 8.0, "0");
    part("b.ts", 480, 16.0, "8");
    let mut joined = std::fs::read(tmp.path().join("a.ts")).unwrap();
    joined.extend(std::fs::read(tmp.path().join("b.ts")).unwrap());
    let both = tmp.path().join("ab.ts");
    std::fs::write(&both, joined).unwrap();
    let url = server.srt_url(&format!("live/{}", common::KEY));
    let args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-re", "-i"]
        .map(String::from)
        .into_iter()
        .chain([both.to_string_lossy().into_owned()])
        .chain(["-c", "copy", "-f", "mpegts", &url].map(String::from))
        .collect();
    let _publisher = Publisher::command(&args);
    let base = server.base();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        // Until the rung's playlist has 4 complete segments after its discontinuity.
        let url = format!("{base}/live/cam/r180/index.m3u8");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let (_, text) = hls::get_text(&c, &url).await;
            let after = hls::MediaPlaylist::parse(&text).map_or(0, |p| {
                p.segments
                    .iter()
                    .skip_while(|s| !s.discontinuity)
                    .filter(|s| s.uri.is_some())
                    .count()
            });
            if after >= 4 {
                assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
                break;
            }
            assert!(Instant::now() < deadline, "no new size on r180:\n{text}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (rung, rung_all) = last_segments(&c, &base, "r180", 3, tmp.path()).await;
        let (src, src_all) = last_segments(&c, &base, "source", 7, tmp.path()).await;
        for seg in &rung {
            assert!(
                seg.starts_with_key,
                "{seg:?} does not start with a keyframe"
            );
            assert_eq!(seg.keyframes, 1, "{seg:?}: an IDR inside a segment");
        }
        assert_aligned(("source", &src), ("r180", &rung), 2);
        assert_eq!(
            common::decode_errors(&rung_all),
            None,
            "r180 does not decode"
        );
        assert_eq!(video_stream(&rung_all).0, 240, "r180 after the change");
        assert_eq!(video_stream(&src_all).0, 480, "the source after the change");
        // Before the change: the first segments of the rung, at 320x180.
        let (_, text) = hls::get_text(&c, &url).await;
        let pl = hls::MediaPlaylist::parse(&text).unwrap();
        let first = pl.segments.iter().find(|s| s.uri.is_some()).unwrap();
        let map = first.map.clone().unwrap();
        let (_, init) = hls::get_bytes(&c, &format!("{base}/live/cam/r180/{map}")).await;
        let (_, seg) = hls::get_bytes(
            &c,
            &format!("{base}/live/cam/r180/{}", first.uri.clone().unwrap()),
        )
        .await;
        let early = common::write_media(tmp.path(), "early.mp4", &init, &[&seg]);
        assert_eq!(
            common::decode_errors(&early),
            None,
            "r180 before the change"
        );
        assert_eq!(video_stream(&early).0, 320, "r180 before the change");
    });
}

/// A publisher whose video stops after 6 s while its audio goes on: the rung's playlist keeps
/// advancing with audio (as the source's does), no stall for its viewers.
#[test]
fn video_that_stops_while_audio_goes_on_keeps_the_rung_flowing() {
    let _turn = turn();
    let server = Server::start(&common::config(&format!(
        "{}\n[transcode]\n[[transcode.rungs]]\nname = \"r180\"\nheight = 180\nbitrate_kbps = 300\n\
         [[transcode.tiers]]\nmin_viewers = 0\nrungs = [\"r180\"]\n",
        conformance::CONFIG
    )));
    let mut source = Source::small(22.0);
    source.gop = 30;
    let mut args: Vec<String> = source
        .ffmpeg_args()
        .into_iter()
        .map(|a| {
            if a.starts_with("testsrc2=") {
                format!("{a}:duration=6")
            } else {
                a
            }
        })
        .chain([
            "-f".to_owned(),
            "flv".to_owned(),
            server.rtmp_url(common::KEY),
        ])
        .collect();
    // `-re` paces only the input after it: the audio, alone after 6 s, needs its own; and the
    // FLV muxer would hold audio for its 10 s interleaving delay once video has ended.
    let sine = args.iter().position(|a| a.starts_with("sine=")).unwrap();
    args.insert(sine - 3, "-re".to_owned());
    let out = args.len() - 3;
    args.splice(
        out..out,
        ["-max_interleave_delta", "200000"].map(String::from),
    );
    let _publisher = Publisher::command(&args);
    let base = server.base();
    let tmp = tempfile::tempdir().unwrap();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        wait_segments(&c, &base, "r180", 3).await;
        // Video has stopped after 6 s; by 16 s the rung has had 10 s of audio alone.
        let url = format!("{base}/live/cam/r180/index.m3u8");
        let last = |t: &str| {
            hls::MediaPlaylist::parse(t)
                .ok()
                .and_then(|p| {
                    p.segments
                        .iter()
                        .rev()
                        .find(|s| s.uri.is_some())
                        .map(|s| s.msn)
                })
                .unwrap_or(0)
        };
        tokio::time::sleep(Duration::from_secs(8)).await;
        let at_8 = last(&hls::get_text(&c, &url).await.1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, text) = hls::get_text(&c, &url).await;
        assert!(
            last(&text) >= at_8 + 3,
            "r180 stopped advancing without video (at {at_8}):\n{text}"
        );
        assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
        let pl = hls::MediaPlaylist::parse(&text).unwrap();
        let s = pl.segments.iter().rev().find(|s| s.uri.is_some()).unwrap();
        let map = s.map.clone().unwrap_or_else(|| "init.mp4".into());
        let (_, init) = hls::get_bytes(&c, &format!("{base}/live/cam/r180/{map}")).await;
        let (_, seg) = hls::get_bytes(
            &c,
            &format!("{base}/live/cam/r180/{}", s.uri.clone().unwrap()),
        )
        .await;
        let path = common::write_media(tmp.path(), "late.mp4", &init, &[&seg]);
        let packets = common::packets(&path);
        assert!(
            packets.iter().any(|p| !p.video),
            "no audio in the rung's latest segment"
        );
        assert!(
            !packets.iter().any(|p| p.video),
            "video in the rung after the source's stopped"
        );
    });
}

/// Odd dimensions and 29.97 fps: 1278x718 4:2:0 at 30000/1001 and 1279x719 4:4:4 (x264 cannot
/// make odd 4:2:0) through a 360-line rung: even rung sizes with the aspect ratio kept, the
/// source's frame rate, IDRs only at the source's keyframes and aligned with its segments.
#[test]
fn odd_dimensions_and_29_97_fps() {
    let _turn = turn();
    let config = common::config(&format!(
        "{}\n[transcode]\n[[transcode.rungs]]\nname = \"r360\"\nheight = 360\nbitrate_kbps = 800\n\
         [[transcode.tiers]]\nmin_viewers = 0\nrungs = [\"r360\"]\n",
        conformance::CONFIG
    ));
    for (width, height, fps, pix) in [
        (1278, 718, "30000/1001", "yuv420p"),
        (1279, 719, "30", "yuv444p"),
    ] {
        let server = Server::start(&config);
        let source = Source {
            width,
            height,
            fps,
            gop: 30,
            seconds: 16.0,
            video_bitrate: "1500k",
            audio_only: false,
        };
        let args: Vec<String> = source
            .ffmpeg_args()
            .into_iter()
            .map(|a| match a.as_str() {
                "yuv420p" => pix.to_owned(),
                "high" if pix == "yuv444p" => "high444".to_owned(),
                "veryfast" => "ultrafast".to_owned(),
                _ => a,
            })
            .chain([
                "-f".to_owned(),
                "flv".to_owned(),
                server.rtmp_url(common::KEY),
            ])
            .collect();
        let _publisher = Publisher::command(&args);
        let base = server.base();
        let tmp = tempfile::tempdir().unwrap();
        common::runtime().block_on(async {
            let c = hls::client();
            hls::wait_stream(&c, &base, "cam").await;
            wait_segments(&c, &base, "r360", 5).await;
            let (rung, rung_all) = last_segments(&c, &base, "r360", 4, tmp.path()).await;
            let (src, _) = last_segments(&c, &base, "source", 8, tmp.path()).await;
            for seg in &rung {
                assert!(
                    seg.starts_with_key,
                    "{width}x{height}: {seg:?} does not start with a keyframe"
                );
                assert_eq!(
                    seg.keyframes, 1,
                    "{width}x{height}: {seg:?}: an IDR inside a segment"
                );
            }
            assert_aligned(("source", &src), ("r360", &rung), 3);
            assert_eq!(
                common::decode_errors(&rung_all),
                None,
                "{width}x{height}: r360 does not decode"
            );
            let (w, h, rate) = video_stream(&rung_all);
            let exact = f64::from(width) * 360.0 / f64::from(height);
            assert!(
                h == 360 && w % 2 == 0 && (f64::from(w) - exact).abs() <= 2.0,
                "{width}x{height} → {w}x{h}"
            );
            let want = if fps == "30" { 30.0 } else { 30000.0 / 1001.0 };
            assert!(
                (rate - want).abs() < 0.05,
                "{width}x{height}: r360 at {rate} fps, not {want}"
            );
        });
    }
}

/// `--transcoder nvenc` where `h264_nvenc` does not open (no GPU, no driver) stops the start-up
/// with the reason; an unknown encoder is refused by the flag parser.
#[test]
fn transcoder_nvenc_without_a_usable_gpu_is_a_start_up_error() {
    let _turn = turn();
    let serve = |transcoder: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferrocast"))
            .args(["serve", "--transcoder", transcoder])
            .args([
                "--rtmp",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--srt",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap()
    };
    let out = serve("quicksync");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auto, cpu, nvenc"));
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("an NVIDIA device is here: bench/nvenc.sh checks the GPU path");
        return;
    }
    let out = serve("nvenc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a GPU: {err}");
    assert!(err.contains("h264_nvenc does not open here"), "{err}");
}
