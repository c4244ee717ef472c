//! A body that may still be arriving: written once, chunk by chunk, read by any number of
//! readers who each see every chunk once, in order, as it arrives. The origin's part being
//! written and the edge's cache entries are this type, so a preload-hinted part streams from
//! the packager through every edge to every viewer without a copy per reader.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

    /// Whether the upstream failed mid-body: such a body is never whole, and a cache must not
    /// hand it to anyone who asks later.
    pub fn is_failed(&self) -> bool {
        matches!(self.lock().done, Some(Err(_)))
    }

    /// The body's chunks (shared, not copied) if it is complete.
    pub fn complete_chunks(&self) -> Option<Vec<Bytes>> {
        let s = self.lock();
        match s.done {
            Some(Ok(())) => Some(s.chunks.clone()),
            _ => None,
        }
    }

    /// The whole body if complete (shared: a complete body is one joined buffer).
    pub fn bytes(&self) -> Option<Bytes> {
        let s = self.lock();
        match s.done {
            Some(Ok(())) => Some(join(&s.chunks)),
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
                        Some(Ok(())) => return Some(join(&s.chunks)),
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

fn join(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => Bytes::from(many.concat()),
    }
}
