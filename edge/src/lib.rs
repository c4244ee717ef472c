//! The Ferrocast edge: a caching reverse proxy for the origin's LL-HLS. Concurrent requests for
//! the same object share one upstream request whose body streams to every waiter as it arrives
//! (blocking playlist reloads and preload-hinted parts included); TTLs follow the origin's
//! Cache-Control; memory is bounded (LRU); a playlist the origin fails to answer in time is
//! served from the last good copy (marked `X-Ferrocast-Stale: 1`); viewers are counted and
//! reported to the origin. It does not package, transcode, or invent media.

pub mod cache;
pub mod metrics;
pub mod tls;

pub use media::directives::cache_key;
pub use metrics::EdgeMetrics;
pub use tls::tls_config;

use axum::body::Body as AxumBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cache::{Body, Cache, Entry, FetchResult, Good, Lookup, MissTicket, Phase};
use media::viewers::{session_from_query, tag_multivariant, Report, ViewerCounter};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Edge settings.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Origin base URL, e.g. `http://origin:8080`.
    pub origin: String,
    /// Cache memory budget (bytes of response bodies).
    pub cache_bytes: usize,
    /// Shared secret for viewer reports (`Authorization: Bearer …`).
    pub token: Option<String>,
    /// This edge's id (reports, logs, the director).
    pub id: String,
    /// The URL viewers reach this edge at (sent to the origin's director).
    pub public_url: String,
    pub report_interval: Duration,
    /// Viewers = distinct sessions seen within this window.
    pub viewer_window: Duration,
    /// A playlist the origin has not answered within this time is served stale (if a good copy
    /// exists).
    pub stale_after: Duration,
    /// Upstream requests give up after this long (media waits for the origin this long).
    pub upstream_timeout: Duration,
}

impl EdgeConfig {
    pub fn new(origin: &str, public_url: &str) -> EdgeConfig {
        EdgeConfig {
            origin: origin.trim_end_matches('/').to_owned(),
            cache_bytes: 256 << 20,
            token: None,
            id: format!("edge-{}", media::SessionId::generate()),
            public_url: public_url.trim_end_matches('/').to_owned(),
            report_interval: Duration::from_secs(1),
            viewer_window: Duration::from_secs(15),
            stale_after: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

struct Inner {
    config: EdgeConfig,
    cache: Cache,
    client: reqwest::Client,
    stats: EdgeMetrics,
    viewers: Mutex<ViewerCounter>,
    /// What players say in CMCD (reported to the origin with the viewers).
    players: Mutex<media::cmcd::PlayerStats>,
    /// Until when the origin counts as troubled (a failed or timed-out request or report).
    /// While it does, a 5xx on a playlist is answered from the last good copy instead.
    trouble_until: Mutex<Option<Instant>>,
}

/// `Access-Control-Expose-Headers` on every response (the origin's CORS policy, stated even
/// to requests without an `Origin` header so caches in front of us keep it).
const EXPOSED: &str = "age, etag, x-cache, x-ferrocast-session, x-ferrocast-stale";

/// Headers passed from the origin to viewers.
const PASS_HEADERS: [&str; 5] = [
    "content-type",
    "cache-control",
    "etag",
    "x-ferrocast-session",
    "age",
];

impl Edge {
    pub fn new(config: EdgeConfig) -> Edge {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Edge {
            inner: Arc::new(Inner {
                cache: Cache::new(config.cache_bytes),
                viewers: Mutex::new(ViewerCounter::new(config.viewer_window)),
                players: Mutex::new(media::cmcd::PlayerStats::new(config.viewer_window)),
                client,
                stats: EdgeMetrics::default(),
                trouble_until: Mutex::new(None),
                config,
            }),
        }
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }

    /// Registers the edge's metric families (the binary serves the registry).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.inner.stats.register(registry, &self.inner.cache.stats)
    }

    /// Brings the gauges up to date; call before each scrape.
    pub fn refresh_metrics(&self) {
        let i = &self.inner;
        i.stats.cache_bytes.set(i.cache.bytes() as i64);
        i.stats.cache_entries.set(i.cache.entries() as i64);
        let counts = i
            .viewers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts(Instant::now());
        i.stats.viewers.reset();
        for (stream, renditions) in &counts {
            for (rendition, n) in renditions {
                i.stats
                    .viewers
                    .with_label_values(&[stream.as_str(), rendition.as_str()])
                    .set(*n as i64);
            }
        }
    }

    fn origin_trouble(&self) {
        *self
            .inner
            .trouble_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + Duration::from_secs(10));
    }

    fn origin_troubled(&self) -> bool {
        self.inner
            .trouble_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/live/{*rest}", get(live))
            .route("/healthz", get(|| async { "ok\n" }))
            // Players on other origins (a web page with hls.js) may read everything served.
            .layer(media::http::cors())
            .with_state(self.clone())
    }

    /// Runs the periodic tasks (viewer reports to the origin, cache sweeps) until shutdown.
    pub async fn background(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.config.report_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.inner.cache.sweep(Instant::now());
            self.report().await;
        }
    }

    async fn report(&self) {
        let c = &self.inner.config;
        let viewers = self
            .inner
            .viewers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts(Instant::now());
        let players = self
            .inner
            .players
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summaries(Instant::now());
        let body = Report {
            edge: c.id.clone(),
            url: c.public_url.clone(),
            viewers,
            players,
        };
        let mut req = self
            .inner
            .client
            .post(format!("{}/api/edges/report", c.origin))
            .timeout(Duration::from_secs(2))
            .json(&body);
        if let Some(t) = &c.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                self.inner.stats.reports.with_label_values(&["ok"]).inc();
            }
            Ok(r) => {
                self.inner
                    .stats
                    .reports
                    .with_label_values(&["failed"])
                    .inc();
                debug!(status = %r.status(), "viewer report refused");
            }
            Err(e) => {
                self.inner
                    .stats
                    .reports
                    .with_label_values(&["failed"])
                    .inc();
                self.origin_trouble();
                debug!(error = %e, "viewer report failed");
            }
        }
    }

    /// Fetches `key` from the origin and completes the cache ticket as soon as the headers are
    /// in; the body keeps streaming into the entry in a task of its own.
    async fn fetch(&self, key: String, ticket: MissTicket) {
        let inner = &self.inner;
        inner.stats.upstream_requests.inc();
        // The origin tags multivariant playlists with a session id for its own direct viewers;
        // the edge asks for an untagged copy and tags it per viewer.
        let url = if is_multivariant(&key) {
            format!("{}{}?fcedge=1", inner.config.origin, key)
        } else {
            format!("{}{}", inner.config.origin, key)
        };
        let sent = inner
            .client
            .get(&url)
            .header("x-ferrocast-edge", &inner.config.id)
            .timeout(inner.config.upstream_timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                inner.stats.upstream_errors.inc();
                self.origin_trouble();
                debug!(%url, error = %e, "upstream request failed");
                inner.cache.complete(ticket, Err(e.to_string()));
                return;
            }
        };
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = PASS_HEADERS
            .iter()
            .filter_map(|h| {
                let v = resp.headers().get(*h)?.to_str().ok()?;
                Some(((*h).to_owned(), v.to_owned()))
            })
            .collect();
        let body = Body::new();
        let entry = Arc::new(Entry::new(
            status,
            headers,
            Arc::clone(&body),
            Instant::now(),
        ));
        inner.cache.complete(ticket, Ok(entry));
        let mut stream = resp.bytes_stream();
        use futures_util::StreamExt;
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => body.push(chunk),
                Some(Err(e)) => {
                    inner.stats.upstream_errors.inc();
                    body.finish(Err(e.to_string()));
                    return;
                }
                None => {
                    body.finish(Ok(()));
                    return;
                }
            }
        }
    }

    /// Looks `key` up; on a miss starts the fetch. Waits for the result at most `wait`.
    async fn get(&self, key: &str, wait: Duration) -> (Phase, Option<FetchResult>) {
        let lookup = self.inner.cache.lookup(key, Instant::now());
        let (phase, mut rx) = match lookup {
            Lookup::Hit(e) => return (Phase::Hit, Some(Ok(e))),
            Lookup::Coalesced(rx) => (Phase::Coalesced, rx),
            Lookup::Miss(ticket, rx) => {
                let edge = self.clone();
                let key = key.to_owned();
                tokio::spawn(async move { edge.fetch(key, ticket).await });
                (Phase::Miss, rx)
            }
        };
        let result = tokio::time::timeout(wait, async {
            loop {
                if let Some(r) = rx.borrow_and_update().clone() {
                    return Some(r);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten();
        (phase, result)
    }
}

/// `/live/{stream}/{rendition}/index.m3u8` → (stream, rendition).
fn media_playlist_ids(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/live/")?;
    let mut it = rest.split('/');
    let (stream, rendition, file) = (it.next()?, it.next()?, it.next()?);
    (file == "index.m3u8" && it.next().is_none()).then_some((stream, rendition))
}

/// (stream, rendition) of any file under a rendition (`/live/NAME/ID/FILE`).
fn rendition_ids(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/live/")?;
    let mut it = rest.split('/');
    let (stream, rendition, _file) = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some((stream, rendition))
}

fn is_multivariant(path: &str) -> bool {
    path.strip_prefix("/live/")
        .and_then(|r| r.strip_suffix("/index.m3u8"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
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

fn respond(edge: &Edge, entry: &Entry, phase: Phase) -> Response {
    debug!(
        phase = phase.as_str(),
        status = entry.status,
        session = entry.header("x-ferrocast-session").unwrap_or("-"),
        "edge response"
    );
    let mut h = HeaderMap::new();
    for (k, v) in &entry.headers {
        if k == "age" {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::try_from(k.as_str()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    h.insert(
        header::AGE,
        HeaderValue::from(entry.age(Instant::now()).as_secs()),
    );
    h.insert("x-cache", HeaderValue::from_static(phase.as_str()));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    let status = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(mut chunks) = entry.body.complete_chunks() {
        // Complete: send the shared chunks as they are (no copy per viewer).
        let len: usize = chunks.iter().map(Bytes::len).sum();
        edge.inner.stats.bytes_out.inc_by(len as u64);
        if chunks.len() == 1 {
            return (status, h, chunks.remove(0)).into_response();
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        let body = AxumBody::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        ));
        return (status, h, body).into_response();
    }
    let body = AxumBody::from_stream(entry.body.reader(edge.inner.config.upstream_timeout));
    (status, h, body).into_response()
}

fn stale(good: &Good) -> Response {
    debug!(phase = "stale", "edge response");
    let mut h = HeaderMap::new();
    for (k, v) in &good.headers {
        if k == "age" || k == "cache-control" {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::try_from(k.as_str()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-ferrocast-stale", HeaderValue::from_static("1"));
    h.insert("x-cache", HeaderValue::from_static("stale"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    (StatusCode::OK, h, good.body.clone()).into_response()
}

async fn live(State(edge): State<Edge>, uri: axum::http::Uri, req_headers: HeaderMap) -> Response {
    edge.inner.stats.requests.inc();
    let path = uri.path();
    let query = uri.query();
    // CMCD is bounded on its own (and ignored when oversized): it does not count here.
    let query_len = query.map_or(0, |q| {
        q.split('&')
            .filter(|p| !p.starts_with("CMCD="))
            .map(str::len)
            .sum()
    });
    if path.len() > 512 || query_len > 1024 || path.contains("..") {
        return plain(StatusCode::BAD_REQUEST, "request too long");
    }
    let cmcd = media::cmcd::from_request(query, &req_headers);
    // The built-in player page is in the binary: served here, never fetched from the origin.
    if let Some(r) = media::page::serve(path) {
        return r.map(AxumBody::from);
    }
    let key = cache_key(path, query);
    let playlist = path.ends_with(".m3u8");
    let session = query.and_then(session_from_query);
    let good_key = path.to_owned();
    let blocking = media::directives::is_blocking(query);
    let wait = if !playlist {
        edge.inner.config.upstream_timeout
    } else if blocking {
        // The origin holds a blocking reload until the part exists (up to 3 × TD, then 503):
        // only a silence longer than that means trouble.
        let td = edge
            .inner
            .cache
            .good_target_duration(&good_key)
            .unwrap_or(2);
        Duration::from_secs(3 * td) + edge.inner.config.stale_after.min(Duration::from_secs(1))
    } else {
        edge.inner.config.stale_after
    };
    let (phase, result) = edge.get(&key, wait).await;
    if result.is_none() && playlist {
        edge.origin_trouble();
    }
    // Playlists are small: have the whole body before deciding (last good copy, tagging).
    let result = match result {
        Some(Ok(e)) if playlist && e.status == 200 => e
            .body
            .complete_bytes(edge.inner.config.stale_after)
            .await
            .map(|_| Ok(e)),
        other => other,
    };
    let entry = match result {
        // A 503 is the origin's own answer (a blocking reload that timed out): passed on, unless
        // the origin has just been unreachable, when it more likely reflects that outage.
        Some(Ok(e))
            if e.status < 500 || (e.status == 503 && !(playlist && edge.origin_troubled())) =>
        {
            e
        }
        other => {
            // The origin failed, timed out, or is still busy: a playlist falls back to the last
            // good copy; media never does (we do not invent segments).
            if playlist {
                if let Some(g) = edge.inner.cache.stale(&good_key) {
                    debug!(%key, "serving stale playlist");
                    return stale(&g);
                }
            }
            // No fallback: keep waiting for the origin (media), then give up.
            let (_, again) = if other.is_none() {
                edge.get(&key, edge.inner.config.upstream_timeout).await
            } else {
                (phase, other)
            };
            match again {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    warn!(%key, error = %e, "origin unavailable");
                    return plain(StatusCode::BAD_GATEWAY, "origin unavailable");
                }
                None => return plain(StatusCode::GATEWAY_TIMEOUT, "origin did not answer"),
            }
        }
    };
    if let (Some((stream, rendition)), true, 200) =
        (rendition_ids(path), cmcd.present(), entry.status)
    {
        // Like viewers: only for renditions the origin serves.
        let result = if cmcd.malformed > 0 || cmcd.oversized {
            "malformed"
        } else {
            "ok"
        };
        edge.inner.stats.cmcd.with_label_values(&[result]).inc();
        edge.inner
            .players
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(stream, rendition, session.as_deref(), &cmcd, Instant::now());
    }
    if let (Some((stream, rendition)), Some(sid), 200) =
        (media_playlist_ids(path), &session, entry.status)
    {
        // Counted only for playlists the origin serves: made-up paths create no series.
        edge.inner
            .viewers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saw(stream, rendition, sid, Instant::now());
    }
    if playlist && entry.status == 200 {
        if let Some(bytes) = entry.body.bytes() {
            edge.inner
                .cache
                .keep_good(&good_key, Good::new(entry.headers.clone(), bytes));
        }
    }
    if is_multivariant(path) && entry.status == 200 {
        if let Some(bytes) = entry.body.bytes() {
            let sid = session.unwrap_or_else(|| media::SessionId::generate().to_string());
            let text = tag_multivariant(&String::from_utf8_lossy(&bytes), &sid);
            let mut r = respond(
                &edge,
                &Entry::new(
                    200,
                    entry.headers.clone(),
                    Body::complete(Bytes::from(text)),
                    entry.fetched_at,
                ),
                phase,
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return r;
        }
    }
    if entry.status == 200 {
        if let (Some(etag), Some(inm)) = (
            entry.header("etag"),
            req_headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok()),
        ) {
            if inm.split(',').any(|t| t.trim() == etag) {
                let mut r = respond(
                    &edge,
                    &Entry::new(
                        304,
                        entry.headers.clone(),
                        Body::complete(Bytes::new()),
                        entry.fetched_at,
                    ),
                    phase,
                );
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                return r;
            }
        }
    }
    respond(&edge, &entry, phase)
}

/// Logs the edge's identity once at start.
pub fn announce(edge: &Edge, addr: SocketAddr, tls: bool) {
    let c = edge.config();
    info!(id = %c.id, %addr, origin = %c.origin, public_url = %c.public_url, tls, "ferrocast edge listening");
    if c.token.is_none() {
        warn!("no edge token configured: viewer reports to the origin are unauthenticated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            media_playlist_ids("/live/cam/source/index.m3u8"),
            Some(("cam", "source"))
        );
        assert_eq!(media_playlist_ids("/live/cam/index.m3u8"), None);
        assert!(is_multivariant("/live/cam/index.m3u8"));
        assert!(!is_multivariant("/live/cam/source/index.m3u8"));
    }
}
