//! Uplink health, as YouTube Live tells broadcasters: is the publisher's media arriving in real
//! time? Pure (time is passed in), fed with each frame's media time, arrival and size.
//!
//! - **Ingest lag**: wall time since the publish began minus media time since its first frame.
//!   A publisher whose uplink cannot carry its bitrate sends late (TCP backs up; SRT drops and
//!   retransmits), so the lag grows. What counts is the lag above its lowest value of the last
//!   [`BASELINE`] (start-up bursts and encoder delay make the absolute value meaningless).
//! - **Bitrate sag**: the last [`RECENT`] seconds' bitrate against the median per-second
//!   bitrate of the [`BASELINE`] before them.
//!
//! The stream is flagged *degraded* when the lag has grown past [`LAG_BOUND`] or the bitrate
//! fell below [`SAG_RATIO`] of its own recent level, and cleared once neither holds for
//! [`CLEAR_AFTER`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the lag's baseline and the bitrate's reference reach.
pub const BASELINE: Duration = Duration::from_secs(30);
/// The window of the current bitrate.
pub const RECENT: Duration = Duration::from_secs(3);
/// Lag above its baseline that flags the uplink.
pub const LAG_BOUND: Duration = Duration::from_millis(1500);
/// Current bitrate below this share of the reference flags the uplink.
pub const SAG_RATIO: f64 = 0.5;
/// How long both must look healthy again before the flag clears.
pub const CLEAR_AFTER: Duration = Duration::from_secs(3);

/// What [`Uplink::status`] reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UplinkStatus {
    pub degraded: bool,
    /// Why, while degraded: `lag` or `bitrate`.
    pub reason: Option<&'static str>,
    /// Ingest lag above its baseline, seconds.
    pub lag_secs: f64,
    /// Bitrate over the last [`RECENT`], bit/s.
    pub bitrate: f64,
    /// Median per-second bitrate before it, bit/s (`None` until there is enough history).
    pub reference_bitrate: Option<f64>,
    /// Video frames per second over the last [`RECENT`].
    pub fps: f64,
    /// Times the stream was flagged.
    pub episodes: u64,
}

/// One publisher's uplink.
#[derive(Debug, Clone)]
pub struct Uplink {
    start: Option<(Instant, f64)>,
    /// (arrival, lag seconds), the last [`BASELINE`].
    lags: VecDeque<(Instant, f64)>,
    /// Per whole second since the start: (second index, bytes, video frames).
    seconds: VecDeque<(u64, u64, u64)>,
    last_media: f64,
    status: UplinkStatus,
    healthy_since: Option<Instant>,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink::new()
    }
}

impl Uplink {
    pub fn new() -> Uplink {
        Uplink {
            start: None,
            lags: VecDeque::new(),
            seconds: VecDeque::new(),
            last_media: 0.0,
            status: UplinkStatus::default(),
            healthy_since: None,
        }
    }

    /// A frame of `bytes` (a video picture when `video`) whose media time is `media_secs`
    /// arrived at `now`.
    pub fn frame(&mut self, media_secs: f64, bytes: usize, video: bool, now: Instant) {
        let (t0, m0) = *self.start.get_or_insert((now, media_secs));
        // A publisher clock jump (splice) restarts the reference.
        if (media_secs - self.last_media).abs() > 10.0 && !self.lags.is_empty() {
            self.start = Some((now, media_secs));
            self.lags.clear();
            self.last_media = media_secs;
            return;
        }
        self.last_media = media_secs;
        let lag = now.duration_since(t0).as_secs_f64() - (media_secs - m0);
        self.lags.push_back((now, lag));
        while self
            .lags
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > BASELINE)
        {
            self.lags.pop_front();
        }
        let second = now.duration_since(t0).as_secs();
        let pictures = u64::from(video);
        match self.seconds.back_mut() {
            Some((s, b, v)) if *s == second => {
                *b += bytes as u64;
                *v += pictures;
            }
            _ => self.seconds.push_back((second, bytes as u64, pictures)),
        }
        let keep = BASELINE.as_secs() + RECENT.as_secs() + 2;
        while self
            .seconds
            .front()
            .is_some_and(|(s, _, _)| second.saturating_sub(*s) > keep)
        {
            self.seconds.pop_front();
        }
    }

    /// The status at `now` (call about once a second: it decides flag and clear).
    pub fn status(&mut self, now: Instant) -> UplinkStatus {
        let Some((t0, _)) = self.start else {
            return self.status.clone();
        };
        let current = self.lags.back().map_or(0.0, |(_, l)| *l);
        let floor = self
            .lags
            .iter()
            .map(|(_, l)| *l)
            .fold(f64::INFINITY, f64::min);
        // Arrival stopped altogether: the lag keeps growing with the wall clock.
        let silent = self
            .lags
            .back()
            .map_or(0.0, |(t, _)| now.duration_since(*t).as_secs_f64());
        let lag = if floor.is_finite() {
            (current - floor).max(0.0) + silent
        } else {
            0.0
        };
        let second = now.duration_since(t0).as_secs();
        let recent_secs = RECENT.as_secs();
        // Whole seconds only: the current one is still filling.
        let in_seconds = |from: u64, to: u64| -> (u64, u64) {
            self.seconds
                .iter()
                .filter(|(s, _, _)| *s >= from && *s < to)
                .fold((0, 0), |(b, v), (_, bs, vs)| (b + bs, v + vs))
        };
        let bytes_in = |from: u64, to: u64| in_seconds(from, to).0;
        let recent_from = second.saturating_sub(recent_secs);
        // Until RECENT whole seconds have passed, the average is over those there are.
        let span = (second - recent_from).max(1) as f64;
        let (recent_bytes, recent_pictures) = in_seconds(recent_from, second);
        let bitrate = recent_bytes as f64 * 8.0 / span;
        let mut reference: Vec<f64> = (recent_from.saturating_sub(BASELINE.as_secs())..recent_from)
            .map(|s| bytes_in(s, s + 1) as f64 * 8.0)
            .collect();
        let reference = if second >= recent_secs + 10 {
            reference.sort_by(f64::total_cmp);
            reference.get(reference.len() / 2).copied()
        } else {
            None
        };
        let lagging = lag > LAG_BOUND.as_secs_f64();
        let sagging = reference.is_some_and(|r| r > 0.0 && bitrate < r * SAG_RATIO);
        let s = &mut self.status;
        s.lag_secs = lag;
        s.bitrate = bitrate;
        s.reference_bitrate = reference;
        s.fps = recent_pictures as f64 / span;
        if lagging || sagging {
            self.healthy_since = None;
            if !s.degraded {
                s.degraded = true;
                s.episodes += 1;
            }
            s.reason = Some(if lagging { "lag" } else { "bitrate" });
        } else if s.degraded {
            let since = *self.healthy_since.get_or_insert(now);
            if now.duration_since(since) >= CLEAR_AFTER {
                s.degraded = false;
                s.reason = None;
                self.healthy_since = None;
            }
        }
        s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 30 fps of `kbps` from `from` to `to` seconds of media, arriving `delay(t)` late.
    fn feed(
        u: &mut Uplink,
        t0: Instant,
        from: f64,
        to: f64,
        kbps: f64,
        delay: impl Fn(f64) -> f64,
    ) {
        let mut t = from;
        while t < to {
            let at = t0 + Duration::from_secs_f64(t + delay(t));
            u.frame(t, (kbps * 1000.0 / 8.0 / 30.0) as usize, true, at);
            t += 1.0 / 30.0;
        }
    }

    #[test]
    fn a_steady_publisher_is_healthy() {
        let t0 = Instant::now();
        let mut u = Uplink::new();
        feed(&mut u, t0, 0.0, 40.0, 2000.0, |_| 0.05);
        let s = u.status(t0 + Duration::from_secs_f64(40.05));
        assert!(!s.degraded, "{s:?}");
        assert!(s.lag_secs < 0.1);
        assert!((s.bitrate - 2_000_000.0).abs() < 100_000.0, "{s:?}");
        assert!((s.fps - 30.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn a_throttled_uplink_is_flagged_by_its_growing_lag_and_cleared_after() {
        let t0 = Instant::now();
        let mut u = Uplink::new();
        feed(&mut u, t0, 0.0, 20.0, 2000.0, |_| 0.0);
        // From 20 s the uplink carries half the bitrate: media arrives ever later.
        feed(&mut u, t0, 20.0, 24.0, 2000.0, |t| t - 20.0);
        let s = u.status(t0 + Duration::from_secs(28));
        assert!(s.degraded, "{s:?}");
        assert_eq!(s.reason, Some("lag"));
        assert_eq!(s.episodes, 1);
        // The backlog arrives at once at 28 s, then real time again.
        feed(&mut u, t0, 24.0, 40.0, 2000.0, |t| {
            if t < 28.0 {
                28.0 - t
            } else {
                0.0
            }
        });
        assert!(
            u.status(t0 + Duration::from_secs(40)).degraded,
            "not yet: the clear waits"
        );
        feed(&mut u, t0, 40.0, 43.5, 2000.0, |_| 0.0);
        // Healthy since 40 s: cleared once CLEAR_AFTER has passed.
        let s = u.status(t0 + Duration::from_secs_f64(43.5));
        assert!(!s.degraded, "{s:?}");
        assert_eq!(s.episodes, 1);
    }

    #[test]
    fn a_bitrate_sag_is_flagged() {
        let t0 = Instant::now();
        let mut u = Uplink::new();
        feed(&mut u, t0, 0.0, 30.0, 3000.0, |_| 0.0);
        feed(&mut u, t0, 30.0, 36.0, 600.0, |_| 0.0);
        let s = u.status(t0 + Duration::from_secs(36));
        assert!(s.degraded, "{s:?}");
        assert_eq!(s.reason, Some("bitrate"));
    }

    #[test]
    fn silence_is_lag_and_a_clock_jump_is_not() {
        let t0 = Instant::now();
        let mut u = Uplink::new();
        feed(&mut u, t0, 0.0, 10.0, 1000.0, |_| 0.0);
        assert!(u.status(t0 + Duration::from_secs(13)).degraded);
        let mut u = Uplink::new();
        feed(&mut u, t0, 0.0, 10.0, 1000.0, |_| 0.0);
        // The publisher's clock jumps back 1000 s but frames keep coming in real time.
        feed(&mut u, t0, 1000.0, 1010.0, 1000.0, |_| -990.0);
        let s = u.status(t0 + Duration::from_secs_f64(20.0));
        assert!(!s.degraded, "{s:?}");
    }
}
