//! The director: spreads new viewers over the healthy edges.

use super::{not_found, AppState};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// The director: sends a new viewer to one of the least-loaded healthy edges, chosen at random
/// among the best three (or to the origin itself when no edge is up).
pub(super) async fn watch(State(state): State<AppState>, Path(name): Path<String>) -> Response {
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
