//! The origin's HTTP surface (axum): LL-HLS playlists and media, `/metrics`, `/api/streams`.
//!
//! - `GET /live/{name}/index.m3u8` — multivariant playlist
//! - `GET /live/{name}/{rendition}/index.m3u8` — media playlist (`_HLS_msn`, `_HLS_part`,
//!   `_HLS_skip`)
//! - `GET /live/{name}/{rendition}/init.mp4`, `init-{v}.mp4`, `{msn}.{part}.m4s`, `{msn}.m4s`

use crate::blocking::{self, Decision};
use crate::live::{LiveStream, Rendition, Streams};
use crate::playlist::{self, MediaOptions, RenditionReport, Variant};
use crate::window::{LiveWindow, PartState};
use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use media::directives;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub streams: Arc<Streams>,
    pub edges: Arc<crate::edges::Edges>,
}

const M3U8: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";
/// How long a request for a stream that is starting waits for its first segment.
const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// A streamed part whose writer adds nothing for this long is cut off.
const PART_IDLE: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/live/{name}/index.m3u8", get(multivariant))
        .route("/live/{name}/{rendition}/{file}", get(rendition_file))
        .route("/api/streams", get(api_streams))
        .route("/api/edges", get(api_edges))
        .route("/api/edges/report", axum::routing::post(edge_report))
        .route("/watch/{name}", get(watch))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(media::http::cors())
        .with_state(state)
}

/// Serves `router` (the origin's routes, plus whatever the binary merged in, e.g. `/metrics`)
/// until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = match req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some("/live/{name}/index.m3u8") => "multivariant",
        Some("/live/{name}/{rendition}/{file}") => {
            let path = req.uri().path();
            if path.ends_with(".m3u8") {
                "media_playlist"
            } else if path.ends_with(".mp4") {
                "init"
            } else if path.matches('.').count() == 2 {
                "part"
            } else {
                "segment"
            }
        }
        Some("/metrics") => "metrics",
        Some("/api/streams") | Some("/api/edges") => "api",
        Some("/api/edges/report") => "edge_report",
        Some("/watch/{name}") => "director",
        Some(_) => "other",
        None => "unmatched",
    };
    let edge = req
        .headers()
        .get("x-ferrocast-edge")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let uri = req.uri().clone();
    let resp = next.run(req).await;
    state
        .streams
        .metrics
        .http_response(route, resp.status().as_u16());
    // Access log (enable with RUST_LOG=ferrocast::access=debug).
    tracing::debug!(
        target: "ferrocast::access",
        edge = edge.as_deref().unwrap_or("-"),
        %uri,
        status = resp.status().as_u16()
    );
    resp
}

fn plain(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_TYPE, "text/plain"),
        ],
        format!("{msg}\n"),
    )
        .into_response()
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found")
}

fn etag_of(v: u64) -> String {
    format!("\"{v:016x}\"")
}

fn hash_str(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn session_header(stream: &LiveStream) -> HeaderValue {
    HeaderValue::from_str(&stream.session.to_string()).unwrap_or(HeaderValue::from_static("-"))
}

/// Waits until `f` says the window is ready (or not), or the deadline passes; re-evaluated
/// when playlists change.
async fn wait_window<T>(
    r: &Rendition,
    deadline: Instant,
    f: impl FnMut(&LiveWindow) -> Option<T>,
) -> Option<T> {
    wait_on(r, r.position.subscribe(), deadline, f).await
}

/// Like [`wait_window`], but wakes on every appended byte too.
async fn wait_window_bytes<T>(
    r: &Rendition,
    deadline: Instant,
    f: impl FnMut(&LiveWindow) -> Option<T>,
) -> Option<T> {
    wait_on(r, r.bytes.subscribe(), deadline, f).await
}

async fn wait_on<T>(
    r: &Rendition,
    mut rx: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    mut f: impl FnMut(&LiveWindow) -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(v) = f(&r.lock()) {
            return Some(v);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return None },
            _ = tokio::time::sleep_until(deadline.into()) => return f(&r.lock()),
        }
    }
}

async fn multivariant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(stream) = state.streams.get(&name) else {
        return not_found();
    };
    let deadline = Instant::now() + STARTUP_WAIT;
    let mut variants = Vec::new();
    for r in &stream.renditions {
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
            resolution: (info.width, info.height),
            frame_rate: snap_frame_rate(info.frame_rate),
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
fn snap_frame_rate(measured: f64) -> f64 {
    const COMMON: [f64; 8] = [23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0];
    COMMON
        .iter()
        .copied()
        .filter(|c| (c - measured).abs() / c < 0.01)
        .min_by(|a, b| (a - measured).abs().total_cmp(&(b - measured).abs()))
        .unwrap_or(measured)
}

async fn rendition_file(
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
    let r = Arc::clone(r);
    if file == "index.m3u8" {
        if let Some(sid) = query
            .as_deref()
            .and_then(media::viewers::session_from_query)
        {
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
        .renditions
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

async fn api_streams(State(state): State<AppState>) -> Response {
    let streams: Vec<serde_json::Value> = state
        .streams
        .all()
        .iter()
        .map(|s| {
            let renditions: Vec<serde_json::Value> = s
                .renditions
                .iter()
                .map(|r| {
                    let w = r.lock();
                    let info = r.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    serde_json::json!({
                        "id": r.id,
                        "codecs": info.codecs,
                        "width": info.width,
                        "height": info.height,
                        "frame_rate": snap_frame_rate(info.frame_rate),
                        "target_duration": w.target_duration(),
                        "last_part": w.last_part(),
                        "ended": w.ended(),
                        "bandwidth": w.bandwidth().map(|b| b.1),
                        "bytes_held": w.bytes_held(),
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

async fn edge_report(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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

async fn api_edges(State(state): State<AppState>) -> Response {
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

/// The director: sends a new viewer to one of the least-loaded healthy edges, chosen at random
/// among the best three (or to the origin itself when no edge is up).
async fn watch(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    if state.streams.get(&name).is_none() {
        return not_found();
    }
    let rand = media::SessionId::generate().0;
    let target = match state.edges.pick(Instant::now(), 3, rand) {
        Some(edge) => format!("{edge}/live/{name}/index.m3u8"),
        None => format!("/live/{name}/index.m3u8"),
    };
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&target) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::FOUND, h).into_response()
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
