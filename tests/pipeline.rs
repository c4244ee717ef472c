//! The stream fan-out and renditions as a list ("Make room for the ladder"): a stalled
//! consumer never slows the source rendition; a stream with two renditions passes every LL-HLS
//! check on both, with rendition reports for each other.

#![allow(clippy::unwrap_used)]

mod common;

use common::{conformance, hls, Publisher, Server, Source};
use media::fanout::StreamEventKind;
use std::time::{Duration, Instant};

/// A consumer that reads nothing for 10 s while a real ffmpeg publishes over RTMP: the
/// source playlist keeps advancing without a discontinuity, the consumer then resumes at a
/// video keyframe, and its lag is counted in `/metrics`.
#[test]
fn a_stalled_consumer_never_slows_the_stream() {
    let rt = common::runtime();
    rt.block_on(async {
        let mut cfg: ferrocast::config::Config =
            toml::from_str(&common::config("part_target = 0.333\ntarget_duration = 1")).unwrap();
        cfg.rtmp = "127.0.0.1:0".into();
        cfg.http = "127.0.0.1:0".into();
        cfg.srt = "127.0.0.1:0".into();
        cfg.validate().unwrap();
        let origin = ferrocast::app::start_origin(cfg).await.unwrap();
        let base = format!("http://{}", origin.http);
        let mut source = Source::small(40.0);
        source.gop = 30;
        let _publisher = Publisher::rtmp(
            &format!("rtmp://{}/live/{}", origin.rtmp, common::KEY),
            &source,
        );
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let fanout = origin.hub.source("cam").expect("the stream's fan-out");
        let mut stalled = fanout.subscribe("stalled");

        let followed = hls::follow(
            &c,
            &format!("{base}/live/cam/source/index.m3u8"),
            Duration::from_secs(10),
        )
        .await;
        assert!(followed.errors.is_empty(), "{:?}", followed.errors);
        let msns: Vec<u64> = followed.entries.keys().copied().collect();
        let first = followed.playlists.first().unwrap().media_sequence;
        let last = *msns.last().unwrap();
        assert!(
            last >= first + 7,
            "the source playlist advanced {} segments of 1 s in 10 s",
            last - first
        );
        assert!(
            followed.entries.values().all(|s| !s.discontinuity),
            "no discontinuity while a consumer stalls"
        );
        let slow = followed
            .blocking_times
            .iter()
            .filter(|t| **t > Duration::from_millis(1500))
            .count();
        assert_eq!(slow, 0, "blocking reloads answered within a part or two");

        assert!(stalled.lags() >= 1, "the stalled consumer lagged");
        // It resumes: its first frame after the lag is a video keyframe.
        let end = Instant::now() + Duration::from_secs(10);
        let first_frame = loop {
            let ev = tokio::time::timeout_at(end.into(), stalled.recv())
                .await
                .expect("events flow again")
                .expect("stream still live");
            if let StreamEventKind::Frame(f) = ev.kind {
                break f;
            }
        };
        assert!(
            first_frame.keyframe && first_frame.track == media::Track::Video,
            "resumed at a keyframe: {first_frame:?}"
        );
        let (_, metrics) = hls::get_text(&c, &format!("{base}/metrics")).await;
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("ferrocast_consumer_lagged_total")
                    && l.contains("consumer=\"stalled\"")
            })
            .unwrap_or_default()
            .to_owned();
        let lagged: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(lagged >= 1, "lag counted in /metrics: {line:?}");
        let source_lag = metrics
            .lines()
            .find(|l| {
                l.starts_with("ferrocast_consumer_lagged_total")
                    && l.contains("consumer=\"packager:source\"")
            })
            .unwrap_or_default()
            .to_owned();
        assert!(
            source_lag.ends_with(" 0"),
            "the packager never lagged: {source_lag}"
        );
        origin.stop().await;
    });
}

/// Two renditions of one stream (the source and a copy of it under another id): the
/// multivariant lists both, each media playlist reports the other within one part of the
/// truth, and both pass every conformance check.
#[test]
fn two_renditions_pass_every_check_and_report_each_other() {
    let server = Server::start(&common::config(&format!(
        "{}\ncopy_renditions = [\"copy\"]",
        conformance::CONFIG
    )));
    let mut publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &conformance::source());
    let failures = common::runtime().block_on(conformance::check_renditions(
        &server.base(),
        &mut publisher,
        &["source", "copy"],
    ));
    assert!(
        failures.is_empty(),
        "LL-HLS rules broken with two renditions:\n{}",
        failures.join("\n")
    );
}
