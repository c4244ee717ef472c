//! The publish authorization hook (`publish_hook`), with the real ffmpeg CLI publishing over
//! RTMP and SRT and a real HTTP hook server in the test: allowed, renamed, denied (403), slow
//! (past `publish_hook_timeout`), a 2xx without a name, an unreachable hook; the unpublish
//! notification; configured keys keep working without asking the hook; no key in any log line.

#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{hls, Publisher, Server, Source};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ALLOW: &str = "hook-allow-key-0001";
const RENAME: &str = "hook-rename-key-0001";
const DENY: &str = "hook-deny-key-0001";
const SLOW: &str = "hook-slow-key-0001";
const NO_NAME: &str = "hook-noname-key-0001";

type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

fn json(v: serde_json::Value) -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn hook(State(seen): State<Seen>, body: bytes::Bytes) -> axum::response::Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    seen.lock().unwrap().push(v.clone());
    if v["action"] == "unpublish" {
        return StatusCode::NO_CONTENT.into_response();
    }
    match v["key"].as_str().unwrap_or("") {
        ALLOW => json(serde_json::json!({"name": "hooked"})),
        RENAME => json(serde_json::json!({"name": "renamed"})),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(serde_json::json!({"name": "hooked"}))
        }
        NO_NAME => json(serde_json::json!({})),
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

/// The hook server on loopback; returns its URL and what it was sent.
fn start_hook() -> (String, Seen, std::thread::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let state = Arc::clone(&seen);
    let thread = std::thread::spawn(move || {
        common::runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(hook))
                .with_state(state);
            axum::serve(listener, app).await.unwrap();
        })
    });
    (url, seen, thread)
}

fn hook_config(url: &str) -> String {
    common::config(&format!(
        "grace_period = 1.0\npublish_hook = \"{url}\"\npublish_hook_timeout = 1.0\npublish_hook_cache = 0\n"
    ))
}

/// Publishes with `url` for `seconds` and expects ffmpeg to be refused.
fn refused(url: &str) -> String {
    let (ok, said) = Publisher::rtmp(url, &Source::small(4.0)).wait();
    assert!(!ok, "{url} must be refused: {said}");
    said
}

fn publishes_for(seen: &Seen, key: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|v| v["action"] == "publish" && v["key"] == key)
        .count()
}

#[test]
fn rtmp_publishes_are_authorized_by_the_hook_and_refused_when_it_does_not_allow() {
    let (url, seen, _hook) = start_hook();
    let server = Server::start(&hook_config(&url));
    let rtmp = |key: &str| format!("rtmp://{}/live/{key}", server.rtmp);
    for (key, why) in [
        (DENY, "the publish hook refused: HTTP 403"),
        (SLOW, "did not answer within"),
        (NO_NAME, "without \"name\""),
        ("never-heard-of-0001", "HTTP 403"),
    ] {
        refused(&rtmp(key));
        assert!(
            server.wait_log(why, Duration::from_secs(10)),
            "{key}: no {why:?} in\n{}",
            server.log()
        );
        assert_eq!(
            publishes_for(&seen, key),
            1,
            "the hook was asked about {key}"
        );
    }
    let rt = common::runtime();
    let c = hls::client();
    // Allowed, under the name the hook gave; the session id it was told is the stream's.
    let allowed = Publisher::rtmp(&rtmp(ALLOW), &Source::small(8.0));
    let renamed = Publisher::rtmp(&rtmp(RENAME), &Source::small(8.0));
    let configured = Publisher::rtmp(&rtmp(common::KEY), &Source::small(8.0));
    rt.block_on(async {
        for name in ["hooked", "renamed", "cam"] {
            hls::wait_stream(&c, &server.base(), name).await;
        }
        let r = c
            .get(format!("{}/live/hooked/index.m3u8", server.base()))
            .send()
            .await
            .unwrap();
        let session = r.headers()["x-ferrocast-session"]
            .to_str()
            .unwrap()
            .to_owned();
        let told = seen
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["key"] == ALLOW)
            .cloned()
            .unwrap();
        assert_eq!(told["session"], session.as_str(), "{told}");
        assert_eq!(told["protocol"], "rtmp");
        assert_eq!(told["app"], "live");
        assert!(told["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    });
    assert_eq!(
        publishes_for(&seen, common::KEY),
        0,
        "configured keys need no hook"
    );
    for p in [allowed, renamed, configured] {
        let (ok, said) = p.wait();
        assert!(ok, "{said}");
    }
    // The publishers left: the hook hears of the two it let in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let gone = loop {
        let gone: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["action"] == "unpublish")
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        if gone.len() >= 2 || std::time::Instant::now() > deadline {
            break gone;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        gone.contains(&"hooked".to_owned()) && gone.contains(&"renamed".to_owned()),
        "{gone:?}"
    );
    let log = server.log();
    for key in [ALLOW, RENAME, DENY, SLOW, NO_NAME, common::KEY] {
        assert!(!log.contains(key), "{key} in the log:\n{log}");
    }
}

#[test]
fn srt_publishes_are_authorized_by_the_hook_and_an_unreachable_hook_refuses() {
    let (url, seen, _hook) = start_hook();
    let server = Server::start(&hook_config(&url));
    let rt = common::runtime();
    let c = hls::client();
    let _allowed = Publisher::srt(
        &server.srt_url(&format!("publish:live/{ALLOW}")),
        &Source::small(8.0),
    );
    rt.block_on(hls::wait_stream(&c, &server.base(), "hooked"));
    let told = seen
        .lock()
        .unwrap()
        .iter()
        .find(|v| v["key"] == ALLOW)
        .cloned()
        .unwrap();
    assert_eq!(told["protocol"], "srt");
    let denied = Publisher::srt(
        &server.srt_url(&format!("publish:live/{DENY}")),
        &Source::small(4.0),
    );
    assert!(
        server.wait_log(
            "refused publish: the publish hook refused: HTTP 403",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    drop(denied);
    let log = server.log();
    assert!(
        !log.contains(ALLOW) && !log.contains(DENY),
        "a key in the log:\n{log}"
    );

    // A hook nobody answers at: refused (fail closed), and said why.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let lonely = Server::start(&hook_config(&dead_url));
    refused(&format!("rtmp://{}/live/{ALLOW}", lonely.rtmp));
    assert!(
        lonely.wait_log("the publish hook is unreachable", Duration::from_secs(10)),
        "{}",
        lonely.log()
    );
}
