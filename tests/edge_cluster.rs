//! Edge acceptance through `deploy/local-cluster.sh` (origin + edges as local processes):
//! coalescing (one origin fetch per object per edge under 300 viewers), streaming of hinted
//! parts through the edge, stale playlists while the origin is paused, the director dropping a
//! dead edge, and viewer counting across edges.

#![allow(clippy::unwrap_used)]

mod common;

use common::hls::{self, MediaPlaylist, ViewerStats};
use common::{Cluster, Publisher, Source};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn three_hundred_viewers_cost_one_origin_fetch_per_object_per_edge() {
    let cluster = Cluster::start(2, &common::config("grace_period = 3.0"), &[]);
    let _publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &Source::small(50.0));
    let rt = common::runtime();
    let stats = Arc::new(ViewerStats::default());
    rt.block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &cluster.origin_base(), "cam").await;
        // A hinted part through an edge: its first bytes arrive before the part is complete at
        // the origin (watched by a direct download of the same part from the origin).
        let edge_media = format!("{}/live/cam/source/index.m3u8", cluster.edge_base(0));
        let mut early = 0;
        for _ in 0..3 {
            let pl = MediaPlaylist::parse(&hls::get_text(&c, &edge_media).await.1).unwrap();
            let hint = pl.preload_hint.clone().unwrap();
            let origin_part = format!("{}/live/cam/source/{hint}", cluster.origin_base());
            let edge_part = format!("{}/live/cam/source/{hint}", cluster.edge_base(0));
            let c2 = c.clone();
            let origin_done = tokio::spawn(async move {
                let r = c2.get(origin_part).send().await.unwrap();
                let _ = r.bytes().await.unwrap();
                Instant::now()
            });
            let mut r = c.get(edge_part).send().await.unwrap();
            let first = r.chunk().await.unwrap().map(|_| Instant::now());
            while r.chunk().await.unwrap().is_some() {}
            let origin_complete = origin_done.await.unwrap();
            if first.is_some_and(|f| f + Duration::from_millis(50) < origin_complete) {
                early += 1;
            }
        }
        assert!(
            early >= 2,
            "hinted part bytes did not reach the edge viewer before the part was complete"
        );

        // 300 viewers, half on each edge, each with its own session, for 30 s.
        let until = Instant::now() + Duration::from_secs(30);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let edge = cluster.edge_base(i % 2);
            let url = format!("{edge}/live/cam/source/index.m3u8?fcsid=viewer-{i}");
            tasks.spawn(hls::light_viewer(
                hls::client(),
                url,
                until,
                Arc::clone(&stats),
            ));
        }
        while tasks.join_next().await.is_some() {}
    });
    let errors = stats.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} viewer errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let parts = stats.parts.load(Ordering::Relaxed);
    assert!(parts >= 300 * 60, "viewers fetched only {parts} parts");
    // Origin side: every object and every blocking playlist URL at most once per edge.
    let fetches = cluster.origin_fetches();
    let mut media = 0;
    let mut blocking = 0;
    for ((edge, uri), n) in &fetches {
        let edge = edge.trim_matches('"');
        if edge == "-" {
            continue; // the test's own direct requests
        }
        let is_media = uri.ends_with(".m4s") || uri.ends_with(".mp4");
        let is_blocking = uri.contains("_HLS_msn=");
        if is_media {
            media += 1;
        }
        if is_blocking {
            blocking += 1;
        }
        if is_media || is_blocking {
            assert_eq!(*n, 1, "{uri} fetched {n} times by {edge}");
        }
    }
    assert!(
        media > 50 && blocking > 50,
        "too few origin fetches seen: {media} media, {blocking} blocking"
    );
    let total: usize = fetches
        .iter()
        .filter(|((e, _), _)| e.trim_matches('"') != "-")
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "300 viewers: {} playlist + {parts} part requests at the edges; {total} origin fetches",
        stats.playlists.load(Ordering::Relaxed)
    );
}

#[test]
fn origin_pause_serves_stale_and_the_director_drops_a_dead_edge() {
    let cluster = Cluster::start(2, &common::config("grace_period = 10.0"), &[]);
    let _publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &Source::small(45.0));
    let rt = common::runtime();
    rt.block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &cluster.origin_base(), "cam").await;
        let stats = Arc::new(ViewerStats::default());
        let until = Instant::now() + Duration::from_secs(16);
        let mut viewers = tokio::task::JoinSet::new();
        for i in 0..6 {
            let url = format!(
                "{}/live/cam/source/index.m3u8?fcsid=v{i}",
                cluster.edge_base(i % 2)
            );
            viewers.spawn(hls::light_viewer(
                hls::client(),
                url,
                until,
                Arc::clone(&stats),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = MediaPlaylist::parse(
            &hls::get_text(
                &c,
                &format!("{}/live/cam/source/index.m3u8", cluster.edge_base(0)),
            )
            .await
            .1,
        )
        .unwrap();

        Cluster::signal(cluster.origin_pid, "STOP");
        let paused = Instant::now();
        let mut stale = 0;
        while paused.elapsed() < Duration::from_secs(5) {
            for i in 0..2 {
                let r = c
                    .get(format!(
                        "{}/live/cam/source/index.m3u8",
                        cluster.edge_base(i)
                    ))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status(),
                    200,
                    "edge {i} failed a playlist while the origin was paused"
                );
                if r.headers().get("x-ferrocast-stale").is_some() {
                    stale += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Cluster::signal(cluster.origin_pid, "CONT");
        assert!(stale >= 2, "no stale (marked) playlists during the pause");
        // Fresh output again soon after.
        let t = Instant::now();
        let fresh = loop {
            let r = c
                .get(format!(
                    "{}/live/cam/source/index.m3u8",
                    cluster.edge_base(1)
                ))
                .send()
                .await
                .unwrap();
            let is_stale = r.headers().get("x-ferrocast-stale").is_some();
            let pl = MediaPlaylist::parse(&r.text().await.unwrap()).unwrap();
            if !is_stale && pl.last_complete_msn() > before.last_complete_msn() {
                break true;
            }
            if t.elapsed() > Duration::from_secs(8) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            fresh,
            "edges did not resume fresh output after the origin came back"
        );
        while viewers.join_next().await.is_some() {}
        let errors = stats.errors.lock().unwrap().clone();
        assert!(
            errors.iter().all(|e| !e.contains("→ 5")),
            "viewers saw 5xx: {errors:?}"
        );

        // The director spreads viewers over both edges; a killed edge leaves within 5 s.
        let nr = no_redirect_client();
        let watch = format!("{}/watch/cam", cluster.origin_base());
        let location = |r: &reqwest::Response| {
            r.headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let r = nr.get(&watch).send().await.unwrap();
            assert_eq!(r.status(), 302);
            seen.insert(location(&r));
        }
        assert_eq!(seen.len(), 2, "director used {seen:?}");
        let dead = cluster.edge_base(1);
        Cluster::signal(cluster.edges[1].0, "KILL");
        let killed = Instant::now();
        let gone = loop {
            let mut any_dead = false;
            for _ in 0..10 {
                let r = nr.get(&watch).send().await.unwrap();
                any_dead |= location(&r).starts_with(&dead);
            }
            if !any_dead {
                break killed.elapsed();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "director still sends viewers to a dead edge"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            gone <= Duration::from_secs(5),
            "dead edge left the director's set after {gone:?}"
        );
    });
}

/// Polls the origin's viewer total until it equals `want`, failing after `limit`.
async fn wait_total<F, Fut>(
    viewers: &F,
    c: &reqwest::Client,
    want: u64,
    limit: Duration,
    what: &str,
) where
    F: Fn(reqwest::Client) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value>,
{
    let t = Instant::now();
    loop {
        let v = viewers(c.clone()).await;
        if v["total"] == want {
            return;
        }
        assert!(t.elapsed() < limit, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn viewers_are_counted_across_edges_and_expire() {
    let cluster = Cluster::start(
        2,
        &common::config("grace_period = 10.0"),
        &["--viewer-window", "4"],
    );
    let _publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &Source::small(50.0));
    let rt = common::runtime();
    rt.block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &cluster.origin_base(), "cam").await;
        let api = format!("{}/api/streams", cluster.origin_base());
        let viewers = |c: reqwest::Client| {
            let api = api.clone();
            async move {
                let v: serde_json::Value =
                    serde_json::from_str(&hls::get_text(&c, &api).await.1).unwrap();
                v["streams"][0]["viewers"].clone()
            }
        };
        // 12 viewers: 7 on edge 1, 5 on edge 2, each given a session by the edge's
        // multivariant playlist (as a player would follow it).
        let run = |n_by_edge: Vec<(usize, usize)>, secs: u64| {
            let mut set = tokio::task::JoinSet::new();
            let until = Instant::now() + Duration::from_secs(secs);
            for (edge, n) in n_by_edge {
                for _ in 0..n {
                    let base = cluster.edge_base(edge);
                    set.spawn(async move {
                        let c = hls::client();
                        let master = hls::get_text(&c, &format!("{base}/live/cam/index.m3u8"))
                            .await
                            .1;
                        let uri = master
                            .lines()
                            .find(|l| !l.starts_with('#'))
                            .unwrap()
                            .to_owned();
                        assert!(uri.contains("fcsid="), "{master}");
                        let stats = Arc::new(ViewerStats::default());
                        hls::light_viewer(c, format!("{base}/live/cam/{uri}"), until, stats).await;
                    });
                }
            }
            set
        };
        let mut set = run(vec![(0, 7), (1, 5)], 14);
        let t = Instant::now();
        let seen = loop {
            let v = viewers(c.clone()).await;
            if v["total"] == 12 || t.elapsed() > Duration::from_secs(10) {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(seen["total"], 12, "{seen}");
        assert_eq!(seen["edges"]["edge-1"]["source"], 7, "{seen}");
        assert_eq!(seen["edges"]["edge-2"]["source"], 5, "{seen}");
        assert_eq!(seen["renditions"]["source"], 12, "{seen}");
        assert!(
            seen["edges"].get("origin").is_none(),
            "no viewer reached the origin: {seen}"
        );
        while set.join_next().await.is_some() {}
        // They left: the count falls to 0 within the window (4 s) plus a report interval.
        wait_total(
            &viewers,
            &c,
            0,
            Duration::from_secs(8),
            "viewers did not expire",
        )
        .await;
        // A killed edge's viewers expire with it.
        let mut set = run(vec![(1, 5)], 20);
        wait_total(
            &viewers,
            &c,
            5,
            Duration::from_secs(10),
            "viewers on edge 2 not counted",
        )
        .await;
        Cluster::signal(cluster.edges[1].0, "KILL");
        wait_total(
            &viewers,
            &c,
            0,
            Duration::from_secs(8),
            "a dead edge's viewers did not expire",
        )
        .await;
        set.abort_all();
    });
}
