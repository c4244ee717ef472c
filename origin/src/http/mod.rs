//! The origin's HTTP surface (axum), one module per audience:
//!
//! - [`playback`]: LL-HLS for players and edges — `GET /live/{name}/index.m3u8` (multivariant),
//!   `/live/{name}/{rendition}/index.m3u8` (media playlist; `_HLS_msn`, `_HLS_part`,
//!   `_HLS_skip`), `init.mp4`, `init-{v}.mp4`, `{msn}.{part}.m4s`, `{msn}.m4s`
//! - [`api`]: `GET /api/streams`, `GET /api/edges`, `POST /api/edges/report`
//! - [`director`]: `GET /watch/{name}` sends a new viewer to an edge
//! - the built-in player page, `GET /live/{name}/` ([`media::page`], shared with the edges)
//! - the dashboard, `GET /` and `/dashboard/…` ([`crate::dashboard`])
//!
//! `/metrics` is not here: the binary merges its registry's route into [`router`].

mod api;
mod director;
mod playback;

use crate::live::{LiveStream, Rendition, Streams};
use crate::window::LiveWindow;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub streams: Arc<Streams>,
    pub edges: Arc<crate::edges::Edges>,
    /// When set, the read APIs (the dashboard's data) need `Authorization: Bearer` with it.
    pub admin_token: Option<Arc<str>>,
}

pub(crate) const M3U8: &str = "application/vnd.apple.mpegurl";
pub(crate) const MP4: &str = "video/mp4";
/// How long a request for a stream that is starting waits for its first segment.
pub(crate) const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// A streamed part whose writer adds nothing for this long is cut off.
pub(crate) const PART_IDLE: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/live/{name}/index.m3u8", get(playback::multivariant))
        .route("/live/{name}", get(player_page))
        .route("/live/{name}/", get(player_page))
        .route("/live/.player/{file}", get(player_page))
        .route(
            "/live/{name}/{rendition}/{file}",
            get(playback::rendition_file),
        )
        .route("/api/streams", get(api::streams))
        .route("/api/edges", get(api::edges))
        .route("/api/edges/report", axum::routing::post(api::edge_report))
        .route("/watch/{name}", get(director::watch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(dashboard))
        .route("/dashboard/{file}", get(dashboard))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(media::http::cors())
        .with_state(state)
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
        Some("/live/{name}") | Some("/live/{name}/") | Some("/live/.player/{file}") => "page",
        Some("/") | Some("/dashboard/{file}") => "dashboard",
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

async fn player_page(uri: axum::http::Uri) -> Response {
    match media::page::serve(uri.path()) {
        Some(r) => r.map(axum::body::Body::from),
        None => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn dashboard(uri: axum::http::Uri) -> Response {
    match crate::dashboard::serve(uri.path()) {
        Some(r) => r.map(axum::body::Body::from),
        None => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

pub(crate) fn plain(status: StatusCode, msg: &str) -> Response {
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

pub(crate) fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found")
}

pub(crate) fn etag_of(v: u64) -> String {
    format!("\"{v:016x}\"")
}

pub(crate) fn hash_str(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

pub(crate) fn session_header(stream: &LiveStream) -> HeaderValue {
    HeaderValue::from_str(&stream.session.to_string()).unwrap_or(HeaderValue::from_static("-"))
}

/// Waits until `f` says the window is ready (or not), or the deadline passes; re-evaluated
/// when playlists change.
pub(crate) async fn wait_window<T>(
    r: &Rendition,
    deadline: Instant,
    f: impl FnMut(&LiveWindow) -> Option<T>,
) -> Option<T> {
    wait_on(r, r.position.subscribe(), deadline, f).await
}

/// Like [`wait_window`], but wakes on every appended byte too.
pub(crate) async fn wait_window_bytes<T>(
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
