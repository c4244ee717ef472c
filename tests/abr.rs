//! ABR against real renditions over a throttled link. One ffmpeg CLI process encodes one
//! source three times (same GOP, so the renditions align) and publishes them to the origin as
//! three streams; a small LL-HLS test server in this test serves a multivariant playlist over
//! them and proxies every request through a shared rate-limited "link" whose rate the test
//! changes, and can make a rendition disappear (404). The player must:
//! - step down when the link narrows, never make two ordinary down-switches within 30 s
//!   (one emergency switch is allowed when the buffer is about to run dry),
//! - step back up when throughput returns,
//! - survive a rendition that starts answering 404 by switching away, without a fatal error,
//!   decoding (the ffmpeg CLI) all the way through the switches.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{hls, Server};
use futures_util::StreamExt;
use player_test::abr::SwitchReason;
use player_test::player::PlayerConfig;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (name in the multivariant, stream, key, size, video bitrate, declared BANDWIDTH)
const LADDER: [(&str, &str, &str, &str, u32, u64); 3] = [
    (
        "hi",
        "abrhi",
        "abr-hi-key-0123456789",
        "640x360",
        1500,
        1_900_000,
    ),
    (
        "mid",
        "abrmid",
        "abr-mid-key-0123456789",
        "480x270",
        600,
        850_000,
    ),
    (
        "lo",
        "abrlo",
        "abr-lo-key-0123456789",
        "320x180",
        200,
        350_000,
    ),
];

fn config() -> String {
    LADDER
        .iter()
        .map(|(_, name, key, ..)| format!("[[streams]]\nname = \"{name}\"\nkey = \"{key}\"\n"))
        .collect()
}

/// One ffmpeg CLI process, one source, three encodes with the same GOP, three RTMP outputs.
fn publish_ladder(server: &Server, seconds: u32) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()]);
    for (_, _, key, size, kbps, _) in LADDER {
        cmd.args(["-map", "0:v", "-map", "1:a", "-s", size])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
            .args(["-b:v", &format!("{kbps}k"), "-maxrate", &format!("{kbps}k")])
            .args(["-bufsize", &format!("{}k", kbps / 2), "-pix_fmt", "yuv420p"])
            .args(["-c:a", "aac", "-b:a", "48k", "-ac", "1", "-f", "flv"])
            .arg(server.rtmp_url(key));
    }
    cmd.stdin(Stdio::null()).spawn().expect("ffmpeg")
}

/// A shared link: bytes/s (0 = unlimited), scheduled back to back with a small burst.
struct Link {
    rate: AtomicU64,
    next: Mutex<Instant>,
}

impl Link {
    async fn take(&self, n: usize) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let wait = {
            let mut next = self.next.lock().unwrap();
            let now = Instant::now();
            let start = (*next).max(now - Duration::from_millis(20));
            *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
            next.saturating_duration_since(now)
        };
        tokio::time::sleep(wait).await;
    }
}

#[derive(Clone)]
struct Proxy {
    origin: String,
    link: Arc<Link>,
    hi_gone: Arc<AtomicBool>,
    client: reqwest::Client,
}

async fn multivariant() -> Response {
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:9\n");
    for (name, _, _, size, _, bw) in LADDER {
        m.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bw},RESOLUTION={size},CODECS=\"avc1.64001e,mp4a.40.2\"\n{name}/index.m3u8\n"
        ));
    }
    ([("content-type", "application/vnd.apple.mpegurl")], m).into_response()
}

async fn proxied(
    State(p): State<Proxy>,
    Path((rendition, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((_, stream, ..)) = LADDER.iter().find(|r| r.0 == rendition) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if rendition == "hi" && p.hi_gone.load(Ordering::Relaxed) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let q = query.map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{}/live/{stream}/source/{file}{q}", p.origin);
    let Ok(r) = p.client.get(&url).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let link = p.link.clone();
    // The body goes through the link in 4 KiB slices, each sent when the link has room.
    let body = r
        .bytes_stream()
        .flat_map(|chunk| {
            let slices: Vec<Result<bytes::Bytes, reqwest::Error>> = match chunk {
                Ok(c) => (0..c.len())
                    .step_by(4096)
                    .map(|at| Ok(c.slice(at..(at + 4096).min(c.len()))))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(slices)
        })
        .then(move |slice| {
            let link = link.clone();
            async move {
                if let Ok(s) = &slice {
                    link.take(s.len()).await;
                }
                slice
            }
        });
    (status, [("content-type", ctype)], Body::from_stream(body)).into_response()
}

#[test]
fn abr_steps_down_with_discipline_steps_up_and_survives_a_404() {
    let server = Server::start(&config());
    let mut ffmpeg = publish_ladder(&server, 90);
    let rt = common::runtime();
    let link = Arc::new(Link {
        rate: AtomicU64::new(0),
        next: Mutex::new(Instant::now()),
    });
    let hi_gone = Arc::new(AtomicBool::new(false));
    let report = rt.block_on(async {
        let c = hls::client();
        for (_, stream, ..) in LADDER {
            hls::wait_stream(&c, &server.base(), stream).await;
        }
        let proxy = Proxy {
            origin: server.base(),
            link: link.clone(),
            hi_gone: hi_gone.clone(),
            client: reqwest::Client::new(),
        };
        let app = axum::Router::new()
            .route("/abr/index.m3u8", get(multivariant))
            .route("/abr/{rendition}/{file}", get(proxied))
            .with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let script = {
            let link = link.clone();
            let hi_gone = hi_gone.clone();
            async move {
                // 0–8 s open link (the player starts on hi); then 1.2 Mbit/s: hi no longer
                // fits; at 18 s 0.45 Mbit/s, under mid too, within 30 s of the first step
                // down; at 30 s open again; at 50 s hi disappears.
                tokio::time::sleep_until(at(8).into()).await;
                link.rate.store(1_200_000 / 8, Ordering::Relaxed);
                tokio::time::sleep_until(at(18).into()).await;
                link.rate.store(450_000 / 8, Ordering::Relaxed);
                tokio::time::sleep_until(at(30).into()).await;
                link.rate.store(0, Ordering::Relaxed);
                tokio::time::sleep_until(at(50).into()).await;
                hi_gone.store(true, Ordering::Relaxed);
            }
        };
        let cfg = PlayerConfig {
            duration: Duration::from_secs(60),
            decode: true,
            session_id: Some("abr-test".into()),
            ..Default::default()
        };
        let url = format!("http://{addr}/abr/index.m3u8");
        let (report, ()) = tokio::join!(player_test::play(&url, cfg), script);
        report
    });
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    eprintln!("{}", report.summary());
    for s in &report.switches {
        eprintln!(
            "  {:5.1}s {} → {} {:?} estimate {:.0} kbit/s buffer {:.2}s",
            s.at,
            s.from,
            s.to,
            s.reason,
            s.estimate_bps / 1e3,
            s.buffer
        );
    }
    assert!(report.fatal.is_none(), "fatal: {:?}", report.fatal);
    // Decoded throughout, across every switch (a fresh decoder and init segment per variant).
    assert!(report.ttff.is_some());
    assert!(
        report.frames >= 1200,
        "only {} frames decoded in 60 s",
        report.frames
    );
    let sw = &report.switches;
    let rung = |uri: &str| LADDER.iter().position(|r| uri.starts_with(r.0)).unwrap();
    assert!(report
        .variant_seconds
        .first()
        .is_some_and(|(v, _)| rung(v) == 0));

    // Stepped down while the link was narrow (8–30 s).
    let downs: Vec<_> = sw
        .iter()
        .filter(|s| matches!(s.reason, SwitchReason::Down | SwitchReason::Emergency))
        .collect();
    assert!(
        downs
            .iter()
            .any(|s| (8.0..31.0).contains(&s.at) && rung(&s.to) > rung(&s.from)),
        "no step down under throttling: {sw:?}"
    );
    // The discipline: ordinary down-switches at least 30 s apart; emergencies too.
    for reason in [SwitchReason::Down, SwitchReason::Emergency] {
        let times: Vec<f64> = sw
            .iter()
            .filter(|s| s.reason == reason)
            .map(|s| s.at)
            .collect();
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= 30.0,
                "two {reason:?} switches within 30 s: {sw:?}"
            );
        }
    }
    // Emergency switches only when the buffer was about to run dry.
    for s in sw.iter().filter(|s| s.reason == SwitchReason::Emergency) {
        assert!(
            s.buffer < 0.5,
            "emergency switch with {:.2} s buffered",
            s.buffer
        );
    }
    // Back up once the link opened (30–50 s), to the top.
    assert!(
        sw.iter()
            .any(|s| s.reason == SwitchReason::Up && s.at > 30.0 && rung(&s.to) == 0),
        "did not step back up to hi: {sw:?}"
    );
    // hi disappeared at 50 s: a failover away from it, and playback went on.
    let failover = sw
        .iter()
        .find(|s| s.reason == SwitchReason::Failover)
        .unwrap_or_else(|| panic!("no failover: {sw:?}"));
    assert!(failover.at >= 50.0 && rung(&failover.from) == 0);
    let after: f64 = report
        .variant_seconds
        .iter()
        .rev()
        .take_while(|(v, _)| rung(v) != 0)
        .map(|(_, s)| s)
        .sum();
    assert!(after > 5.0, "played {after:.1}s after the failover");
    assert!(
        !sw.iter().any(|s| s.at > failover.at && rung(&s.to) == 0),
        "went back to the rendition that 404s: {sw:?}"
    );
}
