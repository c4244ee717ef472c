//! The transcode budget and load shedding, pure and unit-tested (time is injected).
//!
//! Every poll, each transcoded stream says which rungs its tier wants; [`allocate`] grants
//! them within the budget — a number of rungs over all streams — in a fixed order of who
//! keeps what: partner streams before normal before free, then the more watched stream, and
//! within a stream its lower rungs before its higher ones (a low rung serves the viewers on
//! weak connections and costs least; the source rendition already covers the top). What is
//! not granted is shed: it leaves the multivariant playlist and stops after the quiet period.
//!
//! The budget is the configured `max_rungs`, lowered by [`Shedder`] while encoders fall behind
//! real time: when a running rung's lag passes the bound, the budget becomes one rung less
//! than what runs (one more shed, at most every [`SHED_COOLDOWN`]); after
//! [`RECOVER_AFTER`] without lag it grows back by one rung at a time.

use crate::ladder::Priority;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Why a rung is not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShedReason {
    /// The configured `max_rungs` is reached.
    Budget,
    /// Encoders fell behind real time: the budget was lowered.
    Overload,
}

impl ShedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Budget => "budget",
            ShedReason::Overload => "overload",
        }
    }
}

/// What one stream wants this poll.
#[derive(Debug, Clone)]
pub struct Want {
    pub stream: String,
    pub priority: Priority,
    pub viewers: u64,
    /// Rung names with their heights, as the tier lists them.
    pub rungs: Vec<(String, u32)>,
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::Partner => 0,
        Priority::Normal => 1,
        Priority::Free => 2,
    }
}

/// One stream's share of the budget.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    pub granted: Vec<String>,
    pub shed: Vec<(String, ShedReason)>,
}

/// Per stream, the rungs granted and those shed (with why), given `budget` rungs in all and
/// `configured` (the configured cap, to tell a budget shed from an overload one).
pub fn allocate(wants: &[Want], budget: usize, configured: usize) -> BTreeMap<String, Grant> {
    let mut order: Vec<&Want> = wants.iter().collect();
    order.sort_by(|a, b| {
        rank(a.priority)
            .cmp(&rank(b.priority))
            .then(b.viewers.cmp(&a.viewers))
            .then(a.stream.cmp(&b.stream))
    });
    let mut out = BTreeMap::new();
    let mut used = 0usize;
    for w in order {
        let mut rungs = w.rungs.clone();
        rungs.sort_by_key(|(_, h)| *h);
        let (mut granted, mut shed) = (Vec::new(), Vec::new());
        for (name, _) in rungs {
            if used < budget {
                used += 1;
                granted.push(name);
            } else {
                let reason = if used >= configured {
                    ShedReason::Budget
                } else {
                    ShedReason::Overload
                };
                shed.push((name, reason));
            }
        }
        out.insert(w.stream.clone(), Grant { granted, shed });
    }
    out
}

/// The least time between two overload sheds (the last one must show its effect first).
pub const SHED_COOLDOWN: Duration = Duration::from_secs(10);
/// Time without lag before the budget grows back by a rung.
pub const RECOVER_AFTER: Duration = Duration::from_secs(60);

/// The budget as encoders keep up or fall behind.
#[derive(Debug, Clone)]
pub struct Shedder {
    configured: usize,
    current: usize,
    last_shed: Option<Instant>,
    /// Since when no rung has lagged (or the budget last grew).
    calm_since: Option<Instant>,
}

impl Shedder {
    /// `max_rungs`: the configured budget (`usize::MAX`: none).
    pub fn new(max_rungs: usize) -> Shedder {
        Shedder {
            configured: max_rungs,
            current: max_rungs,
            last_shed: None,
            calm_since: None,
        }
    }

    pub fn configured(&self) -> usize {
        self.configured
    }

    /// The budget for this poll: `running` rungs run, `lagging` says whether any of them is
    /// behind real time past the bound. Returns the budget and whether it was just lowered.
    pub fn update(&mut self, running: usize, lagging: bool, now: Instant) -> (usize, bool) {
        if lagging {
            self.calm_since = None;
            let cooled = self
                .last_shed
                .is_none_or(|t| now.duration_since(t) >= SHED_COOLDOWN);
            if cooled && running > 0 {
                self.current = self.current.min(running - 1);
                self.last_shed = Some(now);
                return (self.current, true);
            }
        } else if self.current < self.configured {
            let since = *self.calm_since.get_or_insert(now);
            if now.duration_since(since) >= RECOVER_AFTER {
                self.current += 1;
                self.calm_since = Some(now);
            }
        }
        (self.current, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(stream: &str, priority: Priority, viewers: u64, rungs: &[(&str, u32)]) -> Want {
        Want {
            stream: stream.into(),
            priority,
            viewers,
            rungs: rungs.iter().map(|(n, h)| ((*n).to_owned(), *h)).collect(),
        }
    }

    #[test]
    fn the_lowest_priority_least_watched_stream_is_shed_first_and_its_top_rung_first() {
        let wants = [
            want("free", Priority::Free, 500, &[("480p", 480)]),
            want(
                "big",
                Priority::Normal,
                40,
                &[("720p", 720), ("480p", 480), ("360p", 360)],
            ),
            want("small", Priority::Normal, 3, &[("480p", 480)]),
            want(
                "star",
                Priority::Partner,
                0,
                &[("720p", 720), ("480p", 480)],
            ),
        ];
        let a = allocate(&wants, 5, 5);
        assert_eq!(a["star"].granted, ["480p", "720p"]);
        assert_eq!(a["big"].granted, ["360p", "480p", "720p"]);
        assert!(a["small"].granted.is_empty());
        assert_eq!(a["small"].shed, [("480p".to_owned(), ShedReason::Budget)]);
        assert_eq!(a["free"].shed, [("480p".to_owned(), ShedReason::Budget)]);
        // Two rungs fewer than configured: the big stream's 720p goes, for overload.
        let a = allocate(&wants, 4, 6);
        assert_eq!(a["big"].granted, ["360p", "480p"]);
        assert_eq!(a["big"].shed, [("720p".to_owned(), ShedReason::Overload)]);
        // No budget at all: everything is shed, nothing panics.
        let a = allocate(&wants, 0, 0);
        assert!(a.values().all(|g| g.granted.is_empty()));
        // Unlimited.
        let a = allocate(&wants, usize::MAX, usize::MAX);
        assert!(a.values().all(|g| g.shed.is_empty()));
    }

    #[test]
    fn lag_lowers_the_budget_one_rung_at_a_time_and_calm_restores_it() {
        let t0 = Instant::now();
        let mut s = Shedder::new(usize::MAX);
        assert_eq!(s.update(4, false, t0), (usize::MAX, false));
        assert_eq!(s.update(4, true, t0), (3, true));
        // Still lagging within the cooldown: no second shed yet.
        assert_eq!(s.update(3, true, t0 + Duration::from_secs(5)), (3, false));
        assert_eq!(s.update(3, true, t0 + SHED_COOLDOWN), (2, true));
        let calm = t0 + SHED_COOLDOWN + Duration::from_secs(1);
        assert_eq!(s.update(2, false, calm), (2, false));
        assert_eq!(s.update(2, false, calm + RECOVER_AFTER), (3, false));
        assert_eq!(s.update(3, false, calm + RECOVER_AFTER * 2), (4, false));
        // Lag with nothing running sheds nothing.
        let mut s = Shedder::new(2);
        assert_eq!(s.update(0, true, t0), (2, false));
    }
}
