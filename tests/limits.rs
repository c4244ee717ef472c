//! The HTTP limits of origin and edge (`[http_limits]`, `cache_mb`): each test drives one limit
//! past its value with raw sockets or curl and asserts the refusal (status, `Retry-After`, the
//! log line, `ferrocast_limit_refusals_total{limit}`), while ffmpeg publishes and a viewer
//! follows the stream beside it without an error. Loopback addresses other than 127.0.0.1
//! stand in for other clients' IP addresses.

#![allow(clippy::unwrap_used)]

mod common;

use common::hls::{self, MediaPlaylist};
use common::{Cluster, Publisher, Server, Source};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PLAYLIST: &str = "/live/cam/source/index.m3u8";

async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// What the server sends within `wait` (until it closes, or the time is up).
async fn answer(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closed `s` within `wait`.
async fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 65536];
    let end = Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn refusals(c: &reqwest::Client, base: &str, limit: &str) -> f64 {
    let series = format!("ferrocast_limit_refusals_total{{limit=\"{limit}\"}}");
    hls::metric(c, base, &series).await.unwrap_or(-1.0)
}

/// A viewer beside the test: follows the stream for `secs` with no error and gets parts.
async fn viewer_is_fine(c: &reqwest::Client, base: &str, secs: u64) {
    let f = hls::follow(c, &format!("{base}{PLAYLIST}"), Duration::from_secs(secs)).await;
    assert!(
        f.errors.is_empty(),
        "the viewer beside it saw {:?}",
        f.errors
    );
    assert!(
        f.parts.len() >= 3,
        "the viewer beside it got {} parts",
        f.parts.len()
    );
}

fn publish(s: &Server, secs: f64) -> Publisher {
    Publisher::rtmp(&s.rtmp_url(common::KEY), &Source::small(secs))
}

/// `max_connections_per_ip` then `max_connections`: the connection over either gets one
/// canned 429 / 503 with `Retry-After: 1` and is closed; a viewer that already had its
/// connection keeps playing through both, and a new one plays once the crowd leaves.
///
/// The viewer beside the crowd speaks HTTP/2 (one connection for every request, as browsers
/// and hls.js do over HTTPS): an HTTP/1.1 client pool may open a fresh connection for any
/// request (hyper races a new connect against the idle one coming back), and a fresh
/// connection is rightly refused while the server is full.
#[test]
fn connections_over_the_per_address_or_total_limit_get_429_or_503_with_retry_after() {
    let s = Server::start(&common::config(
        "[http_limits]\nmax_connections = 24\nmax_connections_per_ip = 8",
    ));
    let _p = publish(&s, 40.0);
    let base = s.base();
    let rt = common::runtime();
    rt.block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        // Its one connection is open before the crowd comes.
        let (status, _) = hls::get_text(&h2, &format!("{base}{PLAYLIST}")).await;
        assert_eq!(status, 200);
        let viewer = {
            let base = base.clone();
            tokio::spawn(async move { viewer_is_fine(&h2, &base, 8).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Per address: 8 from 127.0.0.2 are held, the 9th is refused.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(connect_from("127.0.0.2", s.http).await);
        }
        let mut ninth = connect_from("127.0.0.2", s.http).await;
        let a = answer(&mut ninth, Duration::from_secs(5)).await;
        assert!(a.starts_with("HTTP/1.1 429 Too Many Requests"), "{a}");
        assert!(a.contains("Retry-After: 1"), "{a}");
        assert!(a.contains("too many connections from your address"), "{a}");
        // In total: more addresses until the server refuses one with 503.
        let mut refused = None;
        'fill: for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
            for _ in 0..8 {
                let mut t = connect_from(ip, s.http).await;
                let a = answer(&mut t, Duration::from_millis(200)).await;
                if !a.is_empty() {
                    refused = Some(a);
                    break 'fill;
                }
                held.push(t);
            }
        }
        let a = refused.expect("the total limit never refused a connection");
        assert!(a.starts_with("HTTP/1.1 503 Service Unavailable"), "{a}");
        assert!(a.contains("Retry-After: 1"), "{a}");
        assert!(held.len() < 24, "{} connections held", held.len());
        viewer.await.unwrap();
        drop(held);
        // Once they leave, a new client gets in.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = hls::client();
        viewer_is_fine(&c, &base, 2).await;
        assert!(refusals(&c, &base, "http_connections_per_ip").await >= 1.0);
        assert!(refusals(&c, &base, "http_connections").await >= 1.0);
    });
    assert!(s.wait_log(
        "http connection refused: too many connections from your address",
        Duration::from_secs(2)
    ));
    assert!(
        s.log().contains("limit=\"http_connections\"")
            || s.log().contains("limit=http_connections")
    );
}

/// `max_header_bytes`: a request whose headers are larger gets 431; one within it is served.
#[test]
fn request_headers_over_the_limit_get_431() {
    let s = Server::start(&common::config("[http_limits]\nmax_header_bytes = 8192"));
    let _p = publish(&s, 20.0);
    let base = s.base();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let mut t = TcpStream::connect(s.http).await.unwrap();
        let big = format!(
            "GET {PLAYLIST} HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        t.write_all(big.as_bytes()).await.unwrap();
        let a = answer(&mut t, Duration::from_secs(5)).await;
        assert!(a.starts_with("HTTP/1.1 431"), "{a}");
        let r = c
            .get(format!("{base}{PLAYLIST}"))
            .header("x-fine", "b".repeat(4000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        viewer_is_fine(&c, &base, 3).await;
        assert_eq!(refusals(&c, &base, "http_header_size").await, 1.0);
    });
    assert!(
        s.wait_log("http request refused", Duration::from_secs(2)),
        "{}",
        s.log()
    );
}

/// `header_timeout` (slowloris): 100 connections that send a header line a second are all
/// closed once the headers are late; the viewer beside them plays on; a keep-alive connection
/// idle between requests is not one of them.
#[test]
fn headers_that_trickle_in_are_cut_off_at_the_header_timeout() {
    let s = Server::start(&common::config("[http_limits]\nheader_timeout = 1.0"));
    let _p = publish(&s, 30.0);
    let base = s.base();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let mut loris = tokio::task::JoinSet::new();
        for i in 0..100 {
            let addr = s.http;
            loris.spawn(async move {
                let mut t = connect_from("127.0.0.2", addr).await;
                t.write_all(format!("GET {PLAYLIST}?{i} HTTP/1.1\r\n").as_bytes())
                    .await
                    .unwrap();
                let start = Instant::now();
                for n in 0..30 {
                    if t.write_all(format!("X-{n}: y\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if closed(&mut t, Duration::from_millis(500)).await {
                        return Some(start.elapsed());
                    }
                }
                None
            });
        }
        let viewer = viewer_is_fine(&c, &base, 4);
        let cut = async {
            let mut times = Vec::new();
            while let Some(r) = loris.join_next().await {
                times.push(r.unwrap().expect("a trickling connection was never closed"));
            }
            times
        };
        let ((), times) = tokio::join!(viewer, cut);
        let worst = times.iter().max().unwrap();
        assert!(*worst < Duration::from_secs(10), "closed after {worst:?}");
        assert!(refusals(&c, &base, "http_header_timeout").await >= 100.0);
        // A keep-alive connection waiting for its next request is not a slowloris: idle for
        // three header timeouts between two requests, it is still served (nginx's
        // keepalive_timeout beside client_header_timeout); it was cut, and counted, before.
        let before = refusals(&c, &base, "http_header_timeout").await;
        let mut kept = connect_from("127.0.0.3", s.http).await;
        let request = format!("GET {PLAYLIST} HTTP/1.1\r\nHost: x\r\n\r\n");
        for _ in 0..2 {
            kept.write_all(request.as_bytes()).await.unwrap();
            let first = answer(&mut kept, Duration::from_secs(3)).await;
            assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        }
        assert_eq!(refusals(&c, &base, "http_header_timeout").await, before);
        // A connection that never sends its first request is cut at the header timeout.
        let mut silent = connect_from("127.0.0.3", s.http).await;
        assert!(closed(&mut silent, Duration::from_secs(10)).await);
        assert_eq!(
            refusals(&c, &base, "http_header_timeout").await,
            before + 1.0
        );
    });
}

/// `send_timeout`: a client that pipelines requests for a segment and never reads the answers
/// is cut off once a write made no progress for the timeout, and what it held is dropped (the
/// server's memory does not grow by what it asked for); the viewer beside it plays on.
#[test]
fn a_reader_that_stops_reading_is_cut_off() {
    let s = Server::start(&common::config("[http_limits]\nsend_timeout = 1.0"));
    let _p = publish(&s, 30.0);
    let base = s.base();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        let (_, text) = hls::get_text(&c, &format!("{base}{PLAYLIST}")).await;
        let pl = MediaPlaylist::parse(&text).unwrap();
        let seg = pl.segments.iter().find_map(|s| s.uri.clone()).unwrap();
        let uri = format!("/live/cam/source/{seg}");
        let (st, bytes) = hls::get_bytes(&c, &format!("{base}{uri}")).await;
        assert_eq!(st, 200);
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut t = sock.connect(s.http).await.unwrap();
        // Enough answers to fill every buffer between us many times over.
        let n = (64 << 20) / bytes.len().max(1) + 1;
        let req = format!("GET {uri} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(n);
        let writer = tokio::spawn(async move {
            let _ = t.write_all(req.as_bytes()).await;
            t
        });
        let viewer = viewer_is_fine(&c, &base, 4);
        viewer.await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while refusals(&c, &base, "http_slow_reader").await < 1.0 {
            assert!(
                Instant::now() < deadline,
                "the slow reader was never cut off"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(writer);
    });
    assert!(
        s.wait_log(
            "http connection cut off: the client stopped reading",
            Duration::from_secs(2)
        ),
        "{}",
        s.log()
    );
    let rss = s.rss_kib();
    assert!(rss < 200 * 1024, "server RSS {rss} KiB");
}

/// The next part's blocking playlist URL (held by the origin until the part exists).
async fn blocking_url(c: &reqwest::Client, base: &str) -> String {
    let (_, text) = hls::get_text(c, &format!("{base}{PLAYLIST}")).await;
    let (msn, _) = MediaPlaylist::parse(&text).unwrap().next_part();
    // The third part of the segment after the one being written: held a second or more,
    // within the advance part limit.
    format!("{base}{PLAYLIST}?_HLS_msn={}&_HLS_part=2", msn + 1)
}

/// `max_blocked_requests` (total, 503) and `max_blocked_requests_per_connection` (HTTP/2
/// streams on one connection, 429): the blocking request over either is answered at once with
/// `Retry-After`; the ones within are held and answered; the viewer beside plays on.
#[test]
fn blocking_playlist_requests_over_the_total_or_per_connection_limit_are_refused() {
    let s = Server::start(&common::config(
        "[http_limits]\nmax_blocked_requests = 6\nmax_blocked_requests_per_connection = 2",
    ));
    let _p = publish(&s, 40.0);
    let base = s.base();
    let rt = common::runtime();
    let url = rt.block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &base, "cam").await;
        blocking_url(&c, &base).await
    });
    // Per connection: four blocking requests at once over one HTTP/2 connection.
    rt.block_on(async {
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let sends = (0..4).map(|_| async {
            let r = h2.get(&url).send().await.unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").cloned())
        });
        let answers = futures_util::future::join_all(sends).await;
        let ok = answers.iter().filter(|(s, _)| *s == 200).count();
        let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
        assert_eq!((ok, refused.len()), (2, 2), "{answers:?}");
        assert!(refused
            .iter()
            .all(|(_, r)| r.as_ref().is_some_and(|v| v == "1")));
    });
    rt.block_on(async {
        let c = hls::client();
        let url = blocking_url(&c, &base).await;
        // In total: six held on separate connections, the seventh refused at once.
        let mut held = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let url = url.clone();
            held.spawn(async move {
                let c = hls::client();
                c.get(&url).send().await.unwrap().status().as_u16()
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let t = Instant::now();
            let r = hls::client().get(&url).send().await.unwrap();
            if r.status() == 503 {
                assert!(
                    t.elapsed() < Duration::from_millis(500),
                    "the refusal was not at once"
                );
                break r;
            }
            assert!(Instant::now() < deadline, "the total limit never refused");
        };
        assert_eq!(refused.headers()["retry-after"], "1");
        assert!(refused
            .text()
            .await
            .unwrap()
            .contains("too many blocking playlist requests"));
        while let Some(code) = held.join_next().await {
            assert_eq!(code.unwrap(), 200);
        }
        viewer_is_fine(&c, &base, 3).await;
        assert_eq!(
            refusals(&c, &base, "blocked_requests_per_connection").await,
            2.0
        );
        assert!(refusals(&c, &base, "blocked_requests").await >= 1.0);
    });
}

/// At the edge: `requests_per_ip` refuses a client's excess with 429 + `Retry-After` while
/// another address plays through the same edge; and `cache_mb` bounds the cache while a
/// crawler asks for every object the origin lists.
#[test]
fn the_edge_limits_request_rate_per_address_and_cache_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ecfg = dir.path().join("edge.toml");
    std::fs::write(&ecfg, "cache_mb = 1\n[http_limits]\nrequests_per_ip = 50\n").unwrap();
    let cluster = Cluster::start(
        1,
        &common::config(""),
        &["--edge-config", ecfg.to_str().unwrap()],
    );
    let _p = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &Source::small(40.0));
    let edge = cluster.edge_base(0);
    let origin = cluster.origin_base();
    common::runtime().block_on(async {
        let c = hls::client();
        hls::wait_stream(&c, &origin, "cam").await;
        // 200 requests in a row from 127.0.0.2: the burst (100) and the refill pass, the rest
        // is refused.
        let other = reqwest::Client::builder()
            .local_address(Some("127.0.0.2".parse().unwrap()))
            .build()
            .unwrap();
        let url = format!("{edge}{PLAYLIST}");
        let mut codes = Vec::new();
        let mut retry_after = None;
        let t = Instant::now();
        for _ in 0..200 {
            let r = other.get(&url).send().await.unwrap();
            codes.push(r.status().as_u16());
            if r.status() == 429 {
                retry_after = r.headers().get("retry-after").cloned();
            }
        }
        let refused = codes.iter().filter(|c| **c == 429).count();
        let most = 100 - (50.0 * t.elapsed().as_secs_f64()) as usize;
        assert!(
            (most.saturating_sub(5)..=100).contains(&refused),
            "{refused} of 200 refused in {:?}: {codes:?}",
            t.elapsed()
        );
        assert_eq!(retry_after.unwrap(), "1");
        // A viewer on 127.0.0.1 (its own bucket) plays on meanwhile.
        let viewer = viewer_is_fine(&c, &edge, 6);
        // The crawler: every part and segment listed, through the edge, from 127.0.0.3 with
        // no rate limit hit (one every 20 ms).
        let crawl = async {
            let crawler = reqwest::Client::builder()
                .local_address(Some("127.0.0.3".parse().unwrap()))
                .build()
                .unwrap();
            let mut fetched = 0usize;
            let mut seen = std::collections::HashSet::new();
            let end = Instant::now() + Duration::from_secs(6);
            while Instant::now() < end {
                let (_, text) = hls::get_text(&crawler, &format!("{origin}{PLAYLIST}")).await;
                let pl = MediaPlaylist::parse(&text).unwrap();
                for s in &pl.segments {
                    let uris = s.parts.iter().map(|p| p.uri.clone()).chain(s.uri.clone());
                    for u in uris {
                        if seen.insert(u.clone()) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let (st, b) =
                                hls::get_bytes(&crawler, &format!("{edge}/live/cam/source/{u}"))
                                    .await;
                            if st == 200 {
                                fetched += b.len();
                            }
                        }
                    }
                }
            }
            fetched
        };
        let ((), fetched) = tokio::join!(viewer, crawl);
        assert!(
            fetched > 3 << 19,
            "the crawler fetched only {fetched} bytes"
        );
        // Complete entries are evicted to the budget; one still streaming in may be over it.
        let cached = hls::metric(&c, &edge, "ferrocast_edge_cache_bytes")
            .await
            .unwrap();
        assert!(cached <= (3 << 19) as f64, "the edge caches {cached} bytes");
        let evicted = hls::metric(&c, &edge, "ferrocast_edge_evictions_total")
            .await
            .unwrap();
        assert!(evicted > 0.0);
        assert_eq!(refusals(&c, &edge, "request_rate").await, refused as f64);
    });
    assert!(
        cluster
            .edge_log(0)
            .contains("http request refused: too many requests from your address"),
        "{}",
        cluster.edge_log(0)
    );
}
