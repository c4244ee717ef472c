//! The browser tests: Debian's Chromium, headless, driven by playwright-core, plays the stream
//! with real web players: Shaka Player from npm (served locally, so the stream is
//! cross-origin) and the server's own built-in page (hls.js, vendored in the binary), both in
//! low-latency mode. The source carries the visual clock code, so the
//! page reads capture → presentation latency from every presented frame, beside the player's
//! own latency estimate; stalls and seeks after the first frame are counted.
//!
//! Needs `chromium` and the npm packages in `player-test/browser` (`./test.sh` installs both).
//! The tests take turns (one publisher, one real-time encoder at a time) and run alone, after
//! every other binary (`tests/lanes.py`). The Shaka test plays two viewers at a time, each in
//! its own browser: about half of a 2-core machine (vmstat: median 51 % idle, p10 20 %).

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Cluster, Publisher, Source};
use player_test::glass::{self, PublishOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("player-test/browser");
    for module in ["playwright-core", "hls.js", "shaka-player"] {
        assert!(
            dir.join("node_modules").join(module).is_dir(),
            "run `npm ci` in {} first (./test.sh does)",
            dir.display()
        );
    }
    dir
}

fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} missing: install Debian's chromium (./test.sh does)"
    );
    chromium
}

/// Plays `url` with `player` for `secs` and returns run.mjs's JSON report.
fn play(player: &str, url: &str, secs: u32, screenshot: Option<&Path>) -> serde_json::Value {
    let dir = browser_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("run.mjs")).args([
        "--url",
        url,
        "--duration",
        &secs.to_string(),
        "--player",
        player,
        "--chromium",
        &chromium(),
    ]);
    if let Some(shot) = screenshot {
        let _ = std::fs::remove_file(shot);
        cmd.arg("--screenshot").arg(shot);
    }
    let out = cmd.output().expect("node (Node.js 20+) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run.mjs failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("{player} report ({url}): {r}");
    r
}

/// A cluster of an origin and one edge, with the test publisher sending `o` over RTMP and
/// the stream up on the origin.
fn cluster_with_publisher(
    o: PublishOptions,
) -> (Cluster, std::thread::JoinHandle<std::io::Result<()>>) {
    let cluster = Cluster::start(1, &common::config(""), &[]);
    let url = cluster.rtmp_url(common::KEY);
    let publisher = std::thread::spawn(move || glass::publish(&url, &o));
    common::runtime().block_on(hls::wait_stream(
        &hls::client(),
        &cluster.origin_base(),
        "cam",
    ));
    // A viewer arriving at a stream that is already running.
    std::thread::sleep(std::time::Duration::from_secs(4));
    (cluster, publisher)
}

/// 0 stalls and 0 seeks after the first frame: a gap jump at a segment boundary is a seek.
fn assert_smooth(r: &serde_json::Value, via: &str) {
    assert_eq!(r["stalls"]["count"], 0, "stalled via {via}: {r}");
    assert_eq!(r["seeks"], 0, "jumped via {via}: {r}");
}

/// What every player must show: no fatal error, frames decoded and presented with a readable
/// clock code, a sane latency, the player's own latency estimate, LL-HLS parts loaded.
fn assert_played(r: &serde_json::Value, secs: u64) {
    assert_eq!(r["fatalErrors"], 0, "player errors: {}", r["errors"]);
    let decoded = r["decodedFrames"].as_u64().unwrap();
    assert!(
        decoded >= secs * 15,
        "only {decoded} frames decoded in {secs} s"
    );
    let coded = r["presentedWithCode"].as_u64().unwrap();
    assert!(
        coded >= secs * 10,
        "only {coded} presented frames with a readable clock code"
    );
    let p50 = r["latencyMs"]["p50"].as_i64().unwrap();
    assert!(
        (100..10_000).contains(&p50),
        "glass-to-glass p50 {p50} ms in the browser"
    );
    assert!(
        r["playerLatencyS"]["samples"].as_u64().unwrap() > 0,
        "the player never reported a latency: {r}"
    );
    assert!(
        r["parts"].as_u64().unwrap() > 0,
        "the player loaded no LL-HLS parts (low-latency mode off?): {r}"
    );
}

/// Shaka Player 4.x in low-latency mode and the built-in page (hls.js with catch-up), each
/// from the origin and through an edge (two viewers at a time, in two browsers), with the
/// source OBS sends by default (B-frames, no zero-latency tuning): 60 s each without a stall
/// and without a seek after the start.
#[test]
fn shaka_and_the_built_in_page_play_a_b_frame_source_without_stalls_from_origin_and_edge() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut o = PublishOptions::new(640, 360, 30, 290.0);
    o.obs_like = true;
    let (cluster, publisher) = cluster_with_publisher(o);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-page.png");
    // Two viewers at a time, each in its own browser: Shaka from one place while the page
    // plays from the other, then the other way round.
    let (origin, edge) = (cluster.origin_base(), cluster.edge_base(0));
    let mut reports = Vec::new();
    for (shaka_from, page_from) in [(&origin, &edge), (&edge, &origin)] {
        let shaka_url = format!("{shaka_from}/live/cam/index.m3u8");
        let shaka = std::thread::spawn(move || play("shaka", &shaka_url, 60, None));
        let page = play("page", &format!("{page_from}/live/cam/"), 60, Some(&shot));
        let shaka = shaka.join().unwrap();
        reports.push((format!("Shaka via {shaka_from}"), shaka));
        reports.push((format!("the built-in page via {page_from}"), page));
    }
    drop(cluster);
    let _ = publisher.join();
    for (via, r) in &reports {
        eprintln!(
            "{via}: glass-to-glass p50 {} ms p95 {} ms (capture→PDT {} ms, PDT→shown {} ms), \
             player latency p50 {} s, stalls {}, seeks {}",
            r["latencyMs"]["p50"],
            r["latencyMs"]["p95"],
            r["captureToPdtMs"]["p50"],
            r["pdtToShownMs"]["p50"],
            r["playerLatencyS"]["p50"],
            r["stalls"]["count"],
            r["seeks"]
        );
        assert_played(r, 60);
        assert_smooth(r, via);
    }
    let page = &reports[1].1;
    assert!(
        page["player"]
            .as_str()
            .unwrap_or("")
            .starts_with("ferrocast page (hls.js) 1."),
        "not the built-in page's hls.js: {page}"
    );
    assert!(
        page["pdtToShownMs"]["samples"].as_u64().unwrap() > 0,
        "the page gave no program date-time: {page}"
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "no screenshot"
    );
}

/// Internet radio: an AAC-only RTMP publish played by the built-in page through an edge.
#[test]
fn the_built_in_page_plays_an_audio_only_stream_through_an_edge() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(1, &common::config(""), &[]);
    let _publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &Source::audio(40.0));
    common::runtime().block_on(hls::wait_stream(
        &hls::client(),
        &cluster.origin_base(),
        "cam",
    ));
    // A listener arriving at a stream that is already running (as the video tests do).
    std::thread::sleep(std::time::Duration::from_secs(4));
    let secs = 20;
    let r = play(
        "page",
        &format!("{}/live/cam/", cluster.edge_base(0)),
        secs,
        None,
    );
    assert_eq!(r["fatalErrors"], 0, "player errors: {}", r["errors"]);
    assert_eq!(r["audioOnly"], true, "{r}");
    let played = r["mediaTimeS"].as_f64().unwrap();
    let ttff = r["ttffMs"].as_f64().unwrap_or(f64::MAX) / 1000.0;
    assert!(
        played >= f64::from(secs) - ttff - 3.0,
        "only {played} s of audio played in {secs} s (first audio after {ttff} s): {r}"
    );
    assert!(r["parts"].as_u64().unwrap() > 0, "no LL-HLS parts: {r}");
    assert!(r["playerLatencyS"]["samples"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["renditions"]["audio"].is_u64(),
        "not the audio rendition: {r}"
    );
    assert_smooth(&r, "the edge");
    // The page's hls.js sends CMCD: the edge reported what that player said to the origin.
    let players = common::runtime().block_on(async {
        let c = hls::client();
        let url = format!("{}/api/streams", cluster.origin_base());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, text) = hls::get_text(&c, &url).await;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let players = v["streams"][0]["players"].clone();
            let seen = players
                .as_object()
                .is_some_and(|p| p.values().any(|r| r["buffer_ms"].is_u64()));
            if seen || std::time::Instant::now() > deadline {
                break players;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    });
    eprintln!("players (CMCD) {players}");
    let rendition = players
        .as_object()
        .and_then(|p| p.values().next().cloned())
        .unwrap_or_default();
    assert!(rendition["sessions"].as_u64() >= Some(1), "{players}");
    assert!(
        rendition["buffer_ms"].is_u64(),
        "no CMCD buffer length: {players}"
    );
    assert!(
        rendition["bitrate_kbps"].is_u64(),
        "no CMCD bitrate: {players}"
    );
    assert_eq!(rendition["malformed"], 0, "{players}");
}

/// The origin's dashboard during a transcoded publish with viewers through an edge and CMCD
/// from players, with an admin token: the read APIs refuse a request without it, the page asks
/// for it, then shows the stream with its session id, its ladder, its viewers per rendition and
/// per edge, and drawn charts. The screenshot is kept as `dashboard.png` in the target's test
/// folder.
#[test]
fn the_dashboard_shows_the_stream_its_ladder_viewers_and_charts_behind_the_admin_token() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const TOKEN: &str = "dashboard-test-admin-token";
    let config = common::config(&format!(
        "admin_token = \"{TOKEN}\"\n[transcode]\n[[transcode.rungs]]\nname = \"r180\"\n\
         height = 180\nbitrate_kbps = 300\n[[transcode.tiers]]\nmin_viewers = 0\n\
         rungs = [\"r180\"]\n"
    ));
    let cluster = Cluster::start(1, &config, &[]);
    let _publisher = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &Source::small(60.0));
    let rt = common::runtime();
    let edge = cluster.edge_base(0);
    let origin = cluster.origin_base();
    let session = rt.block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &edge, "cam").await;
        let r = c.get(format!("{origin}/api/streams")).send().await.unwrap();
        assert_eq!(r.status(), 401, "the read API needs the admin token");
        let r = c
            .get(format!("{origin}/api/streams"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v["streams"][0]["session"].as_str().unwrap().to_owned()
    });
    // Viewers through the edge while the dashboard looks: 4 followers, 2 of them with CMCD.
    let viewers = {
        let edge = edge.clone();
        std::thread::spawn(move || {
            common::runtime().block_on(async {
                let c = hls::client();
                let mut tasks = Vec::new();
                for i in 0..4 {
                    let (_, master) =
                        hls::get_text(&c, &format!("{edge}/live/cam/index.m3u8")).await;
                    let media = master
                        .lines()
                        .find(|l| l.starts_with("source/"))
                        .unwrap()
                        .to_owned();
                    let (fc, url) = (c.clone(), format!("{edge}/live/cam/{media}"));
                    tasks.push(tokio::spawn(async move {
                        hls::follow(&fc, &url, Duration::from_secs(30)).await
                    }));
                    if i < 2 {
                        let cmcd = format!(
                            "{edge}/live/cam/source/index.m3u8?CMCD=bl%3D{}%2Cbr%3D800%2Csid%3D%22d{i}%22",
                            1500 + 500 * i
                        );
                        let c = c.clone();
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..25 {
                                hls::get_text(&c, &cmcd).await;
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            hls::Followed::default()
                        }));
                    }
                }
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .args(["--url", &format!("{origin}/"), "--stream", "cam"])
        .args(["--token", TOKEN, "--polls", "10", "--timeout", "40"])
        .arg("--chromium")
        .arg(chromium())
        .arg("--screenshot")
        .arg(&shot)
        .output()
        .expect("node (Node.js 20+) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "dashboard.mjs said no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("dashboard report: {r}");
    let _ = viewers.join();
    assert!(
        out.status.success(),
        "the dashboard never showed it all: {r}"
    );
    assert_eq!(r["askedForToken"], true, "{r}");
    assert_eq!(r["lastError"], serde_json::Value::Null, "{r}");
    // The page's first polls, before the token was typed, were refused: nothing else.
    let errors: Vec<_> = r["pageErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or("").contains("401 (Unauthorized)"))
        .collect();
    assert!(errors.is_empty(), "page errors {errors:?}: {r}");
    assert_eq!(r["session"], session.as_str(), "{r}");
    assert_eq!(r["publishing"], "live", "{r}");
    assert_eq!(r["uplink"], "uplink healthy", "{r}");
    let fps: f64 = r["fps"].as_str().unwrap_or("0").parse().unwrap_or(0.0);
    assert!((25.0..=35.0).contains(&fps), "ingest fps shown {fps}: {r}");
    let ladder = r["ladder"].as_array().unwrap();
    assert!(
        ladder
            .iter()
            .any(|x| x["name"].as_str().unwrap_or("").starts_with("r180")
                && x["state"] == "advertised"
                && x["encoder"] == "x264"),
        "the ladder: {r}"
    );
    let renditions = r["renditions"].as_array().unwrap();
    let source = renditions
        .iter()
        .find(|x| x["id"] == "source")
        .unwrap_or_else(|| panic!("no source rendition: {r}"));
    let viewers: u64 = source["viewers"].as_str().unwrap().parse().unwrap();
    assert!((4..=6).contains(&viewers), "viewers shown {viewers}: {r}");
    assert!(
        source["players"].as_str().unwrap().parse::<u64>().unwrap() >= 2,
        "CMCD players shown: {r}"
    );
    assert_ne!(source["buffer"], "–", "CMCD buffer shown: {r}");
    assert!(
        r["viewersPerEdge"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["edge"] == "edge-1"),
        "viewers per edge: {r}"
    );
    assert_eq!(r["edges"].as_array().map(Vec::len), Some(1), "{r}");
    let charts = r["charts"].as_array().unwrap();
    assert!(
        charts.iter().filter(|c| c["drawn"] == true).count() >= 5,
        "charts drawn: {r}"
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 20_000),
        "no screenshot at {}",
        shot.display()
    );
}
