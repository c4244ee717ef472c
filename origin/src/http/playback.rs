//! LL-HLS playback: multivariant and media playlists (blocking reload, delta updates,
//! rendition reports), init segments, parts (the hinted one streamed while written) and
//! segments.

use super::{
    etag_of, hash_str, not_found, plain, session_header, wait_window, wait_window_bytes, AppState,
    M3U8, MP4, PART_IDLE, STARTUP_WAIT,
};
use crate::blocking::{self, Decision};
use crate::live::{LiveStream, Rendition};
use crate::playlist::{self, MediaOptions, RenditionReport, Variant};
use crate::window::{LiveWindow, PartState};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use media::directives;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn multivariant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(stream) = state.streams.get(&name) else {
        return not_found();
    };
    let deadline = Instant::now() + STARTUP_WAIT;
    let mut variants = Vec::new();
    for (i, r) in stream.advertised().iter().enumerate() {
        // The source is waited for (a stream just starting); a rendition that joined later is
        // listed once it has media, never holding the playlist up.
        let deadline = if i == 0 { deadline } else { Instant::now() };
        let bw = wait_window(r, deadline, |w| {
            if w.ready() {
                Some(w.bandwidth())
            } else if w.ended() {
                Some(None)
            } else {
                None
            }
        })
        .await
        .flatten();
        let Some((peak, avg)) = bw else {
            continue;
        };
        let info = r.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        variants.push(Variant {
            uri: format!("{}/index.m3u8", r.id),
            bandwidth: peak,
            average_bandwidth: avg,
            codecs: info.codecs,
            video: info
                .has_video
                .then(|| ((info.width, info.height), snap_frame_rate(info.frame_rate))),
        });
    }
    if variants.is_empty() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "stream is not ready yet");
    }
    let mut body = playlist::multivariant_playlist(&variants);
    // Direct viewers get a session id too, so the origin counts them like an edge does. An
    // edge's own fetch (no session wanted) is left untagged: the edge tags per viewer.
    let from_edge = query.as_deref().is_some_and(|q| q.contains("fcedge=1"));
    if !from_edge {
        let sid = query
            .as_deref()
            .and_then(media::viewers::session_from_query)
            .unwrap_or_else(|| media::SessionId::generate().to_string());
        body = media::viewers::tag_multivariant(&body, &sid);
    }
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(M3U8));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-ferrocast-session", session_header(&stream));
    (h, body).into_response()
}

/// Snaps a measured frame rate to the common rate it is within 1 % of.
pub(super) fn snap_frame_rate(measured: f64) -> f64 {
    const COMMON: [f64; 8] = [23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0];
    COMMON
        .iter()
        .copied()
        .filter(|c| (c - measured).abs() / c < 0.01)
        .min_by(|a, b| (a - measured).abs().total_cmp(&(b - measured).abs()))
        .unwrap_or(measured)
}

pub(super) async fn rendition_file(
    State(state): State<AppState>,
    Path((name, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(stream) = state.streams.get(&name) else {
        return not_found();
    };
    let Some(r) = stream.rendition(&rendition) else {
        return not_found();
    };
    let sid = query
        .as_deref()
        .and_then(media::viewers::session_from_query);
    // Player telemetry rides on every request of a rendition; broken CMCD is counted, never
    // refused.
    let cmcd = media::cmcd::from_request(query.as_deref(), &headers);
    if cmcd.present() {
        state
            .streams
            .metrics
            .cmcd(cmcd.malformed > 0 || cmcd.oversized);
        state
            .edges
            .local_players
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(
                stream.name.as_str(),
                &r.id,
                sid.as_deref(),
                &cmcd,
                Instant::now(),
            );
    }
    if file == "index.m3u8" {
        if let Some(sid) = sid {
            state
                .edges
                .local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .saw(stream.name.as_str(), &r.id, &sid, Instant::now());
        }
        return media_playlist(&state, &stream, &r, query.as_deref()).await;
    }
    if let Some(version) = parse_init(&file) {
        let init = r.lock().init(version).cloned();
        return match init {
            Some(bytes) => immutable(
                &stream,
                bytes,
                hash_str(&format!("{}{version}", stream.session)),
                &headers,
            ),
            None => not_found(),
        };
    }
    let Some(stem) = file.strip_suffix(".m4s") else {
        return not_found();
    };
    match stem.split_once('.') {
        Some((msn, part)) => match (msn.parse::<u64>(), part.parse::<usize>()) {
            (Ok(msn), Ok(part)) => serve_part(&stream, r, msn, part, &headers).await,
            _ => not_found(),
        },
        None => match stem.parse::<u64>() {
            Ok(msn) => serve_segment(&stream, &r, msn, &headers).await,
            Err(_) => not_found(),
        },
    }
}

fn parse_init(file: &str) -> Option<u32> {
    if file == "init.mp4" {
        return Some(0);
    }
    file.strip_prefix("init-")?
        .strip_suffix(".mp4")?
        .parse()
        .ok()
}

fn blocking_deadline(w: &LiveWindow) -> Duration {
    Duration::from_secs(3 * u64::from(w.target_duration().unwrap_or(2)))
}

async fn media_playlist(
    state: &AppState,
    stream: &LiveStream,
    r: &Rendition,
    query: Option<&str>,
) -> Response {
    let directives = match directives::parse(query) {
        Ok(d) => d,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let started = Instant::now();
    // A stream that is starting: wait for its first segment.
    let ready = wait_window(r, started + STARTUP_WAIT, |w| {
        (w.ready() || w.ended()).then_some(w.ready())
    })
    .await;
    if ready != Some(true) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "stream is not ready yet");
    }
    let hold_limit = blocking_deadline(&r.lock());
    let metrics = &state.streams.metrics;
    let mut held = false;
    let decision = wait_window(r, started + hold_limit, |w| {
        match blocking::decide(w, directives.msn, directives.part) {
            Decision::Hold => {
                if !held {
                    held = true;
                    metrics.blocked_in_flight.inc();
                }
                None
            }
            d => Some(d),
        }
    })
    .await;
    if held {
        metrics.blocked_in_flight.dec();
        crate::metrics::observe(&metrics.blocked_hold, started.elapsed());
    }
    match decision {
        Some(Decision::Ready) => {}
        Some(Decision::BadRequest(why)) => return plain(StatusCode::BAD_REQUEST, why),
        Some(Decision::Hold) | None => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the requested part did not appear in time",
            )
        }
    }
    let reports = stream
        .advertised()
        .iter()
        .filter(|o| o.id != r.id)
        .filter_map(|o| {
            let (last_msn, last_part) = o.lock().last_part()?;
            Some(RenditionReport {
                uri: format!("../{}/index.m3u8", o.id),
                last_msn,
                last_part,
            })
        })
        .collect();
    let (body, td) = {
        let w = r.lock();
        let body = playlist::media_playlist(
            &w,
            &MediaOptions {
                skip: directives.skip,
                reports,
            },
        );
        (body, w.target_duration().unwrap_or(2))
    };
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(M3U8));
    let cache = if directives.msn.is_some() {
        // The URL names the position it waited for, so the answer may be shared briefly.
        format!("public, max-age={}", 3 * td)
    } else {
        "no-cache".to_owned()
    };
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).unwrap_or(HeaderValue::from_static("no-cache")),
    );
    if let Ok(v) = HeaderValue::from_str(&etag_of(hash_str(&body))) {
        h.insert(header::ETAG, v);
    }
    h.insert("x-ferrocast-session", session_header(stream));
    (h, body).into_response()
}

fn media_headers(stream: &LiveStream, etag: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(MP4));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60, immutable"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag_of(etag)) {
        h.insert(header::ETAG, v);
    }
    h.insert("x-ferrocast-session", session_header(stream));
    h
}

fn not_modified(headers: &HeaderMap, etag: u64) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag_of(etag)))
}

fn immutable(stream: &LiveStream, bytes: Bytes, etag: u64, req: &HeaderMap) -> Response {
    let h = media_headers(stream, etag);
    if not_modified(req, etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    (h, bytes).into_response()
}

async fn serve_part(
    stream: &LiveStream,
    r: Arc<Rendition>,
    msn: u64,
    part: usize,
    req: &HeaderMap,
) -> Response {
    let state = r.lock().part_state(msn, part);
    let state = match state {
        PartState::Next => {
            // The preload-hinted part: wait for its first bytes, then stream it.
            let deadline = Instant::now() + blocking_deadline(&r.lock());
            wait_window_bytes(&r, deadline, |w| match w.part_state(msn, part) {
                PartState::Next => None,
                s => Some(s),
            })
            .await
            .unwrap_or(PartState::Missing)
        }
        s => s,
    };
    match state {
        PartState::Complete { bytes, etag } => immutable(stream, bytes, etag, req),
        PartState::Writing(body) => {
            // Streamed chunk by chunk as the packager appends them; if the part never
            // completes (stream gone) the transfer breaks rather than looking complete.
            let mut h = media_headers(stream, 0);
            h.remove(header::ETAG);
            (h, Body::from_stream(body.reader(PART_IDLE))).into_response()
        }
        PartState::Next | PartState::Missing => not_found(),
    }
}

async fn serve_segment(stream: &LiveStream, r: &Rendition, msn: u64, req: &HeaderMap) -> Response {
    let open = {
        let w = r.lock();
        w.segment(msn).is_some_and(|s| s.duration.is_none())
    };
    let found = if open {
        let deadline = Instant::now() + blocking_deadline(&r.lock());
        wait_window(r, deadline, |w| match w.segment(msn) {
            Some(s) if s.duration.is_none() && !w.ended() => None,
            _ => Some(w.segment_bytes(msn)),
        })
        .await
        .flatten()
    } else {
        r.lock().segment_bytes(msn)
    };
    let Some((parts, etag)) = found else {
        return not_found();
    };
    let mut h = media_headers(stream, etag);
    if not_modified(req, etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let len: usize = parts.iter().map(Bytes::len).sum();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let body = Body::from_stream(futures_util::stream::iter(
        parts.into_iter().map(Ok::<_, std::io::Error>),
    ));
    (h, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates_snap() {
        assert_eq!(snap_frame_rate(29.96), 29.97);
        assert_eq!(snap_frame_rate(30.1), 30.0);
        assert_eq!(snap_frame_rate(12.5), 12.5);
    }
}
