//! Publish authorization by an external hook (what SRS and nginx-rtmp call `on_publish`):
//! before a publish with a key that no `[[streams]]` entry knows is accepted, the hook is asked,
//! and only an explicit answer naming the public stream lets it in. Everything else refuses —
//! a refusal, a timeout, an unreachable hook, an answer without a valid name (fail closed).
//!
//! [`Gate`] holds what does not depend on the transport: a bounded number of questions in
//! flight, a short cache of answers per key (so a flapping publisher does not hammer the
//! hook), and the time limit. The question itself ([`Hook`]) is asked by the binary (HTTP).
//! Time is passed in for the cache.

use media::fanout::Protocol;
use media::{SessionId, StreamName};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the hook is told about a publish attempt.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The RTMP application or the SRT resource before the key (`live`).
    pub app: String,
    /// The key as the publisher gave it (secret: never logged).
    pub key: String,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    /// The session id the stream gets if this publish starts it.
    pub session: SessionId,
}

/// What the hook is told when a publisher it let in goes away.
#[derive(Debug, Clone)]
pub struct Unpublished {
    pub name: StreamName,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub session: SessionId,
}

/// A boxed future, so [`Hook`] needs no async-trait machinery.
pub type HookFuture = Pin<Box<dyn Future<Output = Result<StreamName, String>> + Send>>;

/// Asks the outside world. `Err` carries why the publish is refused (for the log).
pub trait Hook: Send + Sync {
    fn authorize(&self, a: Admission) -> HookFuture;
    /// Fire and forget.
    fn unpublished(&self, u: Unpublished);
}

/// Limits around the hook.
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub timeout: Duration,
    /// How long an answer (allow or refuse) for a key is reused; zero: never.
    pub cache: Duration,
    pub max_in_flight: usize,
}

/// A hook's answer: the stream it names, or why not.
type Answer = Result<StreamName, String>;

/// The hook with its limits.
pub struct Gate {
    hook: Arc<dyn Hook>,
    config: GateConfig,
    in_flight: Arc<tokio::sync::Semaphore>,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Entries kept in the cache at most (oldest dropped first beyond it).
const CACHE_ENTRIES: usize = 4096;

impl Gate {
    pub fn new(hook: Arc<dyn Hook>, config: GateConfig) -> Gate {
        Gate {
            hook,
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The hook's answer for `a`: cached, or asked within the limits.
    pub async fn authorize(&self, a: Admission, now: Instant) -> Answer {
        if let Some(hit) = self.cached(&a.key, now) {
            return hit;
        }
        let Ok(_permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            return Err(format!(
                "{} publish authorizations already in flight",
                self.config.max_in_flight
            ));
        };
        let key = a.key.clone();
        let answer = match tokio::time::timeout(self.config.timeout, self.hook.authorize(a)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the publish hook did not answer within {:?}",
                self.config.timeout
            )),
        };
        self.remember(key, now, answer.clone());
        answer
    }

    pub fn unpublished(&self, u: Unpublished) {
        self.hook.unpublished(u);
    }

    fn cached(&self, key: &str, now: Instant) -> Option<Answer> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, r) = cache.get(key)?;
        (now.saturating_duration_since(*at) < self.config.cache).then(|| r.clone())
    }

    fn remember(&self, key: String, now: Instant, r: Answer) {
        if self.config.cache.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.config.cache;
        cache.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        if cache.len() >= CACHE_ENTRIES {
            if let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (now, r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Allows `good` as stream `cam`, refuses the rest; `slow` never answers.
    struct Fake {
        asked: AtomicUsize,
    }

    impl Hook for Fake {
        fn authorize(&self, a: Admission) -> HookFuture {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                match a.key.as_str() {
                    "good" => Ok(StreamName::new("cam").unwrap()),
                    "slow" => std::future::pending().await,
                    _ => Err("HTTP 403".into()),
                }
            })
        }
        fn unpublished(&self, _: Unpublished) {}
    }

    fn admission(key: &str) -> Admission {
        Admission {
            app: "live".into(),
            key: key.into(),
            protocol: Protocol::Rtmp,
            peer: "127.0.0.1:1".parse().unwrap(),
            session: SessionId::generate(),
        }
    }

    fn gate(cache_secs: u64, max_in_flight: usize) -> (Gate, Arc<Fake>) {
        let fake = Arc::new(Fake {
            asked: AtomicUsize::new(0),
        });
        let g = Gate::new(
            Arc::clone(&fake) as Arc<dyn Hook>,
            GateConfig {
                timeout: Duration::from_secs(2),
                cache: Duration::from_secs(cache_secs),
                max_in_flight,
            },
        );
        (g, fake)
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_cached_for_a_while_then_asked_again() {
        let (g, fake) = gate(5, 4);
        let t = Instant::now();
        assert_eq!(
            g.authorize(admission("good"), t).await.unwrap().as_str(),
            "cam"
        );
        assert!(g.authorize(admission("bad"), t).await.is_err());
        assert!(g
            .authorize(admission("good"), t + Duration::from_secs(4))
            .await
            .is_ok());
        assert!(g
            .authorize(admission("bad"), t + Duration::from_secs(4))
            .await
            .is_err());
        assert_eq!(
            fake.asked.load(Ordering::Relaxed),
            2,
            "both answers came from the cache"
        );
        assert!(g
            .authorize(admission("good"), t + Duration::from_secs(6))
            .await
            .is_ok());
        assert_eq!(
            fake.asked.load(Ordering::Relaxed),
            3,
            "expired: asked again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hook_that_does_not_answer_refuses_after_the_timeout() {
        let (g, _) = gate(0, 4);
        let r = g.authorize(admission("slow"), Instant::now()).await;
        assert!(r.unwrap_err().contains("did not answer"));
    }

    #[tokio::test(start_paused = true)]
    async fn questions_in_flight_are_bounded() {
        let (g, _) = gate(0, 1);
        let g = Arc::new(g);
        let slow = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.authorize(admission("slow"), Instant::now()).await })
        };
        tokio::task::yield_now().await;
        let r = g.authorize(admission("good"), Instant::now()).await;
        assert!(
            r.unwrap_err().contains("in flight"),
            "the one slot is taken"
        );
        assert!(slow.await.unwrap().is_err());
        assert!(
            g.authorize(admission("good"), Instant::now()).await.is_ok(),
            "free again"
        );
    }
}
