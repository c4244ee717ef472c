//! The playback model: a buffer of media on a continuous timeline, a playhead that moves at
//! real time while there is media ahead of it, and stalls when there is not. Pure: every call
//! takes `now` (seconds on the caller's clock), so tests drive it with made-up times.
//!
//! Buffering rule: media is appended when a part or segment has been received whole (as hls.js
//! appends parts). Playback starts once `start_buffer` seconds are buffered (the player starts
//! `PART-HOLD-BACK` behind the live edge, so that is what it has when it reaches the edge), or
//! earlier if the caller says it has reached the live edge. A stall begins the instant the
//! playhead reaches the end of the buffer and ends when `resume_buffer` seconds are buffered
//! again.

/// One stretch of uninterrupted playback: wall time `wall` at timeline position `from`, up to
/// `to` (open while playing).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    wall: f64,
    from: f64,
    to: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Playback {
    start_buffer: f64,
    resume_buffer: f64,
    buffered_end: f64,
    runs: Vec<Run>,
    /// Wall time the current stall began, if stalled.
    stalled_since: Option<f64>,
    /// Durations of finished stalls (seconds).
    pub stalls: Vec<f64>,
    /// Where playback starts on the timeline: media before it was fetched only to decode
    /// from an independent frame (a player seeks past it).
    start_at: f64,
}

impl Playback {
    pub fn new(start_buffer: f64, resume_buffer: f64) -> Playback {
        Playback {
            start_buffer,
            resume_buffer,
            buffered_end: 0.0,
            runs: Vec::new(),
            stalled_since: None,
            stalls: Vec::new(),
            start_at: 0.0,
        }
    }

    /// Starts playback at timeline position `pos` rather than 0 (before it starts).
    pub fn start_at(&mut self, pos: f64) {
        if self.runs.is_empty() {
            self.start_at = pos.max(0.0);
        }
    }

    /// Wall time playback started (the first frame shown), if it has.
    pub fn started_at(&self) -> Option<f64> {
        self.runs.first().map(|r| r.wall)
    }

    /// Where playback started on the timeline, if it has.
    pub fn first_position(&self) -> Option<f64> {
        self.runs.first().map(|r| r.from)
    }

    pub fn buffered_end(&self) -> f64 {
        self.buffered_end
    }

    /// Brings the model up to `now`: a playhead that reached the end of the buffer stalled at
    /// that instant.
    pub fn tick(&mut self, now: f64) {
        if let Some(run) = self.runs.last_mut() {
            if run.to.is_none() {
                let reach = run.wall + (self.buffered_end - run.from);
                if reach <= now {
                    run.to = Some(self.buffered_end);
                    self.stalled_since = Some(reach);
                }
            }
        }
    }

    /// Appends `secs` of media received at `now`; `at_live_edge` says nothing more can be
    /// fetched right now (start playing with what there is).
    pub fn append(&mut self, now: f64, secs: f64, at_live_edge: bool) {
        self.tick(now);
        self.buffered_end += secs.max(0.0);
        self.maybe_play(now, at_live_edge);
    }

    /// Tells the model the player reached the live edge (nothing more to fetch yet).
    pub fn at_live_edge(&mut self, now: f64) {
        self.tick(now);
        self.maybe_play(now, true);
    }

    fn maybe_play(&mut self, now: f64, at_live_edge: bool) {
        let pos = self.position(now);
        let ahead = self.buffered_end - pos;
        if self.runs.is_empty() {
            if ahead + 1e-9 >= self.start_buffer || (at_live_edge && ahead > 0.0) {
                self.runs.push(Run {
                    wall: now,
                    from: pos,
                    to: None,
                });
            }
        } else if let Some(since) = self.stalled_since {
            if ahead + 1e-9 >= self.resume_buffer || (at_live_edge && ahead > 0.0) {
                self.stalls.push(now - since);
                self.stalled_since = None;
                self.runs.push(Run {
                    wall: now,
                    from: pos,
                    to: None,
                });
            }
        }
    }

    /// The playhead at `now` (call [`Playback::tick`] first for an exact answer).
    pub fn position(&self, now: f64) -> f64 {
        match self.runs.last() {
            None => self.start_at,
            Some(Run { to: Some(to), .. }) => *to,
            Some(r) => (r.from + (now - r.wall)).min(self.buffered_end),
        }
    }

    /// Seconds of media ahead of the playhead.
    pub fn buffer(&self, now: f64) -> f64 {
        (self.buffered_end - self.position(now)).max(0.0)
    }

    pub fn stalled(&self) -> bool {
        self.stalled_since.is_some()
    }

    /// When the stall in progress began, if stalled.
    pub fn stalled_since(&self) -> Option<f64> {
        self.stalled_since
    }

    /// Wall time at which the playhead reached (or, playing on without a stall, will reach)
    /// timeline position `pos`; `None` if that is not known yet (not buffered, or stalled
    /// before it).
    pub fn shown_at(&self, pos: f64) -> Option<f64> {
        for r in &self.runs {
            let end = r.to.unwrap_or(self.buffered_end);
            if pos >= r.from - 1e-9 && pos <= end + 1e-9 {
                return Some(r.wall + (pos - r.from).max(0.0));
            }
        }
        None
    }

    /// Total stall time, counting a stall still in progress at `now`.
    pub fn stalled_secs(&self, now: f64) -> f64 {
        self.stalls.iter().fold(0.0, |a, b| a + b) + self.stalled_since.map_or(0.0, |s| now - s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_hold_back_then_plays_in_real_time() {
        let mut p = Playback::new(0.9, 0.333);
        p.append(0.0, 0.333, false);
        p.append(0.01, 0.333, false);
        assert_eq!(p.started_at(), None);
        p.append(0.02, 0.333, false);
        assert_eq!(p.started_at(), Some(0.02));
        // Parts keep arriving at real time: no stall, buffer stays near a second.
        for i in 1..30 {
            let now = 0.02 + f64::from(i) * 0.333;
            p.append(now, 0.333, false);
            assert!(!p.stalled());
            assert!((p.buffer(now) - 0.999).abs() < 0.02, "{}", p.buffer(now));
        }
        assert!(p.stalls.is_empty());
        assert_eq!(p.shown_at(0.5), Some(0.52));
    }

    #[test]
    fn stalls_when_the_buffer_runs_dry_and_resumes() {
        let mut p = Playback::new(0.6, 0.3);
        p.append(0.0, 0.3, false);
        p.append(0.0, 0.3, false); // playing from 0.0 with 0.6 s
        p.tick(1.0);
        assert!(p.stalled(), "ran dry at 0.6");
        assert!((p.stalled_secs(1.0) - 0.4).abs() < 1e-9);
        assert_eq!(p.shown_at(0.7), None, "not buffered yet");
        p.append(1.5, 0.3, false); // enough to resume (0.3)
        assert!(!p.stalled());
        assert_eq!(p.stalls.len(), 1);
        assert!((p.stalls[0] - 0.9).abs() < 1e-9);
        // Position 0.7 is shown 0.1 s after the resume.
        assert!((p.shown_at(0.7).unwrap() - 1.6).abs() < 1e-9);
        // Earlier positions keep their original times.
        assert!((p.shown_at(0.5).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn starts_past_the_media_before_the_hold_back_point() {
        let mut p = Playback::new(1.0, 0.3);
        p.start_at(1.5);
        p.append(0.0, 2.0, false);
        assert_eq!(p.started_at(), None, "only 0.5 s ahead of the start point");
        p.append(0.1, 0.6, false);
        assert_eq!(p.started_at(), Some(0.1));
        assert_eq!(p.shown_at(1.0), None, "skipped, never shown");
        assert!((p.shown_at(2.0).unwrap() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn live_edge_starts_with_less() {
        let mut p = Playback::new(1.0, 0.3);
        p.append(0.0, 0.2, false);
        assert_eq!(p.started_at(), None);
        p.at_live_edge(0.1);
        assert_eq!(p.started_at(), Some(0.1));
    }
}
