//! Adaptive bitrate choice: throughput-based, with the switching discipline viewers prefer.
//! Pure: samples and decisions take `now` in seconds on the caller's clock.
//!
//! - The estimate is the smaller of a fast and a slow exponentially weighted average of
//!   throughput samples (bits/s): quick to notice a drop, slow to believe a rise. Samples are
//!   weighted one each, not by transfer time as Shaka and hls.js do with whole segments: LL-HLS
//!   parts on a fast link arrive in a millisecond and would never move a time-weighted
//!   average. Transfers are timed no finer than 5 ms.
//! - A rendition fits if its `BANDWIDTH` ≤ `safety` × estimate.
//! - **Up**: one step, only after the next rendition has fitted for `up_after` seconds
//!   without a break.
//! - **Down**: to the best fitting rendition, at most once per `down_interval` (30 s); when
//!   the buffer is about to run dry (< `emergency_buffer`), one extra emergency switch per
//!   interval, to the lowest rendition that fits (or the lowest).
//! - **Failover**: a rendition that fails (404, 410, errors) is set aside for `failed_for`
//!   seconds and the player moves to the nearest working one at once; this is not an ABR
//!   decision and does not count against the down-switch budget.

#[derive(Debug, Clone, PartialEq)]
pub struct AbrConfig {
    pub safety: f64,
    pub up_after: f64,
    pub down_interval: f64,
    pub emergency_buffer: f64,
    pub failed_for: f64,
    /// Half-lives, in samples, of the fast and slow averages.
    pub fast_half_life: f64,
    pub slow_half_life: f64,
}

impl Default for AbrConfig {
    fn default() -> Self {
        AbrConfig {
            safety: 0.8,
            up_after: 4.0,
            down_interval: 30.0,
            emergency_buffer: 0.35,
            failed_for: 60.0,
            fast_half_life: 2.0,
            slow_half_life: 5.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    Up,
    Down,
    Emergency,
    Failover,
}

impl SwitchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Up => "up",
            SwitchReason::Down => "down",
            SwitchReason::Emergency => "emergency",
            SwitchReason::Failover => "failover",
        }
    }
}

/// A decision: move from rendition `from` to `to` (indices into the bandwidth list).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Switch {
    pub at: f64,
    pub from: usize,
    pub to: usize,
    pub reason: SwitchReason,
    pub estimate_bps: f64,
    pub buffer: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Ewma {
    half_life: f64,
    estimate: f64,
    total_weight: f64,
}

impl Ewma {
    fn sample(&mut self, weight: f64, value: f64) {
        let alpha = 0.5f64.powf(weight / self.half_life);
        self.estimate = value * (1.0 - alpha) + alpha * self.estimate;
        self.total_weight += weight;
    }

    fn get(&self) -> f64 {
        // Zero-factor correction, so the first samples are not biased towards 0.
        let zero_factor = 1.0 - 0.5f64.powf(self.total_weight / self.half_life);
        self.estimate / zero_factor.max(1e-9)
    }
}

#[derive(Debug, Clone)]
pub struct Abr {
    cfg: AbrConfig,
    /// `BANDWIDTH` of each rendition, in the caller's order.
    bandwidths: Vec<u64>,
    current: usize,
    fast: Ewma,
    slow: Ewma,
    samples: u64,
    fits_up_since: Option<f64>,
    last_down: Option<f64>,
    last_emergency: Option<f64>,
    failed_until: Vec<f64>,
}

impl Abr {
    pub fn new(cfg: AbrConfig, bandwidths: Vec<u64>, current: usize) -> Abr {
        let n = bandwidths.len();
        Abr {
            fast: Ewma {
                half_life: cfg.fast_half_life,
                estimate: 0.0,
                total_weight: 0.0,
            },
            slow: Ewma {
                half_life: cfg.slow_half_life,
                estimate: 0.0,
                total_weight: 0.0,
            },
            cfg,
            bandwidths,
            current: current.min(n.saturating_sub(1)),
            samples: 0,
            fits_up_since: None,
            last_down: None,
            last_emergency: None,
            failed_until: vec![f64::NEG_INFINITY; n],
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The throughput estimate in bits/s, if there is one.
    pub fn estimate(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.fast.get().min(self.slow.get()))
    }

    /// A transfer of `bytes` that took `secs` of transfer time (first to last byte of a
    /// resource that was complete when requested).
    pub fn sample(&mut self, bytes: u64, secs: f64) {
        if bytes < 4096 {
            return; // too small to say anything about the link
        }
        let bps = bytes as f64 * 8.0 / secs.max(0.005);
        self.fast.sample(1.0, bps);
        self.slow.sample(1.0, bps);
        self.samples += 1;
    }

    fn working(&self, i: usize, now: f64) -> bool {
        self.failed_until.get(i).is_some_and(|&t| t <= now)
    }

    /// Renditions by bandwidth, ascending (indices).
    fn ladder(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.bandwidths.len()).collect();
        v.sort_by_key(|&i| self.bandwidths[i]);
        v
    }

    /// Marks rendition `i` as failed and, if it is the current one, moves to the nearest
    /// working rendition (lower first).
    pub fn failed(&mut self, now: f64, i: usize, buffer: f64) -> Option<Switch> {
        if let Some(t) = self.failed_until.get_mut(i) {
            *t = now + self.cfg.failed_for;
        }
        if i != self.current {
            return None;
        }
        let ladder = self.ladder();
        let pos = ladder.iter().position(|&r| r == i).unwrap_or(0);
        let lower = ladder[..pos].iter().rev().copied();
        let higher = ladder[pos + 1..].iter().copied();
        let to = lower.chain(higher).find(|&r| self.working(r, now))?;
        Some(self.switch(now, to, SwitchReason::Failover, buffer))
    }

    fn switch(&mut self, now: f64, to: usize, reason: SwitchReason, buffer: f64) -> Switch {
        let s = Switch {
            at: now,
            from: self.current,
            to,
            reason,
            estimate_bps: self.estimate().unwrap_or(0.0),
            buffer,
        };
        self.current = to;
        self.fits_up_since = None;
        match reason {
            SwitchReason::Down => self.last_down = Some(now),
            SwitchReason::Emergency => self.last_emergency = Some(now),
            _ => {}
        }
        s
    }

    /// Decides whether to switch now, given `buffer` seconds ahead of the playhead.
    pub fn decide(&mut self, now: f64, buffer: f64) -> Option<Switch> {
        let est = self.estimate()?;
        let budget = est * self.cfg.safety;
        let ladder = self.ladder();
        let pos = ladder.iter().position(|&r| r == self.current)?;
        let fits = |r: usize| self.bandwidths[r] as f64 <= budget;
        // The best working rendition that fits, or the lowest working one.
        let best = ladder
            .iter()
            .rev()
            .copied()
            .find(|&r| self.working(r, now) && fits(r))
            .or_else(|| ladder.iter().copied().find(|&r| self.working(r, now)))?;
        let best_pos = ladder.iter().position(|&r| r == best)?;
        let within = |last: Option<f64>| last.is_some_and(|t| now - t < self.cfg.down_interval);

        if best_pos < pos {
            self.fits_up_since = None;
            if !within(self.last_down) {
                return Some(self.switch(now, best, SwitchReason::Down, buffer));
            }
            if buffer < self.cfg.emergency_buffer && !within(self.last_emergency) {
                return Some(self.switch(now, best, SwitchReason::Emergency, buffer));
            }
            return None;
        }
        if best_pos > pos {
            let next = ladder[pos + 1..]
                .iter()
                .copied()
                .find(|&r| self.working(r, now))?;
            let since = *self.fits_up_since.get_or_insert(now);
            if now - since >= self.cfg.up_after {
                return Some(self.switch(now, next, SwitchReason::Up, buffer));
            }
        } else {
            self.fits_up_since = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT: u64 = 1_000_000;

    /// `bps` for one second of transfer time, in 4 samples.
    fn link(abr: &mut Abr, bps: f64) {
        for _ in 0..4 {
            abr.sample((bps / 8.0 * 0.25) as u64, 0.25);
        }
    }

    #[test]
    fn steps_down_at_most_once_per_interval_except_one_emergency() {
        let mut abr = Abr::new(AbrConfig::default(), vec![4 * MBIT, 2 * MBIT, MBIT / 2], 0);
        link(&mut abr, 20e6);
        assert_eq!(abr.decide(0.0, 1.0), None);
        // The link drops to 3 Mbit/s: 2 Mbit/s fits (3 × 0.8 = 2.4).
        for _ in 0..5 {
            link(&mut abr, 3e6);
        }
        let s = abr.decide(1.0, 1.0).unwrap();
        assert_eq!((s.from, s.to, s.reason), (0, 1, SwitchReason::Down));
        // It drops again: no second ordinary down-switch within 30 s...
        for _ in 0..5 {
            link(&mut abr, 1e6);
        }
        assert_eq!(abr.decide(5.0, 1.0), None);
        assert_eq!(abr.decide(20.0, 0.9), None);
        // ...unless the buffer is about to run dry: one emergency switch.
        let s = abr.decide(21.0, 0.2).unwrap();
        assert_eq!((s.to, s.reason), (2, SwitchReason::Emergency));
        // After 30 s an ordinary down-switch is allowed again.
        let mut abr2 = abr.clone();
        abr2.current = 1;
        assert_eq!(abr2.decide(25.0, 0.1), None, "emergency budget used");
        assert_eq!(
            abr2.decide(31.5, 1.0).map(|s| s.reason),
            Some(SwitchReason::Down)
        );
    }

    #[test]
    fn steps_up_one_rung_when_sustained() {
        let mut abr = Abr::new(AbrConfig::default(), vec![MBIT / 2, 2 * MBIT, 4 * MBIT], 0);
        link(&mut abr, 20e6);
        for _ in 0..5 {
            link(&mut abr, 20e6);
        }
        assert_eq!(abr.decide(0.0, 1.0), None, "not sustained yet");
        assert_eq!(abr.decide(2.0, 1.0), None);
        let s = abr.decide(4.0, 1.0).unwrap();
        assert_eq!((s.from, s.to, s.reason), (0, 1, SwitchReason::Up));
        assert_eq!(
            abr.decide(5.0, 1.0),
            None,
            "sustain restarts after a switch"
        );
        assert_eq!(abr.decide(9.0, 1.0).map(|s| s.to), Some(2));
    }

    #[test]
    fn fails_over_to_a_working_rendition() {
        let mut abr = Abr::new(AbrConfig::default(), vec![MBIT / 2, 2 * MBIT, 4 * MBIT], 2);
        let s = abr.failed(0.0, 2, 1.0).unwrap();
        assert_eq!((s.to, s.reason), (1, SwitchReason::Failover));
        // The failed rendition is not chosen again while set aside, however fast the link.
        for _ in 0..10 {
            link(&mut abr, 50e6);
        }
        assert_eq!(abr.decide(1.0, 1.0), None);
        assert_eq!(abr.decide(30.0, 1.0), None);
        assert_eq!(
            abr.decide(61.0, 1.0),
            None,
            "sustain starts once it works again"
        );
        assert_eq!(abr.decide(65.0, 1.0).map(|s| s.to), Some(2));
        // Small transfers are not samples.
        let mut quiet = Abr::new(AbrConfig::default(), vec![1, 2], 0);
        quiet.sample(100, 0.001);
        assert_eq!(quiet.estimate(), None);
    }
}
