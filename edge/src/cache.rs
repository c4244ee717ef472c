//! The edge cache: an explicit state machine per key with one writer and many readers.
//!
//! ```text
//!             lookup(key)
//!   ┌────────────┼──────────────────────────┐
//!   │ Ready, fresh          Pending           absent / expired
//!   ▼                       ▼                 ▼
//!  HIT (body may still   COALESCED (await   MISS (insert Pending, this request's task
//!  be streaming in)      the same fetch)     fetches; waiters share the result)
//! ```
//! A fetch publishes an [`Entry`] as soon as the upstream *headers* arrive; its [`Body`] keeps
//! growing while the upstream streams, and every reader streams from it, so a part that is
//! still being written at the origin reaches edge viewers chunk by chunk. Entries whose
//! Cache-Control allows no reuse (`no-cache`, errors) serve the requests that coalesced on the
//! fetch and are then forgotten. Memory is bounded by an LRU over complete entries.
//! Time is passed in (`now`), so expiry is testable without sleeping.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A response body that may still be arriving. Readers see every chunk once, in order.
#[derive(Debug)]
pub struct Body {
    state: Mutex<BodyState>,
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct BodyState {
    chunks: Vec<Bytes>,
    len: usize,
    /// `Some(Ok)` complete, `Some(Err)` the upstream failed mid-body.
    done: Option<Result<(), String>>,
}

impl Body {
    pub fn new() -> Arc<Body> {
        Arc::new(Body {
            state: Mutex::new(BodyState::default()),
            changed: watch::channel(0).0,
        })
    }

    pub fn complete(bytes: Bytes) -> Arc<Body> {
        let b = Body::new();
        b.push(bytes);
        b.finish(Ok(()));
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BodyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        {
            let mut s = self.lock();
            s.len += chunk.len();
            s.chunks.push(chunk);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Marks the body complete (or failed). A complete body is joined into one buffer once,
    /// so every later response is a single shared `Bytes` (one write, no copy per viewer).
    pub fn finish(&self, result: Result<(), String>) {
        {
            let mut s = self.lock();
            if result.is_ok() && s.chunks.len() > 1 {
                let whole = Bytes::from(s.chunks.concat());
                s.chunks = vec![whole];
            }
            s.done = Some(result);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.lock().done, Some(Ok(())))
    }

    /// The body's chunks (shared, not copied) if it is complete.
    pub fn complete_chunks(&self) -> Option<Vec<Bytes>> {
        let s = self.lock();
        match s.done {
            Some(Ok(())) => Some(s.chunks.clone()),
            _ => None,
        }
    }

    /// The whole body if complete (one copy when it arrived in several chunks).
    pub fn bytes(&self) -> Option<Bytes> {
        let s = self.lock();
        match s.done {
            Some(Ok(())) => Some(Bytes::from(s.chunks.concat())),
            _ => None,
        }
    }

    /// Waits (at most `timeout`) for the body to complete; the whole body, or `None` if it
    /// failed or did not finish in time.
    pub async fn complete_bytes(&self, timeout: Duration) -> Option<Bytes> {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                {
                    let s = self.lock();
                    match &s.done {
                        Some(Ok(())) => return Some(Bytes::from(s.chunks.concat())),
                        Some(Err(_)) => return None,
                        None => {}
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// The bytes after the first `sent`, and whether the body is finished (with its result).
    /// Offsets survive the join in [`Body::finish`].
    fn read_after(&self, sent: usize) -> (Vec<Bytes>, Option<Result<(), String>>) {
        let s = self.lock();
        let mut out = Vec::new();
        let mut pos = 0;
        for c in &s.chunks {
            let end = pos + c.len();
            if end > sent {
                out.push(c.slice(sent.saturating_sub(pos)..));
            }
            pos = end;
        }
        (out, s.done.clone())
    }

    /// Streams the body from the start, waiting for chunks as they arrive. An upstream failure
    /// mid-body becomes a stream error (the client sees a broken transfer, not a short body).
    pub fn reader(
        self: &Arc<Self>,
        idle_timeout: Duration,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        struct R {
            body: Arc<Body>,
            rx: watch::Receiver<u64>,
            sent: usize,
            queue: std::collections::VecDeque<Bytes>,
            finished: bool,
            idle: Duration,
        }
        let r = R {
            rx: self.changed.subscribe(),
            body: Arc::clone(self),
            sent: 0,
            queue: Default::default(),
            finished: false,
            idle: idle_timeout,
        };
        futures_util::stream::unfold(r, |mut r| async move {
            loop {
                if let Some(c) = r.queue.pop_front() {
                    r.sent += c.len();
                    return Some((Ok(c), r));
                }
                if r.finished {
                    return None;
                }
                let (chunks, done) = r.body.read_after(r.sent);
                r.queue.extend(chunks);
                match done {
                    Some(Ok(())) => r.finished = true,
                    Some(Err(e)) if r.queue.is_empty() => {
                        r.finished = true;
                        return Some((Err(std::io::Error::other(e)), r));
                    }
                    _ => {}
                }
                if !r.queue.is_empty() || r.finished {
                    continue;
                }
                match tokio::time::timeout(r.idle, r.rx.changed()).await {
                    Ok(Ok(())) => {}
                    _ => {
                        r.finished = true;
                        return Some((Err(std::io::Error::other("upstream body stalled")), r));
                    }
                }
            }
        })
    }
}

/// A cached response (headers known; body possibly still arriving).
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Arc<Body>,
    /// When the upstream headers arrived.
    pub fetched_at: Instant,
    /// The upstream's own `Age`, added to ours.
    pub upstream_age: Duration,
    pub ttl: Duration,
    last_used: AtomicU64,
}

impl Entry {
    pub fn new(
        status: u16,
        headers: Vec<(String, String)>,
        body: Arc<Body>,
        now: Instant,
    ) -> Entry {
        let cache_control = headers
            .iter()
            .find(|(k, _)| k == "cache-control")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let upstream_age = headers
            .iter()
            .find(|(k, _)| k == "age")
            .and_then(|(_, v)| v.parse().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let ttl = if status == 200 {
            ttl_from_cache_control(cache_control).saturating_sub(upstream_age)
        } else {
            Duration::ZERO
        };
        Entry {
            status,
            headers,
            body,
            fetched_at: now,
            upstream_age,
            ttl,
            last_used: AtomicU64::new(0),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched_at) + self.upstream_age
    }

    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.fetched_at) < self.ttl
    }
}

/// `max-age` (or `s-maxage`) from a Cache-Control value; `no-cache`, `no-store` and `private`
/// mean no reuse.
pub fn ttl_from_cache_control(v: &str) -> Duration {
    let mut max_age = None;
    for d in v.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" || lower == "private" {
            return Duration::ZERO;
        }
        if let Some(n) = lower.strip_prefix("s-maxage=") {
            return n.parse().map_or(Duration::ZERO, Duration::from_secs);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            max_age = n.parse().ok().map(Duration::from_secs);
        }
    }
    max_age.unwrap_or(Duration::ZERO)
}

/// How a request was served (logged and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Hit,
    Miss,
    Coalesced,
    Stale,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Hit => "hit",
            Phase::Miss => "miss",
            Phase::Coalesced => "coalesced",
            Phase::Stale => "stale",
        }
    }
}

/// The outcome of a fetch, as waiters see it.
pub type FetchResult = Result<Arc<Entry>, String>;

/// A fetch in flight: waiters subscribe to its result.
#[derive(Debug)]
pub struct Pending {
    tx: watch::Sender<Option<FetchResult>>,
    started: Instant,
}

/// A fetch still pending after this long is presumed dead (its writer failed without
/// completing): the next request starts a new one instead of waiting on it.
pub const MAX_PENDING: Duration = Duration::from_secs(30);

impl Pending {
    pub fn subscribe(&self) -> watch::Receiver<Option<FetchResult>> {
        self.tx.subscribe()
    }
}

#[derive(Debug)]
enum Slot {
    Pending(Arc<Pending>),
    Ready(Arc<Entry>),
}

/// What [`Cache::lookup`] decided.
#[derive(Debug)]
pub enum Lookup {
    Hit(Arc<Entry>),
    /// Someone else is fetching: wait on this.
    Coalesced(watch::Receiver<Option<FetchResult>>),
    /// This caller must fetch and then call [`Cache::complete`] with the ticket.
    Miss(MissTicket, watch::Receiver<Option<FetchResult>>),
}

/// Proof that the holder is the one writer for a key.
#[derive(Debug)]
pub struct MissTicket {
    key: String,
    pending: Arc<Pending>,
}

/// Counters for the cache's phases and size.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub stale: AtomicU64,
    pub evictions: AtomicU64,
}

#[derive(Debug)]
pub struct Cache {
    slots: Mutex<HashMap<String, Slot>>,
    max_bytes: usize,
    tick: AtomicU64,
    pub stats: CacheStats,
}

impl Cache {
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            slots: Mutex::new(HashMap::new()),
            max_bytes,
            tick: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, key: &str, now: Instant) -> Lookup {
        let mut slots = self.lock();
        match slots.get(key) {
            Some(Slot::Ready(e)) if e.fresh(now) => {
                e.last_used
                    .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(Arc::clone(e));
            }
            Some(Slot::Pending(p)) if now.saturating_duration_since(p.started) < MAX_PENDING => {
                self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                return Lookup::Coalesced(p.subscribe());
            }
            _ => {}
        }
        let pending = Arc::new(Pending {
            tx: watch::channel(None).0,
            started: now,
        });
        let rx = pending.subscribe();
        slots.insert(key.to_owned(), Slot::Pending(Arc::clone(&pending)));
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss(
            MissTicket {
                key: key.to_owned(),
                pending,
            },
            rx,
        )
    }

    /// The writer reports its fetch (headers arrived, or it failed). Reusable entries stay;
    /// others only reach the requests that coalesced on this fetch.
    pub fn complete(&self, ticket: MissTicket, result: FetchResult) {
        {
            let mut slots = self.lock();
            let ours = matches!(slots.get(&ticket.key), Some(Slot::Pending(p)) if Arc::ptr_eq(p, &ticket.pending));
            if ours {
                match &result {
                    Ok(e) if e.ttl > Duration::ZERO => {
                        e.last_used
                            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                        slots.insert(ticket.key.clone(), Slot::Ready(Arc::clone(e)));
                    }
                    _ => {
                        slots.remove(&ticket.key);
                    }
                }
            }
        }
        ticket.pending.tx.send_replace(Some(result));
        self.evict();
    }

    /// Bytes held by ready entries.
    pub fn bytes(&self) -> usize {
        self.lock()
            .values()
            .map(|s| match s {
                Slot::Ready(e) => e.body.len(),
                Slot::Pending(_) => 0,
            })
            .sum()
    }

    pub fn entries(&self) -> usize {
        self.lock().len()
    }

    /// Drops expired entries and, while over the byte budget, the least recently used complete
    /// ones (entries still streaming in are never evicted: readers hold them anyway).
    pub fn sweep(&self, now: Instant) {
        let mut slots = self.lock();
        slots.retain(|_, s| match s {
            Slot::Ready(e) => e.fresh(now) || !e.body.is_complete(),
            Slot::Pending(_) => true,
        });
        drop(slots);
        self.evict();
    }

    fn evict(&self) {
        let mut slots = self.lock();
        let mut total: usize = slots
            .values()
            .map(|s| match s {
                Slot::Ready(e) => e.body.len(),
                Slot::Pending(_) => 0,
            })
            .sum();
        if total <= self.max_bytes {
            return;
        }
        let mut victims: Vec<(u64, String, usize)> = slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready(e) if e.body.is_complete() => {
                    Some((e.last_used.load(Ordering::Relaxed), k.clone(), e.body.len()))
                }
                _ => None,
            })
            .collect();
        victims.sort();
        for (_, k, len) in victims {
            if total <= self.max_bytes {
                break;
            }
            slots.remove(&k);
            total -= len;
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn entry(cc: &str, body: &'static [u8], now: Instant) -> Arc<Entry> {
        Arc::new(Entry::new(
            200,
            vec![("cache-control".into(), cc.into())],
            Body::complete(Bytes::from_static(body)),
            now,
        ))
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(
            ttl_from_cache_control("public, max-age=60, immutable"),
            Duration::from_secs(60)
        );
        assert_eq!(ttl_from_cache_control("no-cache"), Duration::ZERO);
        assert_eq!(
            ttl_from_cache_control("max-age=60, s-maxage=5"),
            Duration::from_secs(5)
        );
        assert_eq!(ttl_from_cache_control(""), Duration::ZERO);
        assert_eq!(ttl_from_cache_control("max-age=abc"), Duration::ZERO);
    }

    #[test]
    fn miss_then_coalesced_then_hit_then_expired() {
        let c = Cache::new(1 << 20);
        let t = Instant::now();
        let Lookup::Miss(ticket, _) = c.lookup("/a", t) else {
            panic!()
        };
        assert!(matches!(c.lookup("/a", t), Lookup::Coalesced(_)));
        c.complete(ticket, Ok(entry("max-age=2", b"x", t)));
        assert!(matches!(
            c.lookup("/a", t + Duration::from_secs(1)),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            c.lookup("/a", t + Duration::from_secs(3)),
            Lookup::Miss(..)
        ));
        assert_eq!(c.stats.misses.load(Ordering::Relaxed), 2);
        assert_eq!(c.stats.coalesced.load(Ordering::Relaxed), 1);
        assert_eq!(c.stats.hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn uncacheable_responses_reach_only_coalesced_waiters() {
        let c = Cache::new(1 << 20);
        let t = Instant::now();
        let Lookup::Miss(ticket, _) = c.lookup("/p", t) else {
            panic!()
        };
        let Lookup::Coalesced(rx) = c.lookup("/p", t) else {
            panic!()
        };
        c.complete(ticket, Ok(entry("no-cache", b"playlist", t)));
        assert!(rx.borrow().as_ref().unwrap().is_ok());
        assert!(
            matches!(c.lookup("/p", t), Lookup::Miss(..)),
            "no-cache is not reused"
        );
    }

    #[test]
    fn lru_bounds_bytes() {
        let c = Cache::new(12);
        let t = Instant::now();
        let put = |k: &str| {
            let Lookup::Miss(ticket, _) = c.lookup(k, t) else {
                panic!()
            };
            c.complete(ticket, Ok(entry("max-age=60", b"123456", t)));
        };
        put("/1");
        put("/2");
        assert!(matches!(c.lookup("/1", t), Lookup::Hit(_))); // /1 is now the most recent
        put("/3");
        assert!(c.bytes() <= 12);
        assert!(
            matches!(c.lookup("/1", t), Lookup::Hit(_)),
            "recently used survives"
        );
        assert!(
            matches!(c.lookup("/2", t), Lookup::Miss(..)),
            "least recently used evicted"
        );
        assert_eq!(c.stats.evictions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_abandoned_fetch_does_not_block_the_key_forever() {
        let c = Cache::new(1 << 20);
        let t = Instant::now();
        let Lookup::Miss(ticket, _) = c.lookup("/x", t) else {
            panic!()
        };
        drop(ticket); // the writer died without completing
        assert!(matches!(
            c.lookup("/x", t + Duration::from_secs(1)),
            Lookup::Coalesced(_)
        ));
        assert!(matches!(
            c.lookup("/x", t + MAX_PENDING + Duration::from_secs(1)),
            Lookup::Miss(..)
        ));
    }

    #[tokio::test]
    async fn readers_stream_a_growing_body() {
        let b = Body::new();
        b.push(Bytes::from_static(b"ab"));
        let mut r = Box::pin(b.reader(Duration::from_secs(5)));
        assert_eq!(r.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        let b2 = Arc::clone(&b);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            b2.push(Bytes::from_static(b"cd"));
            b2.finish(Ok(()));
        });
        assert_eq!(r.next().await.unwrap().unwrap(), Bytes::from_static(b"cd"));
        assert!(r.next().await.is_none());
        // A late reader gets everything, joined into one buffer at completion.
        let all: Vec<_> = b.reader(Duration::from_secs(1)).collect().await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].as_ref().unwrap(), &Bytes::from_static(b"abcd"));
    }

    #[tokio::test]
    async fn upstream_failure_mid_body_is_an_error() {
        let b = Body::new();
        b.push(Bytes::from_static(b"ab"));
        b.finish(Err("reset".into()));
        let items: Vec<_> = b.reader(Duration::from_secs(1)).collect().await;
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }
}
