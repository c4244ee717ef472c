//! Acceptance 3: publisher drop and reconnect. A publisher killed and restarted within the
//! grace period continues the same playlist (same session, media sequence numbers continue,
//! EXT-X-DISCONTINUITY at the splice, no ENDLIST); killed for longer, the playlist ends. Also:
//! a second publisher with the same key takes a live stream over.

#![allow(clippy::unwrap_used)]

mod common;

use common::hls::{self, MediaPlaylist};
use common::{Publisher, Server, Source};
use std::time::{Duration, Instant};

async fn playlist(c: &reqwest::Client, url: &str) -> (MediaPlaylist, String) {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let session = r
        .headers()
        .get("x-ferrocast-session")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        MediaPlaylist::parse(&r.text().await.unwrap()).unwrap(),
        session,
    )
}

/// Waits until the playlist's last complete segment is past `msn`.
async fn wait_past(c: &reqwest::Client, url: &str, msn: u64, timeout: Duration) -> MediaPlaylist {
    let end = Instant::now() + timeout;
    loop {
        let (pl, _) = playlist(c, url).await;
        if pl.last_complete_msn().is_some_and(|m| m > msn) || Instant::now() > end {
            return pl;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn reconnect_within_grace_continues_and_expiry_ends() {
    let server = Server::start(&common::config("grace_period = 4.0"));
    let url = format!("{}/live/cam/source/index.m3u8", server.base());
    let rt = common::runtime();
    rt.block_on(async {
        let c = hls::client();
        let mut first = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::small(30.0));
        let (status, _) = hls::wait_for(&c, &url).await;
        assert_eq!(status, 200);
        let (before, session) = playlist(&c, &url).await;
        let before = wait_past(
            &c,
            &url,
            before.last_complete_msn().unwrap() + 1,
            Duration::from_secs(10),
        )
        .await;
        let last_before = before.last_complete_msn().unwrap();

        // Kill the publisher and come back within the grace period.
        first.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (during, _) = playlist(&c, &url).await;
        assert!(
            !during.endlist,
            "ENDLIST during the grace period:\n{}",
            during.text
        );
        let hint = during
            .preload_hint
            .clone()
            .expect("preload hint during grace");
        let mut second = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::small(30.0));
        let after = wait_past(&c, &url, last_before + 3, Duration::from_secs(15)).await;
        let (_, session_after) = playlist(&c, &url).await;
        assert_eq!(
            session, session_after,
            "a reconnect keeps the stream session"
        );
        assert!(!after.endlist);
        // Media sequence numbers continue: every MSN between is listed once, in order.
        let msns: Vec<u64> = after.segments.iter().map(|s| s.msn).collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
        let splice = after
            .segments
            .iter()
            .find(|s| s.discontinuity)
            .unwrap_or_else(|| panic!("no EXT-X-DISCONTINUITY at the splice:\n{}", after.text));
        assert!(
            splice.msn > last_before,
            "discontinuity at {} <= {last_before}",
            splice.msn
        );
        assert_eq!(
            hint,
            format!("{}.0.m4s", splice.msn),
            "the hint given during the grace period names the first part after the splice"
        );
        // Output timestamps stay monotonic across the splice.
        let (status, init) = hls::get_bytes(&c, &url.replace("index.m3u8", "init.mp4")).await;
        assert_eq!(status, 200);
        let dir = tempfile::tempdir().unwrap();
        let mut last_end = None;
        for msn in splice.msn - 1..=splice.msn {
            let (status, seg) =
                hls::get_bytes(&c, &url.replace("index.m3u8", &format!("{msn}.m4s"))).await;
            assert_eq!(status, 200);
            let path = common::write_media(dir.path(), &format!("{msn}.mp4"), &init, &[&seg]);
            assert_eq!(common::decode_errors(&path), None, "segment {msn} decodes");
            let pk = common::packets(&path);
            let first_dts = pk.iter().filter(|p| p.video).map(|p| p.dts).min().unwrap();
            let max_dts = pk.iter().filter(|p| p.video).map(|p| p.dts).max().unwrap();
            if let Some(prev) = last_end {
                assert!(
                    first_dts > prev,
                    "timestamps step back across the splice: {first_dts} <= {prev}"
                );
                assert!(
                    first_dts - prev < 90_000,
                    "timestamp jump across the splice"
                );
            }
            last_end = Some(max_dts);
        }

        // A takeover: another publisher with the same key while this one is live.
        let mut third = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::small(30.0));
        let t = Instant::now();
        while !second.exited() && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            second.exited(),
            "the old publisher was not disconnected by the takeover"
        );
        let taken = wait_past(
            &c,
            &url,
            after.last_complete_msn().unwrap() + 2,
            Duration::from_secs(15),
        )
        .await;
        assert!(!taken.endlist);
        assert!(
            server.log().contains("taken over by a new publisher"),
            "takeover not logged"
        );

        // Now stay away longer than the grace period: the playlist ends.
        third.kill();
        let end = Instant::now() + Duration::from_secs(15);
        let mut ended = taken;
        while !ended.endlist && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(250)).await;
            ended = playlist(&c, &url).await.0;
        }
        assert!(
            ended.endlist,
            "no ENDLIST after the grace period:\n{}",
            ended.text
        );
        assert!(ended.preload_hint.is_none());
    });
}
