//! Uplink warnings: the real ffmpeg CLI publishes RTMP through a TCP relay in this test that
//! throttles the publisher's direction below the stream's bitrate for 15 s. The stream is
//! flagged "uplink degraded" in `/api/streams` and `/metrics` within 10 s (media arrives ever
//! later: ingest lag), and cleared once the relay lets the backlog through.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Publisher, Server, Source};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A relay to `upstream` whose client → server direction is limited to `limit` bytes/s while
/// it is not 0.
fn relay(upstream: std::net::SocketAddr, limit: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(upstream).unwrap();
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
            });
            let limit = Arc::clone(&limit);
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let (mut window, mut sent) = (Instant::now(), 0u64);
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if s_write.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    let rate = limit.load(Ordering::Relaxed);
                    if rate == 0 {
                        continue;
                    }
                    sent += n as u64;
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    let elapsed = window.elapsed();
                    if due > elapsed {
                        std::thread::sleep(due - elapsed);
                    }
                    if elapsed > Duration::from_secs(1) {
                        (window, sent) = (Instant::now(), 0);
                    }
                }
            });
        }
    });
    addr
}

async fn uplink(c: &reqwest::Client, base: &str) -> serde_json::Value {
    let (_, text) = hls::get_text(c, &format!("{base}/api/streams")).await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["streams"][0]["uplink"].clone()
}

#[test]
fn a_throttled_uplink_is_flagged_within_10_s_and_cleared_after() {
    let server = Server::start(&common::config(common::conformance::CONFIG));
    let limit = Arc::new(AtomicU64::new(0));
    let via = relay(server.rtmp, Arc::clone(&limit));
    let mut source = Source::small(60.0);
    source.video_bitrate = "1000k";
    let _publisher = Publisher::rtmp(&format!("rtmp://{via}/live/{}", common::KEY), &source);
    let base = server.base();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let healthy = uplink(&c, &base).await;
        assert_eq!(healthy["degraded"], false, "before the throttle: {healthy}");

        // 40 kB/s (320 kbit/s) for a ~1.1 Mbit/s stream.
        limit.store(40_000, Ordering::Relaxed);
        let throttled = Instant::now();
        let flagged = loop {
            let u = uplink(&c, &base).await;
            if u["degraded"] == true {
                break u;
            }
            assert!(
                throttled.elapsed() < Duration::from_secs(10),
                "not flagged within 10 s: {u}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        eprintln!("flagged after {:?}: {flagged}", throttled.elapsed());
        let (_, metrics) = hls::get_text(&c, &format!("{base}/metrics")).await;
        assert!(
            metrics.contains("ferrocast_uplink_degraded{stream=\"cam\"} 1"),
            "{metrics}"
        );
        let lag = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ferrocast_ingest_lag_seconds{stream=\"cam\"} "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(lag.is_some_and(|l| l > 1.0), "{lag:?}");
        // The throttle lasts 15 s; the flag stays while it does.
        tokio::time::sleep(Duration::from_secs(15).saturating_sub(throttled.elapsed())).await;
        assert_eq!(
            uplink(&c, &base).await["degraded"],
            true,
            "cleared while throttled"
        );
        limit.store(0, Ordering::Relaxed);
        let freed = Instant::now();
        let cleared = loop {
            let u = uplink(&c, &base).await;
            if u["degraded"] == false {
                break u;
            }
            assert!(
                freed.elapsed() < Duration::from_secs(20),
                "still flagged 20 s after: {u}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        eprintln!("cleared after {:?}: {cleared}", freed.elapsed());
        assert_eq!(cleared["episodes"], 1, "{cleared}");
        assert!(server.log().contains("uplink degraded"));
    });
}
