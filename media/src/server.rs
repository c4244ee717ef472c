//! The HTTP server of the origin and the edge: hyper (HTTP/1.1 and HTTP/2, TLS optional) with
//! the limits a public server needs, each refused clearly, logged and counted
//! ([`crate::limits`]):
//!
//! - connections in total and per IP address: over them the connection gets one canned
//!   `503` (total) or `429` (per IP) with `Retry-After` and is closed;
//! - request header size (`431` from hyper) and the time the headers may take (slowloris);
//! - a connection whose reader stops reading (a response write makes no progress for the
//!   send timeout) or that sits idle is closed, dropping what it held;
//! - requests per second per IP (a token bucket; `429` + `Retry-After`), off unless set;
//! - blocking playlist requests (`_HLS_msn`) waiting at once, in total (`503`) and per
//!   connection (`429`, HTTP/2 multiplexes many on one).

use crate::limits::{Limit, Refusals};
use axum::body::Body;
use http::{header, HeaderValue, Request, Response, StatusCode};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The limits (see the module docs); [`HttpLimits::default`] are the documented defaults.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Request head bytes (request line and headers); HTTP/2: the header list size.
    pub max_header_bytes: usize,
    /// Time a request's headers may take to arrive: from the connection's start for its
    /// first request, from the first byte of each later one (an idle keep-alive connection
    /// waits under `idle_timeout`, as nginx's `keepalive_timeout`).
    pub header_timeout: Duration,
    /// Time a response write may make no progress (the reader stopped reading).
    pub send_timeout: Duration,
    /// Time a connection may see no bytes either way.
    pub idle_timeout: Duration,
    /// Requests per second per IP address (burst: twice that); 0: no limit.
    pub requests_per_ip: f64,
    pub max_blocked: usize,
    pub max_blocked_per_connection: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 10_000,
            max_connections_per_ip: 512,
            max_header_bytes: 16 << 10,
            header_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            requests_per_ip: 0.0,
            max_blocked: 10_000,
            max_blocked_per_connection: 32,
        }
    }
}

/// State shared by every connection of one server.
struct Shared {
    limits: HttpLimits,
    refusals: Refusals,
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    blocked: AtomicUsize,
    rate: Mutex<RateLimiter>,
    /// Canned refusals being written (bounded: beyond it a refused socket is just closed).
    refusing: AtomicUsize,
    /// When each limit's refusals were last logged (a flood logs one line a second).
    logged: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Shared {
    /// Counts a refusal and logs it, at most once a second per limit (with how many were
    /// refused since the last line).
    fn refused(&self, limit: Limit, peer: SocketAddr, what: &str) {
        self.refusals.count(limit);
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let (at, since) = logged
            .entry(limit.as_str())
            .or_insert((now - Duration::from_secs(2), 0));
        *since += 1;
        if now.duration_since(*at) >= Duration::from_secs(1) {
            warn!(%peer, limit = limit.as_str(), refused = *since, "http {what}");
            *at = now;
            *since = 0;
        }
    }
}

/// Serves `router` on `listener` until `shutdown` (then lets open requests finish, up to 5 s).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    refusals: Refusals,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let rate = RateLimiter::new(limits.requests_per_ip);
    let shared = Arc::new(Shared {
        limits,
        refusals,
        connections: AtomicUsize::new(0),
        per_ip: Mutex::new(HashMap::new()),
        blocked: AtomicUsize::new(0),
        rate: Mutex::new(rate),
        refusing: AtomicUsize::new(0),
        logged: Mutex::new(HashMap::new()),
    });
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let slot = match ConnectionSlot::take(&shared, peer.ip()) {
            Ok(slot) => slot,
            Err(limit) => {
                refuse_connection(&shared, tcp, peer, limit, acceptor.is_some());
                continue;
            }
        };
        let (router, shared, acceptor, shutdown) = (
            router.clone(),
            Arc::clone(&shared),
            acceptor.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection(tcp, peer, router, &shared, shutdown).await,
                Some(a) => {
                    let tls = tokio::time::timeout(shared.limits.header_timeout, a.accept(tcp));
                    match tls.await {
                        Ok(Ok(s)) => connection(s, peer, router, &shared, shutdown).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => {
                            shared.refusals.count(Limit::HttpHeaderTimeout);
                            debug!(%peer, "tls handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// A connection's place in the totals, given back on drop.
struct ConnectionSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ConnectionSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<ConnectionSlot, Limit> {
        let mut per_ip = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if shared.connections.load(Ordering::Relaxed) >= shared.limits.max_connections {
            return Err(Limit::HttpConnections);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= shared.limits.max_connections_per_ip {
            return Err(Limit::HttpConnectionsPerIp);
        }
        *n += 1;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionSlot {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over a limit with one canned response and closes it. Over TLS the
/// socket is closed without one (a handshake costs more than the refusal is worth).
fn refuse_connection(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    limit: Limit,
    tls: bool,
) {
    shared.refusals.count(limit);
    let (status, why) = match limit {
        Limit::HttpConnectionsPerIp => (
            "429 Too Many Requests",
            "too many connections from your address",
        ),
        _ => ("503 Service Unavailable", "too many connections"),
    };
    warn!(%peer, limit = limit.as_str(), "http connection refused: {why}");
    if tls || shared.refusing.fetch_add(1, Ordering::Relaxed) >= 256 {
        if !tls {
            shared.refusing.fetch_sub(1, Ordering::Relaxed);
        }
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let body = format!("{why}\n");
        let head = format!(
            "HTTP/1.1 {status}\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tcp.write_all(head.as_bytes()).await?;
            tcp.shutdown().await?;
            // Read what the client sent so the close is not a reset that loses the answer.
            let mut sink = [0u8; 4096];
            loop {
                match tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await {
                    Ok(0) | Err(_) => return io::Result::Ok(()),
                    Ok(_) => {}
                }
            }
        })
        .await;
        shared.refusing.fetch_sub(1, Ordering::Relaxed);
    });
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    peer: SocketAddr,
    router: axum::Router,
    shared: &Arc<Shared>,
    shutdown: CancellationToken,
) {
    let limits = &shared.limits;
    let requests = Arc::new(Requests::default());
    let io = Guarded::new(io, limits, Arc::clone(&requests));
    let cut = Arc::clone(&io.cut);
    let service = Limited {
        router,
        shared: Arc::clone(shared),
        peer,
        blocked: Arc::new(AtomicUsize::new(0)),
        requests,
    };
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // Guarded keeps the header deadline: hyper's also runs while a keep-alive connection
        // waits for its next request, closing it (and counting a slowloris) after 10 s.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(Duration::from_secs(5), conn).await.unwrap_or(Ok(()))
        }
    };
    let Err(e) = result else { return };
    if let Some(limit) = cut.get() {
        let why = match limit {
            Limit::HttpSlowReader => "connection cut off: the client stopped reading",
            Limit::HttpHeaderTimeout => "request refused: headers not received in time",
            _ => "connection cut off: idle",
        };
        shared.refused(limit, peer, why);
        return;
    }
    let limit = e.downcast_ref::<hyper::Error>().and_then(|h| {
        if h.is_parse_too_large() {
            Some(Limit::HttpHeaderSize)
        } else if h.is_timeout() {
            Some(Limit::HttpHeaderTimeout)
        } else {
            None
        }
    });
    match limit {
        Some(Limit::HttpHeaderSize) => shared.refused(
            Limit::HttpHeaderSize,
            peer,
            "request refused: headers too large",
        ),
        Some(l) => shared.refused(l, peer, "request refused: headers not received in time"),
        None => debug!(%peer, error = %e, "http connection ended"),
    }
}

/// The router behind the per-request limits (request rate, blocking requests).
#[derive(Clone)]
struct Limited {
    router: axum::Router,
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Blocking requests waiting on this connection.
    blocked: Arc<AtomicUsize>,
    requests: Arc<Requests>,
}

/// A connection's requests as its header deadline sees them: how many heads were parsed, and
/// how many responses are not yet sent to their end.
#[derive(Debug, Default)]
struct Requests {
    started: AtomicUsize,
    in_flight: AtomicUsize,
}

/// One response in flight: its body, which counts the response done when it is dropped
/// (hyper drops a body once it has sent it, or when the connection ends).
struct Tracked {
    body: Body,
    requests: Arc<Requests>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.requests.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}

type BoxFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

impl<B> tower::Service<Request<B>> for Limited
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let requests = Arc::clone(&self.requests);
        requests.in_flight.fetch_add(1, Ordering::Relaxed);
        requests.started.fetch_add(1, Ordering::Relaxed);
        let respond = self.respond(req);
        Box::pin(async move {
            let Ok(r) = respond.await;
            Ok(r.map(|body| Body::new(Tracked { body, requests })))
        })
    }
}

impl Limited {
    fn respond<B>(&mut self, req: Request<B>) -> BoxFuture
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let shared = Arc::clone(&self.shared);
        let allowed = shared
            .rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(self.peer.ip(), Instant::now());
        if !allowed {
            return refusal(&shared, self.peer, Limit::RequestRate);
        }
        let blocking = crate::directives::is_blocking(req.uri().query());
        let guard = if blocking {
            match BlockedGuard::take(&shared, &self.blocked) {
                Ok(g) => Some(g),
                Err(limit) => return refusal(&shared, self.peer, limit),
            }
        } else {
            None
        };
        let mut router = self.router.clone();
        let req = req.map(Body::new);
        Box::pin(async move {
            let r = tower::Service::call(&mut router, req).await;
            drop(guard);
            r
        })
    }
}

fn refusal(shared: &Shared, peer: SocketAddr, limit: Limit) -> BoxFuture {
    let (status, why) = match limit {
        Limit::RequestRate => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from your address",
        ),
        Limit::BlockedRequestsPerConnection => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many blocking playlist requests on this connection",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many blocking playlist requests",
        ),
    };
    shared.refused(limit, peer, &format!("request refused: {why}"));
    let mut r = Response::new(Body::from(format!("{why}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Box::pin(std::future::ready(Ok(r)))
}

/// A blocking request's place in the totals, given back when its response is ready.
struct BlockedGuard {
    shared: Arc<Shared>,
    connection: Arc<AtomicUsize>,
}

impl BlockedGuard {
    fn take(shared: &Arc<Shared>, connection: &Arc<AtomicUsize>) -> Result<BlockedGuard, Limit> {
        let limits = &shared.limits;
        if connection.fetch_add(1, Ordering::Relaxed) >= limits.max_blocked_per_connection {
            connection.fetch_sub(1, Ordering::Relaxed);
            return Err(Limit::BlockedRequestsPerConnection);
        }
        if shared.blocked.fetch_add(1, Ordering::Relaxed) >= limits.max_blocked {
            shared.blocked.fetch_sub(1, Ordering::Relaxed);
            connection.fetch_sub(1, Ordering::Relaxed);
            return Err(Limit::BlockedRequests);
        }
        Ok(BlockedGuard {
            shared: Arc::clone(shared),
            connection: Arc::clone(connection),
        })
    }
}

impl Drop for BlockedGuard {
    fn drop(&mut self) {
        self.shared.blocked.fetch_sub(1, Ordering::Relaxed);
        self.connection.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests per second per address: a token bucket each (burst twice the rate), forgotten
/// once full again so the map holds only recently busy addresses. Time is passed in.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// `rate` requests per second per address; 0: everything allowed.
    pub fn new(rate: f64) -> RateLimiter {
        RateLimiter {
            rate,
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    fn burst(&self) -> f64 {
        (2.0 * self.rate).max(1.0)
    }

    /// Whether one more request from `ip` at `now` is within the rate (and takes a token).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let (rate, burst) = (self.rate, self.burst());
        if self
            .last_sweep
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.last_sweep = Some(now);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Once set, why the connection was cut off.
#[derive(Debug, Default)]
struct Cut(Mutex<Option<Limit>>);

impl Cut {
    fn set(&self, l: Limit) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
    }

    fn get(&self) -> Option<Limit> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connection's socket with three deadlines: a write that makes no progress for `send`
/// fails (the client stopped reading), and so does a read when nothing moved either way for
/// `idle`, or when an HTTP/1 request head is not complete `header` after the connection
/// started (its first request) or after the first byte of a later one arrived with no
/// response in flight. Any failure ends the connection and frees what it held. HTTP/2 (its
/// preface first) has no head deadline: its streams' headers come in frames between others.
struct Guarded<S> {
    inner: S,
    send: Duration,
    idle: Duration,
    header: Duration,
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    /// Armed while a request head is awaited, with the count of heads parsed when it was.
    head_timer: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    requests: Arc<Requests>,
    first_read: bool,
    moved: bool,
    cut: Arc<Cut>,
}

impl<S> Guarded<S> {
    fn new(inner: S, limits: &HttpLimits, requests: Arc<Requests>) -> Guarded<S> {
        Guarded {
            inner,
            send: limits.send_timeout,
            idle: limits.idle_timeout,
            header: limits.header_timeout,
            write_stall: None,
            idle_timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            head_timer: Some((Box::pin(tokio::time::sleep(limits.header_timeout)), 0)),
            requests,
            first_read: true,
            moved: false,
            cut: Arc::new(Cut::default()),
        }
    }

    /// Keeps the head deadline: off once a head was parsed since it was armed; armed when a
    /// read brought bytes while no request is in flight (the start of the next head).
    fn watch_head(&mut self, read: Option<&[u8]>) {
        if let Some(bytes) = read.filter(|_| std::mem::take(&mut self.first_read)) {
            if bytes.starts_with(b"PRI * HTTP/2.0") {
                self.head_timer = None;
                self.header = Duration::ZERO;
                return;
            }
        }
        let started = self.requests.started.load(Ordering::Relaxed);
        if matches!(self.head_timer, Some((_, armed)) if armed != started) {
            self.head_timer = None;
        }
        let idle = self.requests.in_flight.load(Ordering::Relaxed) == 0;
        if read.is_some_and(|b| !b.is_empty())
            && self.head_timer.is_none()
            && idle
            && !self.header.is_zero()
        {
            self.head_timer = Some((Box::pin(tokio::time::sleep(self.header)), started));
        }
    }

    fn progress(&mut self) {
        self.moved = true;
    }

    /// A write is pending: fails once it has been pending for `send`.
    fn stalled_write(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let send = self.send;
        let t = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        if t.as_mut().poll(cx).is_ready() {
            self.cut.set(Limit::HttpSlowReader);
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ));
        }
        None
    }

    fn write_result<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => match self.stalled_write(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            ready => {
                self.write_stall = None;
                self.progress();
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                self.watch_head(None);
                if let Some((t, _)) = self.head_timer.as_mut() {
                    if t.as_mut().poll(cx).is_ready() {
                        self.cut.set(Limit::HttpHeaderTimeout);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request headers not received in time",
                        )));
                    }
                }
                let idle = self.idle;
                if std::mem::take(&mut self.moved) {
                    let deadline = tokio::time::Instant::now() + idle;
                    self.idle_timer.as_mut().reset(deadline);
                }
                if self.idle_timer.as_mut().poll(cx).is_ready() {
                    self.cut.set(Limit::HttpIdleTimeout);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle")));
                }
                Poll::Pending
            }
            ready => {
                if buf.filled().len() > before {
                    self.progress();
                    let filled = buf.filled();
                    let bytes = filled.get(before..).unwrap_or_default();
                    self.watch_head(Some(bytes));
                }
                ready
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_result(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_result(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_result(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limiter_allows_a_burst_then_the_rate_and_forgets_quiet_addresses() {
        let mut r = RateLimiter::new(5.0);
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| r.allow(a, t0)).count();
        assert_eq!(allowed, 10, "burst of twice the rate");
        assert!(r.allow(b, t0), "another address has its own bucket");
        // One second later: 5 more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| r.allow(a, t1)).count(), 5);
        // Quiet for a minute: both buckets are full again and are forgotten at the next sweep.
        let t2 = t1 + Duration::from_secs(60);
        assert!(r.allow(IpAddr::from([198, 51, 100, 7]), t2));
        assert_eq!(r.tracked(), 1);
        let mut off = RateLimiter::new(0.0);
        assert!((0..10_000).all(|_| off.allow(a, t0)));
        assert_eq!(off.tracked(), 0);
    }
}
