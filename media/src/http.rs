//! The one CORS policy of every Ferrocast HTTP surface (origin and edge): any web page may
//! GET/HEAD what we serve and read the headers players and tools look at.

use tower_http::cors::{Any, CorsLayer};

/// Response headers a page on another origin may read.
pub const EXPOSED_HEADERS: [&str; 5] = [
    "age",
    "etag",
    "x-cache",
    "x-ferrocast-session",
    "x-ferrocast-stale",
];

/// The CORS layer for playback routes.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([http::Method::GET, http::Method::HEAD])
        .expose_headers(EXPOSED_HEADERS.map(http::HeaderName::from_static))
}
