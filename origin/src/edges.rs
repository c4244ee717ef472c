//! Edges as the origin sees them: viewer reports (authenticated with a shared token) that also
//! serve as heartbeats, the viewers the origin serves itself, and the director's choice of an
//! edge for a new viewer. Pure apart from the mutex: time and randomness are passed in.

use media::viewers::ViewerCounter;
pub use media::viewers::{Counts, Report};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct EdgeState {
    url: String,
    viewers: Counts,
    players: media::cmcd::PlayerSummaries,
    at: Instant,
}

/// Why a report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("missing or wrong edge token")]
    Unauthorized,
    #[error("malformed report")]
    Malformed,
}

#[derive(Debug)]
pub struct Edges {
    token: Option<String>,
    /// An edge that has not reported for this long is gone (its viewers expire with it).
    pub expiry: Duration,
    edges: Mutex<HashMap<String, EdgeState>>,
    /// Viewers served by the origin itself.
    pub local: Mutex<ViewerCounter>,
    /// What the origin's own players say in CMCD.
    pub local_players: Mutex<media::cmcd::PlayerStats>,
}

impl Edges {
    pub fn new(token: Option<String>, expiry: Duration, viewer_window: Duration) -> Edges {
        Edges {
            token,
            expiry,
            edges: Mutex::new(HashMap::new()),
            local: Mutex::new(ViewerCounter::new(viewer_window)),
            local_players: Mutex::new(media::cmcd::PlayerStats::new(viewer_window)),
        }
    }

    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    pub fn report(&self, bearer: Option<&str>, r: Report, now: Instant) -> Result<(), ReportError> {
        if let Some(t) = &self.token {
            if !bearer.is_some_and(|b| media::constant_time_eq(b, t)) {
                return Err(ReportError::Unauthorized);
            }
        }
        let url_ok = (r.url.starts_with("http://") || r.url.starts_with("https://"))
            && r.url.len() <= 256
            && !r.url.contains(char::is_whitespace);
        let players: usize = r.players.values().map(|p| p.len()).sum();
        if r.edge.is_empty()
            || r.edge.len() > 128
            || !url_ok
            || r.viewers.len() > 10_000
            || players > media::viewers::MAX_RENDITION_KEYS
        {
            return Err(ReportError::Malformed);
        }
        let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        if edges.len() >= 10_000 && !edges.contains_key(&r.edge) {
            edges.retain(|_, e| now.saturating_duration_since(e.at) < self.expiry);
            if edges.len() >= 10_000 {
                return Err(ReportError::Malformed);
            }
        }
        edges.insert(
            r.edge,
            EdgeState {
                url: r.url.trim_end_matches('/').to_owned(),
                viewers: r.viewers,
                players: r.players,
                at: now,
            },
        );
        Ok(())
    }

    /// Healthy edges: (id, url, total viewers), sorted by id.
    pub fn healthy(&self, now: Instant) -> Vec<(String, String, u64)> {
        let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        edges.retain(|_, e| now.saturating_duration_since(e.at) < self.expiry);
        let mut v: Vec<_> = edges
            .iter()
            .map(|(id, e)| {
                let load = e.viewers.values().flat_map(|r| r.values()).sum();
                (id.clone(), e.url.clone(), load)
            })
            .collect();
        v.sort();
        v
    }

    /// The director's choice: a random one of the `k` least-loaded healthy edges (so a failed
    /// edge's viewers spread out instead of piling onto one neighbour). `rand` is any random
    /// number.
    pub fn pick(&self, now: Instant, k: usize, rand: u64) -> Option<String> {
        let mut edges = self.healthy(now);
        edges.sort_by_key(|(id, _, load)| (*load, id.clone()));
        edges.truncate(k.max(1));
        if edges.is_empty() {
            return None;
        }
        let i = (rand % edges.len() as u64) as usize;
        Some(edges[i].1.clone())
    }

    /// (per rendition, per source → per rendition) viewer counts of one stream.
    #[allow(clippy::type_complexity)]
    fn collect(
        &self,
        stream: &str,
        now: Instant,
    ) -> (
        BTreeMap<String, u64>,
        BTreeMap<String, BTreeMap<String, u64>>,
    ) {
        let mut per_rendition: BTreeMap<String, u64> = BTreeMap::new();
        let mut per_edge: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let local = self
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts(now);
        let mut sources: Vec<(String, Counts)> = vec![("origin".to_owned(), local)];
        {
            let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
            edges.retain(|_, e| now.saturating_duration_since(e.at) < self.expiry);
            sources.extend(edges.iter().map(|(id, e)| (id.clone(), e.viewers.clone())));
        }
        for (source, counts) in sources {
            if let Some(r) = counts.get(stream) {
                for (rendition, n) in r {
                    if *n == 0 {
                        continue;
                    }
                    *per_rendition.entry(rendition.clone()).or_default() += n;
                    per_edge
                        .entry(source.clone())
                        .or_default()
                        .insert(rendition.clone(), *n);
                }
            }
        }
        (per_rendition, per_edge)
    }

    /// What the players of one stream say in CMCD, per rendition, summed over the origin and
    /// every edge.
    pub fn stream_players(
        &self,
        stream: &str,
        now: Instant,
    ) -> BTreeMap<String, media::cmcd::PlayerSummary> {
        let mut out: BTreeMap<String, media::cmcd::PlayerSummary> = self
            .local_players
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summaries(now)
            .remove(stream)
            .unwrap_or_default();
        let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        edges.retain(|_, e| now.saturating_duration_since(e.at) < self.expiry);
        for e in edges.values() {
            for (rendition, s) in e.players.get(stream).into_iter().flatten() {
                out.entry(rendition.clone()).or_default().merge(s);
            }
        }
        out
    }

    /// Viewers of one stream per rendition, summed over the origin and every edge.
    pub fn rendition_viewers(&self, stream: &str, now: Instant) -> BTreeMap<String, u64> {
        self.collect(stream, now).0
    }

    /// Viewers of one stream: total, per rendition, per edge (`origin` for direct viewers).
    pub fn stream_viewers(&self, stream: &str, now: Instant) -> serde_json::Value {
        let (per_rendition, per_edge) = self.collect(stream, now);
        serde_json::json!({
            "total": per_rendition.values().sum::<u64>(),
            "renditions": per_rendition,
            "edges": per_edge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(edge: &str, n: u64) -> Report {
        let mut viewers = Counts::new();
        viewers
            .entry("cam".into())
            .or_default()
            .insert("source".into(), n);
        Report {
            edge: edge.into(),
            url: format!("http://{edge}:8081"),
            viewers,
            players: Default::default(),
        }
    }

    #[test]
    fn reports_need_the_token_and_expire() {
        let e = Edges::new(
            Some("secret".into()),
            Duration::from_secs(4),
            Duration::from_secs(15),
        );
        let t = Instant::now();
        assert_eq!(
            e.report(None, report("a", 1), t),
            Err(ReportError::Unauthorized)
        );
        assert_eq!(
            e.report(Some("nope"), report("a", 1), t),
            Err(ReportError::Unauthorized)
        );
        e.report(Some("secret"), report("a", 5), t).unwrap();
        e.report(Some("secret"), report("b", 7), t + Duration::from_secs(2))
            .unwrap();
        let v = e.stream_viewers("cam", t + Duration::from_secs(3));
        assert_eq!(v["total"], 12);
        assert_eq!(v["edges"]["a"]["source"], 5);
        let v = e.stream_viewers("cam", t + Duration::from_secs(5));
        assert_eq!(
            v["total"], 7,
            "edge a stopped reporting: its viewers expired"
        );
        let bad = Report {
            url: "javascript:alert(1)".into(),
            ..report("c", 1)
        };
        assert_eq!(
            e.report(Some("secret"), bad, t),
            Err(ReportError::Malformed)
        );
    }

    #[test]
    fn director_picks_among_the_least_loaded() {
        let e = Edges::new(None, Duration::from_secs(4), Duration::from_secs(15));
        let t = Instant::now();
        for (id, n) in [("a", 50), ("b", 10), ("c", 20), ("d", 30), ("e", 5)] {
            e.report(None, report(id, n), t).unwrap();
        }
        let picks: std::collections::BTreeSet<String> =
            (0..100).filter_map(|r| e.pick(t, 3, r)).collect();
        let want: std::collections::BTreeSet<String> = ["e", "b", "c"]
            .iter()
            .map(|id| format!("http://{id}:8081"))
            .collect();
        assert_eq!(picks, want);
        assert_eq!(
            e.pick(t + Duration::from_secs(5), 3, 1),
            None,
            "dead edges are not picked"
        );
    }
}
