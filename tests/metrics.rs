//! `/metrics` of origin and edge: the Prometheus text passes `promtool check metrics` during a
//! real publish with a viewer, and requests for made-up stream paths add no series.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Cluster, Publisher, Server, Source};
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

/// One sample line of an exposition: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text exposition (label values here never hold `,` or `"`).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The value of `name` with every label in `with`; panics with the exposition if absent.
fn value(all: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    all.iter()
        .find(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no {name}{with:?} in {:#?}", names(all)))
}

fn sum(all: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    all.iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

fn names(all: &[Sample]) -> std::collections::BTreeSet<String> {
    all.iter().map(|s| s.name.clone()).collect()
}

/// The metric names a PromQL expression refers to (identifiers starting `ferrocast_`,
/// `process_`), without the histogram suffixes' ambiguity: `_bucket`, `_sum`, `_count` stay.
fn promql_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts = expr[i..].starts_with("ferrocast_") || expr[i..].starts_with("process_");
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if starts && boundary {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(b.len(), |e| i + e);
            out.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Acceptance for the whole latency path in Prometheus: an RTMP publish (transcoded to one
/// rung) and an SRT publish, 20 viewers through an edge, some sending CMCD. Every family is on
/// `/metrics` with plausible values, both expositions pass promtool, the session id of the RTMP
/// publish log line is the one the edge answers with, and the Grafana dashboard refers only to
/// names the two expositions hold.
#[test]
fn every_family_is_on_metrics_with_plausible_values_and_the_session_id_reaches_the_edge() {
    let config = common::config(
        "target_duration = 1\n[transcode]\n[[transcode.rungs]]\nname = \"r180\"\nheight = 180\n\
         bitrate_kbps = 300\n[[transcode.tiers]]\nmin_viewers = 0\nrungs = [\"r180\"]\n",
    );
    let cluster = Cluster::start(1, &config, &[]);
    let mut source = Source::small(45.0);
    source.gop = 30;
    let _rtmp = Publisher::rtmp(&cluster.rtmp_url(common::KEY), &source);
    let srt_url = format!(
        "srt://{}?streamid=publish:live/{}&latency=120000",
        cluster.origin_srt,
        common::KEY2
    );
    let _srt = Publisher::srt(&srt_url, &Source::small(45.0));
    let rt = common::runtime();
    rt.block_on(async {
        let c = hls::client();
        let edge = cluster.edge_base(0);
        let origin = cluster.origin_base();
        hls::wait_stream(&c, &edge, "cam").await;
        hls::wait_stream(&c, &origin, "other").await;

        // (2) The session id: the RTMP publish's log line, the origin's and the edge's headers.
        let log = cluster.origin_log();
        let accepted = log
            .lines()
            .find(|l| l.contains("rtmp") && l.contains("publish accepted") && l.contains("stream=cam"))
            .unwrap_or_else(|| panic!("no RTMP publish line:\n{log}"));
        let session = accepted
            .split(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ':')
            .find_map(|w| w.strip_prefix("session="))
            .unwrap_or_else(|| panic!("no session in {accepted}"))
            .to_owned();
        // Every log line about the stream, from ingest through transcode and packaging,
        // carries the same session id (tracing spans).
        for target in ["ingest::rtmp", "transcode::encode", "origin::live"] {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(target) && l.contains("stream=cam"))
                .collect();
            assert!(!lines.is_empty(), "no {target} lines about cam:\n{log}");
            for l in lines {
                assert!(l.contains(&format!("session={session}")), "{l}");
            }
        }
        let header = |r: &reqwest::Response| {
            r.headers()
                .get("x-ferrocast-session")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let r = c.get(format!("{edge}/live/cam/index.m3u8")).send().await.unwrap();
        assert_eq!(header(&r), session, "the edge's multivariant names the publish's session");
        let master = r.text().await.unwrap();
        let r = c
            .get(format!("{edge}/live/cam/source/index.m3u8"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r), session, "the edge's media playlist too");
        let r = c.get(format!("{origin}/api/streams")).send().await.unwrap();
        let api: serde_json::Value = r.json().await.unwrap();
        let cam = api["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "cam")
            .unwrap()
            .clone();
        assert_eq!(cam["session"], session.as_str());
        assert!(
            master.contains("r180/"),
            "the rung is advertised: {master}"
        );

        // 20 viewers through the edge, each with its own session id from the multivariant.
        let mut viewers = Vec::new();
        for _ in 0..20 {
            let (_, master) = hls::get_text(&c, &format!("{edge}/live/cam/index.m3u8")).await;
            let media = master
                .lines()
                .find(|l| l.starts_with("source/"))
                .unwrap()
                .to_owned();
            let (c, url) = (c.clone(), format!("{edge}/live/cam/{media}"));
            viewers.push(tokio::spawn(async move {
                hls::follow(&c, &url, Duration::from_secs(12)).await
            }));
        }
        // A few players send CMCD (query and headers).
        for i in 0..3 {
            let (s, _) = hls::get_text(
                &c,
                &format!(
                    "{edge}/live/cam/source/index.m3u8?CMCD=bl%3D{}%2Cbr%3D800%2Cmtp%3D9000%2Csid%3D%22p{i}%22",
                    1000 + i * 200
                ),
            )
            .await;
            assert_eq!(s, 200);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, edge_first) = hls::get_text(&c, &format!("{edge}/metrics")).await;
        for v in viewers {
            let f = v.await.unwrap();
            assert!(f.errors.is_empty(), "viewer errors: {:?}", f.errors);
        }
        // The edge reports its viewers every second: wait for the origin to count all 20.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let (origin_text, edge_text) = loop {
            let (_, o) = hls::get_text(&c, &format!("{origin}/metrics")).await;
            let (_, e) = hls::get_text(&c, &format!("{edge}/metrics")).await;
            let counted = sum(&samples(&o), "ferrocast_viewers", &[("stream", "cam")]);
            if counted >= 20.0 || std::time::Instant::now() > deadline {
                break (o, e);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        promtool(&origin_text).unwrap_or_else(|e| panic!("origin /metrics: {e}\n{origin_text}"));
        promtool(&edge_text).unwrap_or_else(|e| panic!("edge /metrics: {e}\n{edge_text}"));
        let o = samples(&origin_text);
        let e = samples(&edge_text);
        let cam = [("stream", "cam")];
        let other = [("stream", "other")];

        // Ingest, per stream.
        let fps = value(&o, "ferrocast_ingest_frames_per_second", &cam);
        assert!((25.0..=35.0).contains(&fps), "ingest fps {fps}");
        let bps = value(&o, "ferrocast_ingest_bytes_per_second", &cam);
        assert!((40e3..400e3).contains(&bps), "ingest {bps} B/s");
        assert_eq!(value(&o, "ferrocast_ingest_dropped_frames_total", &cam), 0.0);
        assert_eq!(value(&o, "ferrocast_ingest_reconnects_total", &cam), 0.0);
        let lag = value(&o, "ferrocast_ingest_lag_seconds", &cam);
        assert!((0.0..1.5).contains(&lag), "ingest lag {lag}");
        assert_eq!(value(&o, "ferrocast_uplink_degraded", &cam), 0.0);
        assert!(value(&o, "ferrocast_ingest_frames_total", &[("stream", "cam"), ("track", "video")]) > 300.0);
        // SRT, from libsrt.
        let rtt = value(&o, "ferrocast_srt_rtt_seconds", &other);
        assert!((0.0..0.5).contains(&rtt), "SRT RTT {rtt}");
        assert!(value(&o, "ferrocast_srt_packets_received_total", &other) > 500.0);
        for family in ["lost", "retransmitted", "dropped"] {
            let n = value(&o, &format!("ferrocast_srt_packets_{family}_total"), &other);
            assert!(n < 50.0, "{family} {n} on loopback");
        }
        let buffered = value(&o, "ferrocast_srt_receive_buffer_seconds", &other);
        assert!((0.0..2.0).contains(&buffered), "SRT receive buffer {buffered}");
        value(&o, "ferrocast_srt_receive_buffer_bytes", &other);
        // Transcode, per rung.
        let rung = [("stream", "cam"), ("rung", "r180")];
        let speed = value(&o, "ferrocast_transcode_rung_speed", &rung);
        assert!(speed > 0.9, "rung speed {speed}× real time");
        let tlag = value(&o, "ferrocast_transcode_rung_lag_seconds", &rung);
        assert!((0.0..3.0).contains(&tlag), "rung lag {tlag}");
        assert!(value(&o, "ferrocast_transcode_rung_cpu_seconds_total", &rung) > 0.0);
        assert_eq!(value(&o, "ferrocast_transcode_rungs", &[("stream", "cam"), ("state", "running")]), 1.0);
        assert_eq!(sum(&o, "ferrocast_transcode_sheds_total", &cam), 0.0);
        // Packaging: one part publish delay observation per part produced (every rendition
        // of both streams; a batch of parts closed at once is one observation).
        let count = |s: &[Sample]| value(s, "ferrocast_part_publish_delay_seconds_count", &[]);
        let observed = count(&o);
        let (_, api) = hls::get_text(&c, &format!("{origin}/api/streams")).await;
        let api: serde_json::Value = serde_json::from_str(&api).unwrap();
        let produced: u64 = api["streams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["renditions"].as_array().unwrap().iter())
            .map(|r| r["parts"].as_u64().unwrap())
            .sum();
        let ratio = observed / produced as f64;
        assert!(
            (0.9..=1.0).contains(&ratio),
            "{observed} part delay observations for {produced} parts produced"
        );
        let p_sum = value(&o, "ferrocast_part_publish_delay_seconds_sum", &[]);
        assert!(p_sum / count(&o) < 0.05, "mean part publish delay {} s", p_sum / count(&o));
        assert!(value(&o, "ferrocast_blocked_playlist_hold_seconds_count", &[]) > 10.0);
        value(&o, "ferrocast_blocked_playlist_requests", &[]);
        // Viewers, per stream and rendition, counted at the origin from the edge's report.
        // 20 followers, and the 3 CMCD players (their `sid` is a session id too).
        let counted = value(&o, "ferrocast_viewers", &[("stream", "cam"), ("rendition", "source")]);
        assert!((20.0..=23.0).contains(&counted), "{counted} viewers counted at the origin");
        assert_eq!(value(&o, "ferrocast_edges_reporting", &[]), 1.0);
        let players = [("stream", "cam"), ("rendition", "source")];
        assert!(value(&o, "ferrocast_player_sessions", &players) >= 3.0);
        let buffer = value(&o, "ferrocast_player_buffer_seconds", &players);
        assert!((1.0..=1.4).contains(&buffer), "CMCD buffer {buffer}");
        assert_eq!(value(&o, "ferrocast_player_encoded_bytes_per_second", &players), 100e3);
        // The edge: cache phases, hit ratio under 20 viewers, origin fetches, bytes out.
        let phase = |s: &[Sample], p: &str| value(s, "ferrocast_edge_cache_requests_total", &[("phase", p)]);
        let ef = samples(&edge_first);
        let d = |p: &str| phase(&e, p) - phase(&ef, p);
        let all = d("hit") + d("miss") + d("coalesced") + d("stale");
        let hit_ratio = (d("hit") + d("coalesced")) / all;
        assert!(hit_ratio > 0.9, "edge hit ratio {hit_ratio:.3} over {all} requests");
        assert!(value(&e, "ferrocast_edge_upstream_requests_total", &[]) > 0.0);
        assert!(value(&e, "ferrocast_edge_bytes_out_total", &[]) > 1e6);
        assert!(sum(&e, "ferrocast_edge_viewers", &cam) >= 20.0);
        eprintln!(
            "ingest {fps:.1} fps {:.0} kb/s lag {lag:.3} s; SRT RTT {:.1} ms; rung speed {speed:.2}× lag {tlag:.3} s; \
             {observed} part delays for {produced} parts; edge hit ratio {hit_ratio:.3}",
            bps * 8.0 / 1000.0,
            rtt * 1000.0
        );

        // (6) The Grafana dashboard refers only to names the expositions hold.
        let exposed: std::collections::BTreeSet<String> = names(&o).union(&names(&e)).cloned().collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards/ferrocast.json");
        let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .expect("the Grafana dashboard is JSON");
        let mut exprs = Vec::new();
        let mut stack = vec![&dash];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(x)) = m.get("expr") {
                        exprs.push(x.clone());
                    }
                    stack.extend(m.values());
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        assert!(exprs.len() >= 20, "only {} queries in the dashboard", exprs.len());
        let mut referred = std::collections::BTreeSet::new();
        for x in &exprs {
            for n in promql_names(x) {
                assert!(exposed.contains(&n), "the dashboard's {x:?} names {n}, which /metrics lacks");
                referred.insert(n);
            }
        }
        eprintln!("grafana: {} queries over {} metric names", exprs.len(), referred.len());
    });
    drop(cluster);
}

/// With `admin_token`, the read APIs refuse requests without it (401 with `WWW-Authenticate`)
/// and accept the Bearer token; `FERROCAST_ADMIN_TOKEN` in the environment overrides the file
/// (how Kubernetes hands the Secret over); playback and `/metrics` stay open; the dashboard
/// page itself loads (it holds no data).
#[test]
fn the_admin_token_guards_the_read_apis_and_the_environment_overrides_the_file() {
    let server = Server::start_with_env(
        &common::config("admin_token = \"from-the-file-0123\""),
        &[("FERROCAST_ADMIN_TOKEN", "from-the-environment-0123\n")],
    );
    let rt = common::runtime();
    rt.block_on(async {
        let c = hls::client();
        let base = server.base();
        for path in ["/api/streams", "/api/edges"] {
            let url = format!("{base}{path}");
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} without a token");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let r = c
                .get(&url)
                .bearer_auth("from-the-file-0123")
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                401,
                "{path}: the environment's token wins over the file's"
            );
            let r = c
                .get(&url)
                .bearer_auth("from-the-environment-0123")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} with the token");
        }
        for (path, status) in [
            ("/", 200),
            ("/dashboard/dashboard.js", 200),
            ("/metrics", 200),
            ("/live/cam/index.m3u8", 404),
            ("/healthz", 200),
        ] {
            let (s, _) = hls::get_text(&c, &format!("{base}{path}")).await;
            assert_eq!(s, status, "{path}");
        }
    });
    assert!(
        !server.log().contains("from-the-environment-0123"),
        "a token in the log"
    );
}
