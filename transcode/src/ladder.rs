//! The ladder's rules, pure and unit-tested (time is injected): which rungs a stream's viewer
//! count and priority call for, with hysteresis on the way down; what size a rung is for a
//! given source; which source frames a frame-rate-capped rung keeps.
//!
//! Tiers: a stream with `viewers ≥ min_viewers` of a tier gets that tier's rungs (the highest
//! such tier); `partner` streams always get the last (full) tier, `free` streams never more
//! than the first. Going up takes effect at once (the caller polls within seconds of the count
//! changing); going down only after the count has stayed below the current tier's threshold
//! for the hysteresis, so a stream near a threshold does not start and stop encoders.

use crate::Rung;
use std::time::{Duration, Instant};

/// A stream's priority class (`priority` in `[[streams]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Always the full ladder.
    Partner,
    /// Tiered by viewer count.
    #[default]
    Normal,
    /// Never beyond the first tier.
    Free,
}

/// From this many viewers on, these rungs (by name) are offered beside the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub min_viewers: u64,
    pub rungs: Vec<String>,
}

/// A validated ladder: rungs and tiers, tiers sorted by `min_viewers`, the first at 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    rungs: Vec<Rung>,
    tiers: Vec<Tier>,
}

/// Why a ladder configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("rung {0:?}: a name is [a-z0-9_-]{{1,32}} and not \"source\"")]
    BadName(String),
    #[error("rung {0:?} is defined twice")]
    DuplicateRung(String),
    #[error("rung {name:?}: {what}")]
    BadRung { name: String, what: &'static str },
    #[error("tier at {0} viewers names rung {1:?}, which is not defined")]
    UnknownRung(u64, String),
    #[error("no tier starts at 0 viewers")]
    NoFirstTier,
    #[error("two tiers start at {0} viewers")]
    DuplicateTier(u64),
    #[error("more than {0} rungs")]
    TooManyRungs(usize),
}

/// At most this many rungs in a ladder (each is an encoder per stream).
pub const MAX_RUNGS: usize = 8;

impl Ladder {
    /// Checks and sorts a ladder: names, sizes, bitrates, frame rates, tier references.
    pub fn new(rungs: Vec<Rung>, mut tiers: Vec<Tier>) -> Result<Ladder, LadderError> {
        if rungs.len() > MAX_RUNGS {
            return Err(LadderError::TooManyRungs(MAX_RUNGS));
        }
        for (i, r) in rungs.iter().enumerate() {
            let ok = !r.name.is_empty()
                && r.name.len() <= 32
                && r.name != "source"
                && r.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                return Err(LadderError::BadName(r.name.clone()));
            }
            if rungs[..i].iter().any(|o| o.name == r.name) {
                return Err(LadderError::DuplicateRung(r.name.clone()));
            }
            let bad = |what| {
                Err(LadderError::BadRung {
                    name: r.name.clone(),
                    what,
                })
            };
            if !(64..=4320).contains(&r.height) {
                return bad("height must be 64–4320");
            }
            if !(50_000..=100_000_000).contains(&r.bitrate) {
                return bad("bitrate must be 50 kb/s – 100 Mb/s");
            }
            if !(r.max_fps.is_finite() && (1.0..=240.0).contains(&r.max_fps)) {
                return bad("max_fps must be 1–240");
            }
        }
        tiers.sort_by_key(|t| t.min_viewers);
        for (i, t) in tiers.iter().enumerate() {
            if i > 0 && tiers[i - 1].min_viewers == t.min_viewers {
                return Err(LadderError::DuplicateTier(t.min_viewers));
            }
            for name in &t.rungs {
                if !rungs.iter().any(|r| &r.name == name) {
                    return Err(LadderError::UnknownRung(t.min_viewers, name.clone()));
                }
            }
        }
        if tiers.first().is_none_or(|t| t.min_viewers != 0) {
            return Err(LadderError::NoFirstTier);
        }
        Ok(Ladder { rungs, tiers })
    }

    /// The default ladder: `< 10` viewers → source + 480p; `≥ 10` → 720p, 480p, 360p;
    /// `≥ 1000` → 1080p, 720p, 480p, 360p, 240p. Bitrates about 50 % apart.
    pub fn standard() -> Ladder {
        let rung = |name: &str, height, kbps: u64| Rung {
            name: name.into(),
            height,
            bitrate: kbps * 1000,
            max_fps: if height > 720 { 60.0 } else { 30.0 },
        };
        let tier = |min_viewers, names: &[&str]| Tier {
            min_viewers,
            rungs: names.iter().map(|n| n.to_string()).collect(),
        };
        let ladder = Ladder::new(
            vec![
                rung("1080p", 1080, 6000),
                rung("720p", 720, 3000),
                rung("480p", 480, 1500),
                rung("360p", 360, 800),
                rung("240p", 240, 400),
            ],
            vec![
                tier(0, &["480p"]),
                tier(10, &["720p", "480p", "360p"]),
                tier(1000, &["1080p", "720p", "480p", "360p", "240p"]),
            ],
        );
        match ladder {
            Ok(l) => l,
            Err(e) => unreachable!("the standard ladder is valid: {e}"),
        }
    }

    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The index of the tier `viewers` and `priority` call for (no hysteresis).
    pub fn tier_for(&self, viewers: u64, priority: Priority) -> usize {
        let by_count = self
            .tiers
            .iter()
            .rposition(|t| viewers >= t.min_viewers)
            .unwrap_or(0);
        match priority {
            Priority::Partner => self.tiers.len() - 1,
            Priority::Normal => by_count,
            Priority::Free => 0,
        }
    }

    /// The rungs of tier `i` that a `source_height` source can have (never above the source:
    /// a rung at or over the source's height is left out; the source itself is always there).
    pub fn rungs_of(&self, i: usize, source_height: u32) -> Vec<&Rung> {
        let Some(t) = self.tiers.get(i) else {
            return Vec::new();
        };
        t.rungs
            .iter()
            .filter_map(|n| self.rungs.iter().find(|r| &r.name == n))
            .filter(|r| r.height < source_height)
            .collect()
    }
}

/// A stream's current tier, with hysteresis on the way down.
#[derive(Debug, Clone)]
pub struct Tiering {
    current: usize,
    /// Since when the count has called for a lower tier than `current`.
    below_since: Option<Instant>,
    hysteresis: Duration,
}

/// Default time the viewer count must stay below a tier before it drops.
pub const HYSTERESIS: Duration = Duration::from_secs(60);

impl Tiering {
    pub fn new(hysteresis: Duration) -> Tiering {
        Tiering {
            current: 0,
            below_since: None,
            hysteresis,
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// Feeds the viewer count at `now`; returns the tier to offer. Up at once; down (to the
    /// tier the count then calls for) once it has called for less for the whole hysteresis.
    pub fn update(
        &mut self,
        ladder: &Ladder,
        viewers: u64,
        priority: Priority,
        now: Instant,
    ) -> usize {
        let wanted = ladder.tier_for(viewers, priority);
        if wanted >= self.current {
            self.current = wanted;
            self.below_since = None;
        } else {
            let since = *self.below_since.get_or_insert(now);
            if now.duration_since(since) >= self.hysteresis {
                self.current = wanted;
                self.below_since = None;
            }
        }
        self.current
    }
}

/// The size of a rung `height` pixels high for a `source` (width, height): the source's aspect
/// ratio, both dimensions even (rounded to the nearest), never above the source. `None` when
/// the rung would not be smaller than the source (the source rendition covers it).
pub fn rung_size(source: (u32, u32), height: u32) -> Option<(u32, u32)> {
    let (sw, sh) = source;
    if sw < 2 || sh < 2 || height >= sh {
        return None;
    }
    let h = (height & !1).max(2);
    // The nearest even width: round(sw·h / sh / 2) · 2.
    let (w64, h64, sh64) = (u64::from(sw), u64::from(h), u64::from(sh));
    let w = (((w64 * h64 + sh64) / (2 * sh64)) * 2).max(2);
    Some((u32::try_from(w).unwrap_or(u32::MAX).min(sw & !1), h))
}

/// Keeps the frames of a frame-rate-capped rung: at most `max_fps`, chosen by presentation
/// time, and always the frame at each source keyframe (where every rung has its IDR).
#[derive(Debug, Clone)]
pub struct Decimator {
    /// Minimum spacing of kept frames, in the timestamps' ticks.
    interval: i64,
    last: Option<i64>,
}

impl Decimator {
    /// `timescale` ticks per second of the presentation timestamps fed to [`Decimator::keep`].
    pub fn new(max_fps: f64, timescale: u32) -> Decimator {
        let interval = if max_fps > 0.0 {
            (f64::from(timescale) / max_fps).round() as i64
        } else {
            0
        };
        Decimator {
            interval,
            last: None,
        }
    }

    /// Whether the frame presented at `pts` is kept. A frame is kept when it is at a source
    /// keyframe, or at least three quarters of the interval after the last kept one (so a
    /// 59.94 fps source capped at 30 keeps every other frame despite rounding).
    pub fn keep(&mut self, pts: i64, keyframe: bool) -> bool {
        let due = match self.last {
            None => true,
            Some(last) => pts < last || pts - last >= self.interval - self.interval / 4,
        };
        if keyframe || due {
            self.last = Some(pts);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_viewers_and_priority() {
        let l = Ladder::standard();
        let names =
            |i, h| -> Vec<String> { l.rungs_of(i, h).iter().map(|r| r.name.clone()).collect() };
        assert_eq!(l.tier_for(0, Priority::Normal), 0);
        assert_eq!(l.tier_for(9, Priority::Normal), 0);
        assert_eq!(l.tier_for(10, Priority::Normal), 1);
        assert_eq!(l.tier_for(999, Priority::Normal), 1);
        assert_eq!(l.tier_for(1000, Priority::Normal), 2);
        assert_eq!(l.tier_for(0, Priority::Partner), 2);
        assert_eq!(l.tier_for(1_000_000, Priority::Free), 0);
        assert_eq!(names(0, 720), ["480p"]);
        assert_eq!(
            names(1, 720),
            ["480p", "360p"],
            "no 720p rung for a 720p source"
        );
        assert_eq!(names(2, 1080), ["720p", "480p", "360p", "240p"]);
        assert_eq!(names(2, 2160), ["1080p", "720p", "480p", "360p", "240p"]);
        assert!(names(2, 240).is_empty(), "a source smaller than every rung");
    }

    #[test]
    fn bad_ladders_are_refused_with_the_reason() {
        let r = |name: &str, height| Rung {
            name: name.into(),
            height,
            bitrate: 1_000_000,
            max_fps: 30.0,
        };
        let t = |min_viewers, names: &[&str]| Tier {
            min_viewers,
            rungs: names.iter().map(|n| n.to_string()).collect(),
        };
        let err = |rungs, tiers| Ladder::new(rungs, tiers).unwrap_err().to_string();
        assert!(err(vec![r("source", 480)], vec![t(0, &[])]).contains("not \"source\""));
        assert!(err(vec![r("A b", 480)], vec![t(0, &[])]).contains("[a-z0-9_-]"));
        assert!(err(vec![r("a", 480), r("a", 360)], vec![t(0, &[])]).contains("twice"));
        assert!(err(vec![r("a", 10)], vec![t(0, &[])]).contains("height"));
        assert!(err(vec![r("a", 480)], vec![t(0, &["b"])]).contains("not defined"));
        assert!(err(vec![r("a", 480)], vec![t(5, &["a"])]).contains("0 viewers"));
        assert!(err(vec![r("a", 480)], vec![t(0, &[]), t(0, &["a"])]).contains("two tiers"));
        let mut fast = r("a", 480);
        fast.max_fps = f64::NAN;
        assert!(err(vec![fast], vec![t(0, &[])]).contains("max_fps"));
        let many: Vec<Rung> = (0..9).map(|i| r(&format!("r{i}"), 480)).collect();
        assert!(err(many, vec![t(0, &[])]).contains("more than"));
        // Tiers may come in any order.
        let l = Ladder::new(vec![r("a", 480)], vec![t(10, &["a"]), t(0, &[])]).unwrap();
        assert_eq!(l.tiers()[0].min_viewers, 0);
    }

    #[test]
    fn the_tier_rises_at_once_and_falls_only_after_the_hysteresis() {
        let l = Ladder::standard();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Tiering::new(HYSTERESIS);
        assert_eq!(t.update(&l, 3, Priority::Normal, at(0)), 0);
        assert_eq!(t.update(&l, 12, Priority::Normal, at(1)), 1, "up at once");
        assert_eq!(t.update(&l, 4, Priority::Normal, at(2)), 1);
        assert_eq!(t.update(&l, 4, Priority::Normal, at(61)), 1, "59 s below");
        assert_eq!(
            t.update(&l, 11, Priority::Normal, at(62)),
            1,
            "back up: the clock resets"
        );
        assert_eq!(t.update(&l, 2, Priority::Normal, at(63)), 1);
        assert_eq!(t.update(&l, 2, Priority::Normal, at(122)), 1);
        assert_eq!(
            t.update(&l, 2, Priority::Normal, at(123)),
            0,
            "60 s below: down"
        );
        assert_eq!(t.update(&l, 2000, Priority::Normal, at(124)), 2);
        assert_eq!(t.update(&l, 20, Priority::Normal, at(200)), 2);
        assert_eq!(
            t.update(&l, 20, Priority::Normal, at(260)),
            1,
            "down one tier, to what the count calls for"
        );
    }

    #[test]
    fn rung_sizes_keep_the_aspect_are_even_and_never_exceed_the_source() {
        assert_eq!(rung_size((1280, 720), 480), Some((854, 480)));
        assert_eq!(rung_size((1920, 1080), 720), Some((1280, 720)));
        assert_eq!(rung_size((1280, 720), 240), Some((426, 240)));
        assert_eq!(rung_size((1278, 718), 480), Some((854, 480)));
        assert_eq!(rung_size((1279, 719), 360), Some((640, 360)));
        assert_eq!(
            rung_size((1279, 719), 359),
            Some((636, 358)),
            "odd rung heights round down to even"
        );
        assert_eq!(rung_size((720, 1280), 480), Some((270, 480)), "portrait");
        assert_eq!(
            rung_size((1280, 720), 720),
            None,
            "not smaller than the source"
        );
        assert_eq!(rung_size((1280, 720), 1080), None);
        assert_eq!(rung_size((0, 0), 480), None);
        for (w, h) in [
            (1280, 720),
            (1278, 718),
            (1279, 719),
            (640, 360),
            (3840, 2160),
            (4, 1000),
        ] {
            for rh in [64, 144, 240, 360, 480, 720, 1080] {
                if let Some((rw, rhh)) = rung_size((w, h), rh) {
                    assert!(
                        rw % 2 == 0 && rhh % 2 == 0 && rw <= w && rhh < h,
                        "{w}x{h} → {rw}x{rhh}"
                    );
                }
            }
        }
    }

    #[test]
    fn decimation_halves_60_fps_keeps_30_and_every_keyframe() {
        let kept = |fps_num: i64, fps_den: i64, frames: i64, key_every: i64| -> Vec<i64> {
            let mut d = Decimator::new(30.0, 90_000);
            (0..frames)
                .filter(|i| d.keep(i * 90_000 * fps_den / fps_num, i % key_every == 0))
                .collect()
        };
        assert_eq!(kept(60, 1, 8, 1000), [0, 2, 4, 6]);
        assert_eq!(kept(60_000, 1001, 8, 1000), [0, 2, 4, 6]);
        assert_eq!(
            kept(30, 1, 5, 1000),
            [0, 1, 2, 3, 4],
            "30 fps under a 30 cap: all"
        );
        assert_eq!(kept(30_000, 1001, 5, 1000), [0, 1, 2, 3, 4]);
        // A keyframe on an odd frame of a 60 fps source is kept; the cadence restarts there.
        assert_eq!(kept(60, 1, 9, 5), [0, 2, 4, 5, 7]);
        let mut d = Decimator::new(30.0, 90_000);
        assert!(d.keep(3000, false));
        assert!(
            d.keep(0, false),
            "time going back (a splice) restarts the cadence"
        );
    }
}
