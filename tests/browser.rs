//! The browser test: Debian's Chromium, headless, driven by playwright-core, plays the stream
//! with hls.js (from npm, served locally, `lowLatencyMode: true`) through an edge for 30 s.
//! The source carries the visual clock code, so the page reads capture → presentation latency
//! from every presented frame, beside hls.js's own latency estimate. A screenshot is saved.
//!
//! Needs `chromium` and the npm packages in `player-test/browser` (`./test.sh`
//! installs both).

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Cluster};
use player_test::glass::{self, PublishOptions};
use std::path::Path;
use std::process::Command;

#[test]
fn hls_js_plays_through_an_edge_in_headless_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("player-test/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir()
            && dir.join("node_modules/hls.js").is_dir(),
        "run `npm ci` in {} first (./test.sh does)",
        dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} missing: install Debian's chromium (./test.sh does)"
    );

    let cluster = Cluster::start(1, &common::config(""), &[]);
    let url = cluster.rtmp_url(common::KEY);
    let publisher =
        std::thread::spawn(move || glass::publish(&url, &PublishOptions::new(640, 360, 30, 52.0)));
    common::runtime().block_on(hls::wait_stream(
        &hls::client(),
        &cluster.origin_base(),
        "cam",
    ));
    // A viewer arriving at a stream that is already running.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-hlsjs.png");
    let _ = std::fs::remove_file(&shot);
    let stream = format!("{}/live/cam/index.m3u8", cluster.edge_base(0));
    let out = Command::new("node")
        .arg(dir.join("run.mjs"))
        .args([
            "--url",
            &stream,
            "--duration",
            "30",
            "--chromium",
            &chromium,
        ])
        .arg("--screenshot")
        .arg(&shot)
        .output()
        .expect("node (Node.js 20+) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run.mjs failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    publisher.join().unwrap().unwrap();
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("browser report: {r}");
    eprintln!("screenshot: {}", shot.display());

    assert_eq!(r["supported"], true, "MSE unsupported: {r}");
    assert_eq!(r["fatalErrors"], 0, "hls.js fatal errors: {}", r["errors"]);
    let decoded = r["decodedFrames"].as_u64().unwrap();
    assert!(decoded >= 450, "only {decoded} frames decoded in 30 s");
    let coded = r["presentedWithCode"].as_u64().unwrap();
    assert!(
        coded >= 300,
        "only {coded} presented frames with a readable clock code"
    );
    let p50 = r["latencyMs"]["p50"].as_i64().unwrap();
    assert!(
        (100..10_000).contains(&p50),
        "glass-to-glass p50 {p50} ms in the browser"
    );
    assert!(
        r["hlsLatencyS"]["samples"].as_u64().unwrap() > 0,
        "hls.js never reported a latency: {r}"
    );
    assert!(
        r["parts"].as_u64().unwrap() > 0,
        "hls.js loaded no LL-HLS parts (low-latency mode off?): {r}"
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "no screenshot"
    );
}
