//! `/metrics` of origin and edge: the Prometheus text passes `promtool check metrics` during a
//! real publish with a viewer, and requests for made-up stream paths add no series.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Cluster, Publisher, Source};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs Debian's `promtool check metrics` on `text`; returns its complaints.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by test.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// Series (sample lines) in an exposition.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .filter(|s| !s.starts_with("process_"))
        .collect()
}

#[test]
fn metrics_pass_promtool_and_made_up_paths_add_no_series() {
    let cluster = Cluster::start(1, &common::config("target_duration = 1"), &[]);
    let mut source = Source::small(40.0);
    source.gop = 30;
    let _publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &source);
    let rt = common::runtime();
    rt.block_on(async {
        let c = hls::client();
        let edge = cluster.edge_base(0);
        let origin = cluster.origin_base();
        hls::wait_stream(&c, &edge, "cam").await;
        // A viewer through the edge (its session id makes it count).
        let (_, master) = hls::get_text(&c, &format!("{edge}/live/cam/index.m3u8")).await;
        let media = master
            .lines()
            .find(|l| l.starts_with("source/"))
            .unwrap()
            .to_owned();
        let f = hls::follow(
            &c,
            &format!("{edge}/live/cam/{media}"),
            Duration::from_secs(4),
        )
        .await;
        assert!(f.errors.is_empty(), "{:?}", f.errors);

        let (status, origin_text) = hls::get_text(&c, &format!("{origin}/metrics")).await;
        assert_eq!(status, 200);
        promtool(&origin_text).unwrap_or_else(|e| panic!("origin /metrics: {e}\n{origin_text}"));
        for family in [
            "ferrocast_publishes_total",
            "ferrocast_ingest_frames_total",
            "ferrocast_part_publish_delay_seconds_bucket",
            "ferrocast_consumer_lagged_total",
            "ferrocast_http_responses_total",
            "process_resident_memory_bytes",
        ] {
            assert!(origin_text.contains(family), "origin lacks {family}");
        }

        let (status, edge_text) = hls::get_text(&c, &format!("{edge}/metrics")).await;
        assert_eq!(status, 200);
        promtool(&edge_text).unwrap_or_else(|e| panic!("edge /metrics: {e}\n{edge_text}"));
        assert!(
            edge_text.contains("ferrocast_edge_viewers{rendition=\"source\",stream=\"cam\"} 1"),
            "the viewer is counted:\n{edge_text}"
        );
        let before = series(&edge_text);

        // 1000 requests for made-up streams and renditions, each with a session id.
        for i in 0..1000 {
            let path = match i % 4 {
                0 => format!("/live/x{i}/index.m3u8?fcsid=s{i}"),
                1 => format!("/live/x{i}/source/index.m3u8?fcsid=s{i}"),
                2 => format!("/live/cam/r{i}/index.m3u8?fcsid=s{i}"),
                _ => format!("/live/x{i}/source/{i}.0.m4s?fcsid=s{i}"),
            };
            let (status, _) = hls::get_text(&c, &format!("{edge}{path}")).await;
            assert_eq!(status, 404, "{path}");
        }
        let (_, edge_after) = hls::get_text(&c, &format!("{edge}/metrics")).await;
        let after = series(&edge_after);
        let added: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
        assert!(added.is_empty(), "made-up paths added series: {added:?}");
        let (_, origin_after) = hls::get_text(&c, &format!("{origin}/metrics")).await;
        let before_o = series(&origin_text);
        let added: Vec<_> = series(&origin_after)
            .into_iter()
            .filter(|s| !before_o.contains(s))
            .filter(|s| !s.contains("route=\"metrics\""))
            .collect();
        assert!(
            added.iter().all(|s| s.contains("status=\"404\"")),
            "only the bounded 404 counters may appear at the origin: {added:?}"
        );
    });
}
