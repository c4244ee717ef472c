//! The Ferrocast edge: a caching reverse proxy for the origin's LL-HLS. Concurrent requests for
//! the same object share one upstream request whose body streams to every waiter as it arrives
//! (blocking playlist reloads and preload-hinted parts included); TTLs follow the origin's
//! Cache-Control; memory is bounded (LRU); a playlist the origin fails to answer in time is
//! served from the last good copy (marked `X-Ferrocast-Stale: 1`); viewers are counted and
//! reported to the origin. It does not package, transcode, or invent media.

pub mod cache;

use axum::body::Body as AxumBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cache::{Body, Cache, Entry, FetchResult, Lookup, MissTicket, Phase};
use media::viewers::{session_from_query, tag_multivariant, ViewerCounter};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
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

/// Edge counters (Prometheus text on `/metrics`).
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub upstream_requests: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub bytes_out: AtomicU64,
    pub requests: AtomicU64,
    pub reports_sent: AtomicU64,
    pub reports_failed: AtomicU64,
}

/// A last good playlist, for stale-if-error.
#[derive(Debug, Clone)]
struct Good {
    headers: Vec<(String, String)>,
    body: Bytes,
    /// EXT-X-TARGETDURATION of that playlist: a blocking request may legitimately be held by
    /// the origin for up to 3 × this.
    target_duration: Option<u64>,
}

fn target_duration(playlist: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(playlist).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.trim().parse().ok())
}

#[derive(Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

struct Inner {
    config: EdgeConfig,
    cache: Cache,
    client: reqwest::Client,
    stats: EdgeStats,
    viewers: Mutex<ViewerCounter>,
    last_good: Mutex<HashMap<String, Good>>,
    /// Until when the origin counts as troubled (a failed or timed-out request or report).
    /// While it does, a 5xx on a playlist is answered from the last good copy instead.
    trouble_until: Mutex<Option<Instant>>,
}

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
                client,
                stats: EdgeStats::default(),
                last_good: Mutex::new(HashMap::new()),
                trouble_until: Mutex::new(None),
                config,
            }),
        }
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
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
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            // Players on other origins (a web page with hls.js) may read everything served.
            .layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(tower_http::cors::Any)
                    .allow_methods([axum::http::Method::GET, axum::http::Method::HEAD])
                    .expose_headers([
                        axum::http::header::AGE,
                        axum::http::header::ETAG,
                        axum::http::HeaderName::from_static("x-cache"),
                    ]),
            )
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
        let body = serde_json::json!({
            "edge": c.id,
            "url": c.public_url,
            "viewers": viewers,
        });
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
                self.inner
                    .stats
                    .reports_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                self.inner
                    .stats
                    .reports_failed
                    .fetch_add(1, Ordering::Relaxed);
                debug!(status = %r.status(), "viewer report refused");
            }
            Err(e) => {
                self.inner
                    .stats
                    .reports_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.origin_trouble();
                debug!(error = %e, "viewer report failed");
            }
        }
    }

    /// Fetches `key` from the origin and completes the cache ticket as soon as the headers are
    /// in; the body keeps streaming into the entry in a task of its own.
    async fn fetch(&self, key: String, ticket: MissTicket) {
        let inner = &self.inner;
        inner
            .stats
            .upstream_requests
            .fetch_add(1, Ordering::Relaxed);
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
                inner.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
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
                    inner.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
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

/// The cache key: the path plus the LL-HLS delivery directives only, in a fixed order. Other
/// query parameters (session ids, CMCD) never split the cache.
pub fn cache_key(path: &str, query: Option<&str>) -> String {
    let mut msn = None;
    let mut part = None;
    let mut skip = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "_HLS_msn" => msn = Some(v),
            "_HLS_part" => part = Some(v),
            "_HLS_skip" => skip = Some(v),
            _ => {}
        }
    }
    let mut key = path.to_owned();
    let mut sep = '?';
    for (k, v) in [("_HLS_msn", msn), ("_HLS_part", part), ("_HLS_skip", skip)] {
        if let Some(v) = v {
            key.push(sep);
            key.push_str(k);
            key.push('=');
            key.push_str(v);
            sep = '&';
        }
    }
    key
}

/// `/live/{stream}/{rendition}/index.m3u8` → (stream, rendition).
fn media_playlist_ids(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/live/")?;
    let mut it = rest.split('/');
    let (stream, rendition, file) = (it.next()?, it.next()?, it.next()?);
    (file == "index.m3u8" && it.next().is_none()).then_some((stream, rendition))
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
        HeaderValue::from_static("age, etag, x-cache, x-ferrocast-session, x-ferrocast-stale"),
    );
    let status = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(mut chunks) = entry.body.complete_chunks() {
        // Complete: send the shared chunks as they are (no copy per viewer).
        let len: usize = chunks.iter().map(Bytes::len).sum();
        edge.inner
            .stats
            .bytes_out
            .fetch_add(len as u64, Ordering::Relaxed);
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

fn stale(edge: &Edge, good: &Good) -> Response {
    edge.inner.cache.stats.stale.fetch_add(1, Ordering::Relaxed);
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
    edge.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
    let path = uri.path();
    let query = uri.query();
    if path.len() > 512 || query.is_some_and(|q| q.len() > 1024) || path.contains("..") {
        return plain(StatusCode::BAD_REQUEST, "request too long");
    }
    let key = cache_key(path, query);
    let playlist = path.ends_with(".m3u8");
    let session = query.and_then(session_from_query);
    if let (Some((stream, rendition)), Some(sid)) = (media_playlist_ids(path), &session) {
        edge.inner
            .viewers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saw(stream, rendition, sid, Instant::now());
    }
    let good_key = path.to_owned();
    let blocking = query.is_some_and(|q| q.contains("_HLS_msn="));
    let wait = if !playlist {
        edge.inner.config.upstream_timeout
    } else if blocking {
        // The origin holds a blocking reload until the part exists (up to 3 × TD, then 503):
        // only a silence longer than that means trouble.
        let td = edge
            .inner
            .last_good
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&good_key)
            .and_then(|g| g.target_duration)
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
            let good = edge
                .inner
                .last_good
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&good_key)
                .cloned();
            if playlist {
                if let Some(g) = good {
                    debug!(%key, "serving stale playlist");
                    return stale(&edge, &g);
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
    if playlist && entry.status == 200 {
        if let Some(bytes) = entry.body.bytes() {
            let mut lg = edge
                .inner
                .last_good
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if lg.len() < 4096 || lg.contains_key(&good_key) {
                lg.insert(
                    good_key,
                    Good {
                        headers: entry.headers.clone(),
                        target_duration: target_duration(&bytes),
                        body: bytes,
                    },
                );
            }
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

async fn metrics(State(edge): State<Edge>) -> Response {
    use std::fmt::Write;
    let i = &edge.inner;
    let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let mut out = String::new();
    let _ = writeln!(out, "# HELP ferrocast_edge_cache_requests_total Requests by cache phase.\n# TYPE ferrocast_edge_cache_requests_total counter");
    for (phase, v) in [
        ("hit", &i.cache.stats.hits),
        ("miss", &i.cache.stats.misses),
        ("coalesced", &i.cache.stats.coalesced),
        ("stale", &i.cache.stats.stale),
    ] {
        let _ = writeln!(
            out,
            "ferrocast_edge_cache_requests_total{{phase=\"{phase}\"}} {}",
            c(v)
        );
    }
    let _ = writeln!(out, "# TYPE ferrocast_edge_upstream_requests_total counter\nferrocast_edge_upstream_requests_total {}", c(&i.stats.upstream_requests));
    let _ = writeln!(out, "# TYPE ferrocast_edge_upstream_errors_total counter\nferrocast_edge_upstream_errors_total {}", c(&i.stats.upstream_errors));
    let _ = writeln!(
        out,
        "# TYPE ferrocast_edge_evictions_total counter\nferrocast_edge_evictions_total {}",
        c(&i.cache.stats.evictions)
    );
    let _ = writeln!(
        out,
        "# TYPE ferrocast_edge_bytes_out_total counter\nferrocast_edge_bytes_out_total {}",
        c(&i.stats.bytes_out)
    );
    let _ = writeln!(
        out,
        "# TYPE ferrocast_edge_cache_bytes gauge\nferrocast_edge_cache_bytes {}",
        i.cache.bytes()
    );
    let _ = writeln!(
        out,
        "# TYPE ferrocast_edge_cache_entries gauge\nferrocast_edge_cache_entries {}",
        i.cache.entries()
    );
    let _ = writeln!(out, "# TYPE ferrocast_edge_reports_total counter\nferrocast_edge_reports_total{{result=\"ok\"}} {}\nferrocast_edge_reports_total{{result=\"failed\"}} {}", c(&i.stats.reports_sent), c(&i.stats.reports_failed));
    let counts = i
        .viewers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .counts(Instant::now());
    let _ = writeln!(out, "# HELP ferrocast_edge_viewers Viewers per stream and rendition.\n# TYPE ferrocast_edge_viewers gauge");
    for (stream, r) in counts {
        for (rendition, n) in r {
            let _ = writeln!(
                out,
                "ferrocast_edge_viewers{{stream=\"{stream}\",rendition=\"{rendition}\"}} {n}"
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Serves the edge over plain HTTP (HTTP/1.1 and h2c) until shutdown.
pub async fn serve(
    listener: TcpListener,
    edge: Edge,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, edge.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves the edge over TLS with ALPN (`h2`, `http/1.1`) until shutdown.
pub async fn serve_tls(
    listener: TcpListener,
    edge: Edge,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let router = edge.router();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Loads a PEM certificate chain and private key into a rustls config with ALPN h2 + http/1.1.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM file".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("private key: {e}"))?
        .ok_or("no private key in the PEM file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate/key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
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
    fn cache_key_keeps_only_directives_in_order() {
        assert_eq!(
            cache_key(
                "/live/a/source/index.m3u8",
                Some("fcsid=1&_HLS_part=2&CMCD=x&_HLS_msn=5")
            ),
            "/live/a/source/index.m3u8?_HLS_msn=5&_HLS_part=2"
        );
        assert_eq!(
            cache_key("/live/a/source/1.m4s", Some("fcsid=9")),
            "/live/a/source/1.m4s"
        );
        assert_eq!(
            cache_key("/p", Some("_HLS_skip=YES&_HLS_msn=1")),
            "/p?_HLS_msn=1&_HLS_skip=YES"
        );
    }

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
