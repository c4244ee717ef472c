//! The JSON API: live streams with their renditions and viewers, edges, and the edges'
//! viewer reports.

use super::playback::snap_frame_rate;
use super::{plain, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::time::Instant;

/// `None` when the request may read the APIs; else the 401 to send.
fn refused(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let token = state.admin_token.as_deref()?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| media::constant_time_eq(b, token)) {
        return None;
    }
    let mut r = plain(StatusCode::UNAUTHORIZED, "admin token required");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    Some(r)
}

pub(super) async fn streams(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let streams: Vec<serde_json::Value> = state
        .streams
        .all()
        .iter()
        .map(|s| {
            let renditions: Vec<serde_json::Value> = s
                .renditions()
                .iter()
                .map(|r| {
                    let w = r.lock();
                    let info = r.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    serde_json::json!({
                        "id": r.id,
                        "advertised": r.is_advertised(),
                        "codecs": info.codecs,
                        "width": info.width,
                        "height": info.height,
                        "frame_rate": snap_frame_rate(info.frame_rate),
                        "target_duration": w.target_duration(),
                        "last_part": w.last_part(),
                        "ended": w.ended(),
                        "bandwidth": w.bandwidth().map(|b| b.1),
                        "bytes_held": w.bytes_held(),
                        "part_delay_ms": (info.part_delay_secs * 10_000.0).round() / 10.0,
                        "parts": info.parts,
                        "timeline": {
                            "splices": info.timeline.splices,
                            "dropped_frames": info.timeline.dropped,
                            "pdt_reanchors": info.timeline.reanchors,
                            "drift_secs": (info.drift_secs * 1000.0).round() / 1000.0,
                        },
                    })
                })
                .collect();
            serde_json::json!({
                "name": s.name.as_str(),
                "viewers": state.edges.stream_viewers(s.name.as_str(), Instant::now()),
                "session": s.session.to_string(),
                "publishing": s.is_publishing(),
                "playlist": format!("/live/{}/index.m3u8", s.name),
                "renditions": renditions,
                "ladder": s.ladder_status(),
                "uplink": s.uplink_status(),
                "players": players_json(&state.edges.stream_players(s.name.as_str(), Instant::now())),
            })
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        serde_json::json!({ "streams": streams }).to_string(),
    )
        .into_response()
}

pub(super) async fn edge_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let report: crate::edges::Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "malformed report"),
    };
    match state.edges.report(bearer, report, Instant::now()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(crate::edges::ReportError::Unauthorized) => {
            tracing::warn!("edge report refused: missing or wrong token");
            plain(StatusCode::UNAUTHORIZED, "missing or wrong edge token")
        }
        Err(e) => plain(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

pub(super) async fn edges(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let edges: Vec<serde_json::Value> = state
        .edges
        .healthy(Instant::now())
        .into_iter()
        .map(|(id, url, viewers)| serde_json::json!({"id": id, "url": url, "viewers": viewers}))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        serde_json::json!({ "edges": edges }).to_string(),
    )
        .into_response()
}

/// What players said in CMCD, per rendition, as `/api/streams` shows it.
fn players_json(
    players: &std::collections::BTreeMap<String, media::cmcd::PlayerSummary>,
) -> serde_json::Value {
    let per: serde_json::Map<String, serde_json::Value> = players
        .iter()
        .map(|(rendition, p)| {
            let buckets: Vec<serde_json::Value> = media::cmcd::BUFFER_BUCKETS_MS
                .iter()
                .map(|ub| serde_json::json!(ub))
                .chain([serde_json::json!("+Inf")])
                .zip(p.buffer_buckets)
                .map(|(le, n)| serde_json::json!({"le_ms": le, "sessions": n}))
                .collect();
            (
                rendition.clone(),
                serde_json::json!({
                    "sessions": p.sessions,
                    "buffer_ms": p.mean_buffer_ms(),
                    "buffer_sessions": buckets,
                    "throughput_kbps": p.mean_throughput_kbps(),
                    "bitrate_kbps": p.mean_bitrate_kbps(),
                    "starvations": p.starvations,
                    "startups": p.startups,
                    "malformed": p.malformed,
                }),
            )
        })
        .collect();
    serde_json::Value::Object(per)
}
