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

#[test]
fn a_720p_b_frame_publish_gets_the_source_and_an_aligned_480p_rung() {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, text) = hls::get_text(&c, &format!("{base}/live/cam/480p/index.m3u8")).await;
            let complete = hls::MediaPlaylist::parse(&text)
                .map(|p| p.segments.iter().filter(|s| s.uri.is_some()).count())
                .unwrap_or(0);
            if complete >= 6 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        // The same media sequence numbers in both renditions, fetched whole.
        let mut firsts = Vec::new();
        for rendition in ["source", "480p"] {
            let url = format!("{base}/live/cam/{rendition}/index.m3u8");
            let (_, text) = hls::get_text(&c, &url).await;
            let pl = hls::MediaPlaylist::parse(&text).unwrap();
            let (_, init) =
                hls::get_bytes(&c, &format!("{base}/live/cam/{rendition}/init.mp4")).await;
            let track = player_test::mp4::video_track(&init).unwrap();
            let mut per_msn = std::collections::BTreeMap::new();
            let mut all = init.clone();
            let complete: Vec<_> = pl.segments.iter().filter(|s| s.uri.is_some()).collect();
            for s in &complete[complete.len().saturating_sub(4)..] {
                let uri = s.uri.as_ref().unwrap();
                let (status, seg) =
                    hls::get_bytes(&c, &format!("{base}/live/cam/{rendition}/{uri}")).await;
                assert_eq!(status, 200, "{rendition}/{uri}");
                let path = common::write_media(
                    tmp.path(),
                    &format!("{rendition}-{uri}.mp4"),
                    &init,
                    &[&seg],
                );
                let packets = common::packets(&path);
                let first = packets.iter().find(|p| p.video).unwrap().clone();
                assert!(
                    first.keyframe,
                    "{rendition}/{uri} does not start with a keyframe"
                );
                // The presentation time as MSE reads it (ffprobe shifts a B-frame track's).
                let run = player_test::mp4::video_run(&seg, track).unwrap().unwrap();
                let presented = (run.first_presented_secs * 90_000.0).round() as i64;
                per_msn.insert(s.msn, presented);
                all.extend_from_slice(&seg);
            }
            let whole = tmp.path().join(format!("{rendition}-all.mp4"));
            std::fs::write(&whole, &all).unwrap();
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
            firsts.push(per_msn);
        }
        let common_msns: Vec<_> = firsts[0]
            .keys()
            .filter(|m| firsts[1].contains_key(m))
            .collect();
        assert!(common_msns.len() >= 3, "{firsts:?}");
        for msn in common_msns {
            let (a, b) = (firsts[0][msn], firsts[1][msn]);
            assert!(
                (a - b).abs() <= 1,
                "segment {msn} starts at {a} in the source and {b} in 480p"
            );
        }

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
