//! Player telemetry (CMCD, CTA-5004) end to end: viewers send CMCD as hls.js does (the `CMCD`
//! query parameter) through an edge and as Shaka can (the four `CMCD-*` headers) at the
//! origin; `/api/streams` shows their buffer length, bitrate, throughput, starvation and
//! start-up per rendition, the edge's via its report. Broken CMCD — truncated, wrong types, a
//! 10 KB value — is counted and ignored: every such request is still answered 200.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Cluster, Publisher, Source};
use std::time::{Duration, Instant};

/// Percent-encodes a CMCD payload for the query (everything but unreserved characters).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn status(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = c.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn metric_sum(c: &reqwest::Client, url: &str, prefix: &str) -> f64 {
    let (_, text) = hls::get_text(c, url).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn cmcd_reaches_the_api_and_broken_cmcd_is_counted_never_refused() {
    let cluster = Cluster::start(1, &common::config(""), &[]);
    let _publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &Source::small(45.0));
    let origin = cluster.origin_base();
    let edge = cluster.edge_base(0);
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &origin, "cam").await;
        let playlist = |base: &str| format!("{base}/live/cam/source/index.m3u8");
        // hls.js through the edge: the query parameter, on the playlist and on a part.
        let p1 = encode("bl=1800,br=1500,mtp=25000,ot=av,sf=h,sid=\"p1\",st=ll,su");
        assert_eq!(
            status(&c, &format!("{}?CMCD={p1}", playlist(&edge)), &[]).await,
            200
        );
        let (_, text) = hls::get_text(&c, &playlist(&edge)).await;
        let pl = hls::MediaPlaylist::parse(&text).unwrap();
        let part = pl
            .segments
            .iter()
            .flat_map(|s| &s.parts)
            .next()
            .map(|p| p.uri.clone())
            .unwrap();
        let part_url = format!(
            "{edge}/live/cam/source/{part}?CMCD={}",
            encode("bl=1700,sid=\"p1\",ot=av,d=333")
        );
        assert_eq!(status(&c, &part_url, &[]).await, 200);
        // Another player at the origin, with the headers; its buffer ran dry once.
        let headers = [
            ("CMCD-Request", "bl=600,mtp=9000"),
            ("CMCD-Object", "br=1200,ot=av"),
            ("CMCD-Status", "bs"),
            ("CMCD-Session", "sid=\"p2\",st=ll,sf=h,v=1"),
        ];
        assert_eq!(status(&c, &playlist(&origin), &headers).await, 200);

        // Broken CMCD at both: answered 200 every time.
        let huge = format!("sid=\"{}\"", "x".repeat(10 * 1024));
        for bad in ["bl=12,br=\"fast\",bs=3", "sid=\"truncat", huge.as_str()] {
            let url = format!("{}?CMCD={}", playlist(&edge), encode(bad));
            assert_eq!(status(&c, &url, &[]).await, 200, "edge, CMCD {:.40}", bad);
            let url = format!("{}?CMCD={}", playlist(&origin), encode(bad));
            assert_eq!(status(&c, &url, &[]).await, 200, "origin, CMCD {:.40}", bad);
            let header = [("CMCD-Request", bad)];
            assert_eq!(
                status(&c, &playlist(&origin), &header).await,
                200,
                "origin header {:.40}",
                bad
            );
        }

        // The edge's players arrive with its next report (every second).
        let deadline = Instant::now() + Duration::from_secs(15);
        let players = loop {
            let (_, text) = hls::get_text(&c, &format!("{origin}/api/streams")).await;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let p = v["streams"][0]["players"]["source"].clone();
            if p["sessions"].as_u64() >= Some(2) && p["malformed"].as_u64() >= Some(9) {
                break p;
            }
            assert!(Instant::now() < deadline, "players: {p}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        eprintln!("players {players}");
        // A steady local publisher: its uplink is healthy, and the figures are there.
        let (_, text) = hls::get_text(&c, &format!("{origin}/api/streams")).await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let uplink = &v["streams"][0]["uplink"];
        assert_eq!(uplink["degraded"], false, "{uplink}");
        assert!(
            uplink["lag_seconds"].as_f64().is_some_and(|l| l < 1.5),
            "{uplink}"
        );
        assert!(
            uplink["bitrate"].as_f64().is_some_and(|b| b > 100_000.0),
            "{uplink}"
        );
        assert_eq!(
            players["sessions"], 2,
            "p1 (edge) and p2 (origin): {players}"
        );
        // p1's latest buffer 1700 ms, p2's 600 ms.
        assert_eq!(players["buffer_ms"], 1150, "{players}");
        assert_eq!(players["bitrate_kbps"], 1350, "{players}");
        assert_eq!(players["throughput_kbps"], 17000, "{players}");
        assert_eq!(players["starvations"], 1, "{players}");
        assert_eq!(players["startups"], 1, "{players}");
        let malformed = r#"ferrocast_cmcd_requests_total{result="malformed"}"#;
        assert_eq!(
            metric_sum(&c, &format!("{origin}/metrics"), malformed).await,
            6.0
        );
        let malformed = r#"ferrocast_edge_cmcd_requests_total{result="malformed"}"#;
        assert_eq!(
            metric_sum(&c, &format!("{edge}/metrics"), malformed).await,
            3.0
        );
    });
}
