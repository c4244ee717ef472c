//! The edge cache: an explicit state machine per key with one writer and many readers.
//!
//! ```text
//!             lookup(key)
//!   ┌────────────┼──────────────────────────┐
//!   │ Ready, fresh          Pending           absent / expired
//!   ▼                       ▼                 ▼
//!  HIT (body may still   COALESCED (await   MISS (insert Pending, this request's task
//!  be streaming in)      the same fetch)     fetches; waiters share the result)
//!                                             │ origin fails or is too slow (playlists)
//!                                             ▼
//!                                           STALE (the last good copy of that playlist,
//!                                           kept per path by `keep_good`; never media)
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

pub use media::body::Body;

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

/// The last good copy of a playlist (per path, directives ignored): what the Stale state
/// serves when the origin fails or is slow.
#[derive(Debug, Clone)]
pub struct Good {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// EXT-X-TARGETDURATION of that playlist: a blocking request may legitimately be held by
    /// the origin for up to 3 × this.
    pub target_duration: Option<u64>,
}

impl Good {
    pub fn new(headers: Vec<(String, String)>, body: Bytes) -> Good {
        let target_duration = std::str::from_utf8(&body).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
                .and_then(|v| v.trim().parse().ok())
        });
        Good {
            headers,
            body,
            target_duration,
        }
    }
}

/// Playlists whose last good copy is kept (bounded: made-up paths never get a 200).
const MAX_GOOD: usize = 4096;

/// Counters for the cache's phases (prometheus counters: atomics the binary can register).
#[derive(Debug, Clone)]
pub struct CacheStats {
    /// Requests by phase (`hit`, `miss`, `coalesced`, `stale`).
    pub requests: prometheus::IntCounterVec,
    pub hits: prometheus::IntCounter,
    pub misses: prometheus::IntCounter,
    pub coalesced: prometheus::IntCounter,
    pub stale: prometheus::IntCounter,
    pub evictions: prometheus::IntCounter,
}

impl Default for CacheStats {
    fn default() -> Self {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "ferrocast_edge_cache_requests_total",
                "Requests by cache phase.",
            ),
            &["phase"],
        )
        .unwrap_or_else(|e| panic!("cache requests: {e}"));
        let phase = |p: Phase| requests.with_label_values(&[p.as_str()]);
        CacheStats {
            hits: phase(Phase::Hit),
            misses: phase(Phase::Miss),
            coalesced: phase(Phase::Coalesced),
            stale: phase(Phase::Stale),
            evictions: prometheus::IntCounter::new(
                "ferrocast_edge_evictions_total",
                "Cache entries evicted to stay within the memory budget.",
            )
            .unwrap_or_else(|e| panic!("evictions: {e}")),
            requests,
        }
    }
}

#[derive(Debug)]
pub struct Cache {
    slots: Mutex<HashMap<String, Slot>>,
    max_bytes: usize,
    tick: AtomicU64,
    good: Mutex<HashMap<String, Good>>,
    pub stats: CacheStats,
}

impl Cache {
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            slots: Mutex::new(HashMap::new()),
            max_bytes,
            tick: AtomicU64::new(0),
            good: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, key: &str, now: Instant) -> Lookup {
        let mut slots = self.lock();
        match slots.get(key) {
            // A body the upstream cut off (origin killed, connection reset) is not reused:
            // the request fetches again instead of getting the same broken transfer.
            Some(Slot::Ready(e)) if e.fresh(now) && !e.body.is_failed() => {
                e.last_used
                    .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                self.stats.hits.inc();
                return Lookup::Hit(Arc::clone(e));
            }
            Some(Slot::Pending(p)) if now.saturating_duration_since(p.started) < MAX_PENDING => {
                self.stats.coalesced.inc();
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
        self.stats.misses.inc();
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
    /// Remembers a playlist the origin answered 200 for, as the Stale fallback of `path`.
    pub fn keep_good(&self, path: &str, good: Good) {
        let mut g = self.good.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() < MAX_GOOD || g.contains_key(path) {
            g.insert(path.to_owned(), good);
        }
    }

    /// Enters the Stale state for `path`: its last good copy, counted, if there is one.
    pub fn stale(&self, path: &str) -> Option<Good> {
        let g = self.good.lock().unwrap_or_else(|e| e.into_inner());
        let good = g.get(path).cloned();
        if good.is_some() {
            self.stats.stale.inc();
        }
        good
    }

    /// The target duration of `path`'s last good copy.
    pub fn good_target_duration(&self, path: &str) -> Option<u64> {
        let g = self.good.lock().unwrap_or_else(|e| e.into_inner());
        g.get(path).and_then(|g| g.target_duration)
    }

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

    /// Drops expired entries, failed ones and, while over the byte budget, the least recently
    /// used complete ones (entries still streaming in are never evicted: readers hold them
    /// anyway).
    pub fn sweep(&self, now: Instant) {
        let mut slots = self.lock();
        slots.retain(|_, s| match s {
            Slot::Ready(e) if e.body.is_failed() => false,
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
            self.stats.evictions.inc();
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
        assert_eq!(c.stats.misses.get(), 2);
        assert_eq!(c.stats.coalesced.get(), 1);
        assert_eq!(c.stats.hits.get(), 1);
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
        assert_eq!(c.stats.evictions.get(), 1);
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

    /// An origin killed mid-part: the entry published at its headers has a failed body. The
    /// next request fetches again (it used to get the same cut-off transfer until the TTL
    /// ran out), and a sweep drops it whatever its TTL.
    #[test]
    fn a_body_cut_off_upstream_is_fetched_again_and_swept() {
        let c = Cache::new(1 << 20);
        let t = Instant::now();
        let Lookup::Miss(ticket, _) = c.lookup("/part", t) else {
            panic!()
        };
        let body = Body::new();
        let e = Arc::new(Entry::new(
            200,
            vec![("cache-control".into(), "max-age=60".into())],
            Arc::clone(&body),
            t,
        ));
        c.complete(ticket, Ok(e));
        body.push(Bytes::from_static(b"moof"));
        assert!(
            matches!(c.lookup("/part", t), Lookup::Hit(_)),
            "streaming is served"
        );
        body.finish(Err("connection reset".into()));
        assert!(matches!(c.lookup("/part", t), Lookup::Miss(..)));

        let Lookup::Miss(ticket, _) = c.lookup("/other", t) else {
            panic!()
        };
        let body = Body::new();
        let e = Arc::new(Entry::new(
            200,
            vec![("cache-control".into(), "max-age=60".into())],
            Arc::clone(&body),
            t,
        ));
        c.complete(ticket, Ok(e));
        body.finish(Err("connection reset".into()));
        c.sweep(t);
        assert_eq!(c.bytes(), 0);
        assert!(!c.lock().contains_key("/other"), "failed entries are swept");
    }

    #[test]
    fn stale_serves_the_last_good_copy_and_counts() {
        let c = Cache::new(1 << 20);
        assert!(c.stale("/live/a/source/index.m3u8").is_none());
        assert_eq!(c.stats.stale.get(), 0, "no copy, no stale serve");
        let text = Bytes::from_static(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n");
        c.keep_good(
            "/live/a/source/index.m3u8",
            Good::new(Vec::new(), text.clone()),
        );
        let g = c.stale("/live/a/source/index.m3u8").unwrap();
        assert_eq!(g.body, text);
        assert_eq!(g.target_duration, Some(1));
        assert_eq!(c.good_target_duration("/live/a/source/index.m3u8"), Some(1));
        assert_eq!(c.stats.stale.get(), 1);
    }
}
