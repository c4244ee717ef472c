//! The player's pure "what to fetch next" core: given the current media playlist, the
//! position `(msn, part)` to play next, the ABR state and the time (passed in as a value), it
//! decides the next step — switch rendition, fetch a listed part or whole segment, skip, jump
//! back into the window, or wait at the live edge with a blocking reload (`_HLS_msn`,
//! `_HLS_part`, `_HLS_skip`) beside the preload-hinted part — plus where to start, where to
//! resume after a switch, when to probe the link, and which variant to begin with.
//!
//! It does no I/O and reads no clock: no HTTP, no tokio, no URLs (URIs stay as the playlist
//! wrote them; the driver resolves them and builds the requests). It does not own the
//! playback model, the decoder or the report: the driver executes these decisions and keeps
//! those.

use crate::abr::{Abr, Switch, SwitchReason};
use crate::playlist::{MediaPlaylist, Variant};

/// The parts of the player's configuration that bear on what it fetches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Playing one pinned variant: no ABR switches, no probes.
    pub pinned: bool,
    /// Fetch `EXT-X-PRELOAD-HINT` parts alongside the blocking reload.
    pub preload_hints: bool,
    /// Ask for Playlist Delta Updates (`_HLS_skip=YES`) when the server offers them.
    pub delta_updates: bool,
    /// Seconds between link probes at the live edge.
    pub probe_interval: f64,
}

/// A listed part or whole segment to fetch and append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFetch {
    /// The media sequence number (its init segment must be in place first).
    pub msn: u64,
    /// The part index; `None` for the whole segment.
    pub part: Option<usize>,
    /// The URI as the playlist lists it (relative to the playlist).
    pub uri: String,
    /// Where to continue once it is appended.
    pub after: (u64, usize),
}

/// A blocking playlist reload for a part not listed yet, with what to fetch beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// `_HLS_msn`.
    pub msn: u64,
    /// `_HLS_part`.
    pub part: usize,
    /// `_HLS_skip=YES`: ask for a delta update.
    pub skip: bool,
    /// The preload-hinted part to fetch meanwhile (URI as listed), when it is the one waited
    /// for and hints are on.
    pub hint: Option<String>,
}

/// What the player does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Switch rendition now: an urgent switch, or an ordinary one at a segment boundary.
    Switch(Switch),
    /// No media playlist to decide from: stop playing.
    Stop,
    /// The next part fell out of the playlist window (`from` is before `window_start`); the
    /// planner has moved on to `to`, near the live edge.
    Rejoin {
        from: (u64, usize),
        window_start: u64,
        to: (u64, usize),
    },
    /// Fetch a listed part or segment.
    Fetch(MediaFetch),
    /// Segment `msn` is listed without a URI to fetch at this position: once its init segment
    /// is in place, move on to `to`.
    Skip { msn: u64, to: (u64, usize) },
    /// The stream ended (`EXT-X-ENDLIST`) before the next part.
    Ended,
    /// The next part is not listed yet: wait for it at the live edge.
    Reload(Reload),
}

/// The player's position and the decision state kept between steps.
#[derive(Debug, Clone)]
pub struct Planner {
    pub policy: Policy,
    /// The part or segment to play next, `(msn, part)`.
    pub next: (u64, usize),
    /// An ordinary ABR switch waiting for a segment boundary.
    pub pending_switch: Option<Switch>,
    /// Program date-time (Unix ms) of the end of the media appended so far.
    pub end_pdt_ms: Option<i64>,
    /// After a switch: media before this PDT is already buffered (trim the overlap).
    pub trim_until_pdt: Option<i64>,
    /// When the link was last probed (seconds on the player clock).
    pub last_probe: f64,
}

impl Planner {
    pub fn new(policy: Policy) -> Planner {
        Planner {
            policy,
            next: (0, 0),
            pending_switch: None,
            end_pdt_ms: None,
            trim_until_pdt: None,
            last_probe: 0.0,
        }
    }

    /// Decides the next step at time `now` (seconds on the player clock) with `buffer`
    /// seconds buffered, `playing` once playback has started, from `playlist` (the current
    /// variant's, if loaded).
    ///
    /// It asks `abr` for a switch when none is pending (not when pinned, not before playback
    /// starts) and hands a pending one out once it is due; on [`Step::Rejoin`] it moves
    /// `next` itself. Everything else it leaves to the driver.
    pub fn step(
        &mut self,
        playlist: Option<&MediaPlaylist>,
        abr: &mut Abr,
        now: f64,
        buffer: f64,
        playing: bool,
    ) -> Step {
        if !self.policy.pinned && self.pending_switch.is_none() && playing {
            self.pending_switch = abr.decide(now, buffer);
        }
        if let Some(s) = self.pending_switch {
            if switch_due(&s, self.next) {
                self.pending_switch = None;
                return Step::Switch(s);
            }
        }
        let Some(pl) = playlist else {
            return Step::Stop;
        };
        let (msn, part) = self.next;
        if let Some(first) = pl.segments.first() {
            if msn < first.msn {
                // Fell out of the window: start again near the live edge.
                let to = start_point(pl).map_or((first.msn, 0), |s| s.0);
                self.next = to;
                return Step::Rejoin {
                    from: (msn, part),
                    window_start: first.msn,
                    to,
                };
            }
        }
        if let Some((m, p)) = pl.resolve(msn, part) {
            return listed_media(pl, m, p);
        }
        // Not listed yet: wait for it with a blocking reload, fetching the hinted part
        // meanwhile.
        if pl.endlist {
            return Step::Ended;
        }
        let hint = (self.policy.preload_hints && pl.next_part() == (msn, part))
            .then(|| pl.preload_hint.clone())
            .flatten();
        let skip = self.policy.delta_updates && pl.can_skip_until > 0.0;
        Step::Reload(Reload {
            msn,
            part,
            skip,
            hint,
        })
    }

    /// After switching to a variant whose playlist is `playlist`: where to continue in it
    /// (see [`switch_point`]), and trim what the previous variant already buffered.
    pub fn switched(&mut self, playlist: Option<&MediaPlaylist>) {
        if let Some(pl) = playlist {
            self.next = switch_point(pl, self.end_pdt_ms, self.next);
        }
        self.trim_until_pdt = self.end_pdt_ms;
    }

    /// For a piece of media starting at PDT `pdt` and lasting `secs`: how many seconds at its
    /// start the previous variant already buffered (0 unless just after a switch). Once the
    /// piece reaches the trim point, trimming ends.
    pub fn overlap(&mut self, pdt: Option<i64>, secs: f64) -> f64 {
        let (Some(trim), Some(p)) = (self.trim_until_pdt, pdt) else {
            return 0.0;
        };
        let overlap = ((trim - p) as f64 / 1000.0).max(0.0).min(secs.max(0.0)); // no clamp: secs comes from the playlist
        if p + (secs * 1000.0) as i64 >= trim {
            self.trim_until_pdt = None;
        }
        overlap
    }

    /// A recent complete part (URI as listed) to measure the link with, when a probe is due at
    /// `now`: at the live edge with preload hints no transfer measures the link, so when a
    /// higher variant than `variants[playing]` exists, re-fetch one every `probe_interval`.
    /// Marks the probe as made when one is due, even if the playlist has no part to offer.
    pub fn probe(
        &mut self,
        now: f64,
        variants: &[Variant],
        playing: usize,
        playlist: &MediaPlaylist,
    ) -> Option<String> {
        if self.policy.pinned || !self.policy.preload_hints || variants.len() < 2 {
            return None;
        }
        let top = variants.iter().map(|v| v.bandwidth).max()?;
        if variants.get(playing).is_none_or(|v| v.bandwidth >= top)
            || now - self.last_probe < self.policy.probe_interval
        {
            return None;
        }
        self.last_probe = now;
        let (m, p) = playlist.last_part()?;
        Some(playlist.segment(m)?.parts.get(p)?.uri.clone())
    }
}

/// Whether a pending switch may happen with `next` up: urgent ones (emergency, failover) at
/// once, ordinary ones at a segment boundary.
pub fn switch_due(s: &Switch, next: (u64, usize)) -> bool {
    matches!(s.reason, SwitchReason::Emergency | SwitchReason::Failover) || next.1 == 0
}

/// What to fetch for the listed position `(m, p)`: the whole segment when it and the next one
/// are complete, else the part.
fn listed_media(pl: &MediaPlaylist, m: u64, p: usize) -> Step {
    // Whole segments when a later segment is complete too; parts near the edge.
    let later_complete = pl.segment(m + 1).is_some_and(|s| s.uri.is_some());
    let (uri, whole) = match pl.segment(m) {
        Some(s) if p == 0 && later_complete && s.uri.is_some() => (s.uri.clone(), true),
        Some(s) => (s.parts.get(p).map(|x| x.uri.clone()), false),
        None => (None, false),
    };
    let Some(uri) = uri else {
        return Step::Skip {
            msn: m,
            to: (m + 1, 0),
        };
    };
    let after = if whole { (m + 1, 0) } else { pl.after(m, p) };
    Step::Fetch(MediaFetch {
        msn: m,
        part: (!whole).then_some(p),
        uri,
        after,
    })
}

/// Where to start in a playlist: `PART-HOLD-BACK` behind the last listed part, on an
/// independent part (or three target durations back without parts). Returns the position to
/// fetch from and how far into it (seconds) playback should seek.
pub fn start_point(pl: &MediaPlaylist) -> Option<((u64, usize), f64)> {
    let parts: Vec<(u64, usize, f64, bool)> = pl
        .segments
        .iter()
        .flat_map(|s| {
            s.parts
                .iter()
                .enumerate()
                .map(move |(i, p)| (s.msn, i, p.duration, p.independent))
        })
        .collect();
    if !parts.is_empty() {
        let hold = if pl.part_hold_back > 0.0 {
            pl.part_hold_back
        } else {
            3.0 * pl.part_target
        };
        let mut behind = 0.0;
        let mut i = parts.len();
        while i > 0 && behind < hold - 1e-6 {
            i -= 1;
            behind += parts[i].2;
        }
        // Fetch from an independent part at or before, and seek past what lies before
        // the hold-back point (decoded, not shown).
        let start = (0..=i).rev().find(|&k| parts[k].3).unwrap_or(i);
        let seek: f64 = parts[start..i].iter().map(|p| p.2).sum();
        return Some(((parts[start].0, parts[start].1), seek));
    }
    let complete: Vec<u64> = pl
        .segments
        .iter()
        .filter(|s| s.uri.is_some())
        .map(|s| s.msn)
        .collect();
    let back = complete.len().saturating_sub(3);
    complete.get(back).map(|&m| ((m, 0), 0.0))
}

/// The buffer the playback model starts with and resumes after a stall with, from the first
/// playlist: (most of) `PART-HOLD-BACK` — parts are rarely exactly `PART-TARGET` — and a part
/// target's worth (three part targets, or target durations without parts, when there is no
/// hold-back).
pub fn buffer_goals(pl: &MediaPlaylist) -> (f64, f64) {
    let target = if pl.part_target > 0.0 {
        pl.part_target
    } else {
        pl.target_duration as f64
    };
    let hold = if pl.part_hold_back > 0.0 {
        pl.part_hold_back
    } else {
        3.0 * target
    };
    (hold * 0.9, target)
}

/// The first part to fetch in a new variant's playlist after a switch: the last independent
/// part (or complete segment without parts) that starts at or before `end_pdt_ms`, the end of
/// what is buffered (within 50 ms); the next part to come if the new variant is behind; and
/// `next` unchanged when nothing buffered has a PDT (aligned by media sequence number).
pub fn switch_point(
    pl: &MediaPlaylist,
    end_pdt_ms: Option<i64>,
    next: (u64, usize),
) -> (u64, usize) {
    let Some(want) = end_pdt_ms else {
        return next;
    };
    let mut best = None;
    for s in &pl.segments {
        for (i, p) in s.parts.iter().enumerate() {
            if !p.independent {
                continue;
            }
            if let Some(t) = pl.part_date_time_ms(s.msn, i) {
                if t <= want + 50 {
                    best = Some((s.msn, i));
                }
            }
        }
        if s.parts.is_empty() && s.uri.is_some() {
            if let Some(t) = pl.part_date_time_ms(s.msn, 0) {
                if t <= want + 50 {
                    best = Some((s.msn, 0));
                }
            }
        }
    }
    // Otherwise the new variant is behind: wait for its next part.
    best.unwrap_or_else(|| pl.next_part())
}

/// The `(LAST-MSN, LAST-PART)` that `playlist` reports for the rendition whose report URI
/// `is_target` accepts (the first such `EXT-X-RENDITION-REPORT`).
pub fn rendition_report(
    playlist: &MediaPlaylist,
    is_target: impl Fn(&str) -> bool,
) -> Option<(u64, Option<usize>)> {
    playlist
        .rendition_reports
        .iter()
        .find(|r| is_target(&r.uri))
        .map(|r| (r.last_msn, r.last_part))
}

/// After a blocking reload that ran beside the hinted part `(msn, part)`: where to continue if
/// the new playlist lists that part as itself (so the fetched body is the part and is
/// appended), `None` if it does not.
pub fn hinted_next(pl: &MediaPlaylist, msn: u64, part: usize) -> Option<(u64, usize)> {
    (pl.resolve(msn, part) == Some((msn, part))).then(|| pl.after(msn, part))
}

/// After a blocking reload for `(msn, part)`: how long to wait (seconds) before asking again
/// when the answer neither lists it nor ends the stream — a server that ignores `_HLS_msn`
/// must not turn blocking reloads into tight polling. `None` when it was answered.
pub fn reload_backoff(pl: &MediaPlaylist, msn: u64, part: usize) -> Option<f64> {
    let answered = pl.endlist || pl.resolve(msn, part).is_some();
    (!answered).then(|| pl.part_target.clamp(0.1, 1.0))
}

/// Whether a failed request with HTTP `status` means the variant is gone (404, 410, 403, 5xx)
/// and playback should fail over, rather than retry.
pub fn fails_over(status: u16) -> bool {
    matches!(status, 404 | 410 | 403 | 500..=599)
}

/// The variant to start with: `pin` (clamped to the list) if given, else the best one whose
/// bandwidth fits `start_bandwidth` × `safety`, else the lowest.
pub fn start_variant(
    bandwidths: &[u64],
    pin: Option<usize>,
    start_bandwidth: u64,
    safety: f64,
) -> usize {
    match pin {
        Some(p) => p.min(bandwidths.len().saturating_sub(1)),
        None => {
            let mut order: Vec<usize> = (0..bandwidths.len()).collect();
            order.sort_by_key(|&i| bandwidths[i]);
            order
                .iter()
                .rev()
                .copied()
                .find(|&i| bandwidths[i] as f64 <= start_bandwidth as f64 * safety)
                .or_else(|| order.first().copied())
                .unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abr::AbrConfig;

    fn playlist(text: &str) -> MediaPlaylist {
        MediaPlaylist::parse(text).unwrap()
    }

    fn planner() -> Planner {
        Planner::new(Policy {
            pinned: false,
            preload_hints: true,
            delta_updates: true,
            probe_interval: 2.0,
        })
    }

    fn abr() -> Abr {
        Abr::new(AbrConfig::default(), vec![1_000_000, 4_000_000], 0)
    }

    fn switch(reason: SwitchReason) -> Switch {
        Switch {
            at: 1.0,
            from: 0,
            to: 1,
            reason,
            estimate_bps: 5e6,
            buffer: 1.0,
        }
    }

    /// Segment 5 complete in four parts, segment 6 in progress with two parts and a preload
    /// hint for 6.2; delta updates offered.
    const LIVE: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.0\n\
        #EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:4\n\
        #EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:00.000Z\n#EXTINF:2.0,\n4.m4s\n\
        #EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:02.000Z\n\
        #EXT-X-PART:DURATION=0.5,URI=\"5.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"5.1.m4s\"\n\
        #EXT-X-PART:DURATION=0.5,URI=\"5.2.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"5.3.m4s\"\n#EXTINF:2.0,\n5.m4s\n\
        #EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:04.000Z\n\
        #EXT-X-PART:DURATION=0.5,URI=\"6.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"6.1.m4s\"\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"6.2.m4s\"\n";

    /// PDT of 2026-11-27T22:00:00.000Z (Unix ms).
    const T0: i64 = 1_795_816_800_000;

    /// The start point is PART-HOLD-BACK behind the last part, fetched from the independent
    /// part before it, with the media in between seeked past.
    #[test]
    fn starts_hold_back_behind_the_edge_on_an_independent_part() {
        let pl = playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n#EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:5\n\
             #EXT-X-PART:DURATION=0.5,URI=\"5.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"5.1.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.2.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.3.m4s\"\n#EXTINF:2.0,\n5.m4s\n\
             #EXT-X-PART:DURATION=0.5,URI=\"6.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"6.1.m4s\"\n",
        );
        // 1.0 s back from the end of 6.1 is the start of 6.0, itself independent.
        assert_eq!(start_point(&pl), Some(((6, 0), 0.0)));
        let pl = playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n#EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:5\n\
             #EXT-X-PART:DURATION=0.5,URI=\"5.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"5.1.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.2.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"5.3.m4s\"\n",
        );
        // 1.0 s back is 5.2: fetch from 5.0, seek 1.0 s in.
        assert_eq!(start_point(&pl), Some(((5, 0), 1.0)));
        // Without parts: three segments back.
        let pl = playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2,\n1.ts\n#EXTINF:2,\n2.ts\n#EXTINF:2,\n3.ts\n#EXTINF:2,\n4.ts\n");
        assert_eq!(start_point(&pl), Some(((2, 0), 0.0)));
        assert_eq!(start_point(&playlist("#EXTM3U\n")), None);
    }

    /// More than a segment behind: the whole segment; near the edge: parts; a complete
    /// segment's last part leads to the next segment.
    #[test]
    fn fetches_whole_segments_behind_and_parts_near_the_edge() {
        // Segment 6 complete too: segment 5 is fetched whole, from its start only.
        let complete = playlist(&LIVE.replace(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"6.2.m4s\"\n",
            "#EXTINF:1.0,\n6.m4s\n",
        ));
        let mut p = planner();
        let mut a = abr();
        p.next = (5, 0);
        assert_eq!(
            p.step(Some(&complete), &mut a, 0.0, 0.0, false),
            Step::Fetch(MediaFetch {
                msn: 5,
                part: None,
                uri: "5.m4s".into(),
                after: (6, 0)
            })
        );
        p.next = (5, 1);
        assert_eq!(
            p.step(Some(&complete), &mut a, 0.0, 0.0, false),
            Step::Fetch(MediaFetch {
                msn: 5,
                part: Some(1),
                uri: "5.1.m4s".into(),
                after: (5, 2)
            })
        );
        // Segment 6 is not complete, so segment 5 goes part by part.
        let pl = playlist(LIVE);
        p.next = (5, 0);
        assert_eq!(
            p.step(Some(&pl), &mut a, 0.0, 0.0, false),
            Step::Fetch(MediaFetch {
                msn: 5,
                part: Some(0),
                uri: "5.0.m4s".into(),
                after: (5, 1)
            })
        );
        p.next = (5, 3);
        assert_eq!(
            p.step(Some(&pl), &mut a, 0.0, 0.0, false),
            Step::Fetch(MediaFetch {
                msn: 5,
                part: Some(3),
                uri: "5.3.m4s".into(),
                after: (6, 0)
            })
        );
        // Asking past a complete segment's parts resolves to the next segment's first part.
        p.next = (5, 4);
        assert!(matches!(
            p.step(Some(&pl), &mut a, 0.0, 0.0, false),
            Step::Fetch(MediaFetch {
                msn: 6,
                part: Some(0),
                ..
            })
        ));
        assert_eq!(p.next, (5, 4), "the driver moves on once it has the media");
    }

    /// At the edge: a blocking reload for the next part, with delta updates when offered and
    /// the hinted part when it is the one waited for.
    #[test]
    fn waits_at_the_edge_with_a_blocking_reload_and_the_hinted_part() {
        let pl = playlist(LIVE);
        let mut p = planner();
        let mut a = abr();
        p.next = (6, 2);
        assert_eq!(
            p.step(Some(&pl), &mut a, 0.0, 0.0, false),
            Step::Reload(Reload {
                msn: 6,
                part: 2,
                skip: true,
                hint: Some("6.2.m4s".into())
            })
        );
        // Further ahead than the hint (after a switch to a variant behind): no hint.
        p.next = (6, 3);
        assert_eq!(
            p.step(Some(&pl), &mut a, 0.0, 0.0, false),
            Step::Reload(Reload {
                msn: 6,
                part: 3,
                skip: true,
                hint: None
            })
        );
        // Hints and delta updates off.
        p.policy.preload_hints = false;
        p.policy.delta_updates = false;
        p.next = (6, 2);
        assert_eq!(
            p.step(Some(&pl), &mut a, 0.0, 0.0, false),
            Step::Reload(Reload {
                msn: 6,
                part: 2,
                skip: false,
                hint: None
            })
        );
        // A server that does not offer delta updates gets no `_HLS_skip`.
        let no_skip = playlist(&LIVE.replace("CAN-SKIP-UNTIL=12.0,", ""));
        let mut p = planner();
        p.next = (6, 2);
        assert!(matches!(
            p.step(Some(&no_skip), &mut a, 0.0, 0.0, false),
            Step::Reload(Reload {
                skip: false,
                hint: Some(_),
                ..
            })
        ));
        // An ended stream: nothing more to wait for.
        let ended = playlist(&format!("{LIVE}#EXT-X-ENDLIST\n"));
        assert_eq!(p.step(Some(&ended), &mut a, 0.0, 0.0, false), Step::Ended);
        assert_eq!(p.step(None, &mut a, 0.0, 0.0, false), Step::Stop);
    }

    /// A position that fell out of the window jumps back to the start point near the edge.
    #[test]
    fn rejoins_near_the_edge_after_falling_out_of_the_window() {
        let pl = playlist(LIVE);
        let mut p = planner();
        p.next = (2, 1);
        assert_eq!(start_point(&pl), Some(((6, 0), 0.0)));
        assert_eq!(
            p.step(Some(&pl), &mut abr(), 0.0, 0.0, false),
            Step::Rejoin {
                from: (2, 1),
                window_start: 4,
                to: (6, 0)
            }
        );
        assert_eq!(p.next, (6, 0));
    }

    /// An ordinary switch waits for a segment boundary; an emergency or failover one does not.
    /// Pinned players and players not yet playing do not ask ABR.
    #[test]
    fn switches_at_segment_boundaries_unless_urgent() {
        let pl = playlist(LIVE);
        let mut p = planner();
        let mut a = abr();
        p.next = (5, 1);
        p.pending_switch = Some(switch(SwitchReason::Up));
        assert!(matches!(
            p.step(Some(&pl), &mut a, 1.0, 1.0, true),
            Step::Fetch(MediaFetch {
                msn: 5,
                part: Some(1),
                ..
            })
        ));
        assert!(p.pending_switch.is_some(), "still waiting for the boundary");
        p.next = (6, 0);
        assert_eq!(
            p.step(Some(&pl), &mut a, 1.0, 1.0, true),
            Step::Switch(switch(SwitchReason::Up))
        );
        assert_eq!(p.pending_switch, None);
        for urgent in [SwitchReason::Emergency, SwitchReason::Failover] {
            p.next = (5, 1);
            p.pending_switch = Some(switch(urgent));
            assert_eq!(
                p.step(Some(&pl), &mut a, 1.0, 0.1, true),
                Step::Switch(switch(urgent))
            );
        }
        // A fast link makes ABR want the higher variant after `up_after` seconds of fitting;
        // the planner asks it only once playback runs, and never when pinned.
        for _ in 0..8 {
            a.sample(1_000_000, 0.1);
        }
        p.next = (6, 0);
        let mut pinned = p.clone();
        pinned.policy.pinned = true;
        let mut pinned_abr = a.clone();
        for t in [0.0, 5.0] {
            assert!(matches!(
                pinned.step(Some(&pl), &mut pinned_abr, t, 1.0, true),
                Step::Fetch(_)
            ));
        }
        assert!(matches!(
            p.step(Some(&pl), &mut a, 0.0, 1.0, false),
            Step::Fetch(_)
        ));
        assert!(matches!(
            p.step(Some(&pl), &mut a, 0.0, 1.0, true),
            Step::Fetch(_)
        ));
        assert!(matches!(
            p.step(Some(&pl), &mut a, 5.0, 1.0, true),
            Step::Switch(Switch {
                to: 1,
                reason: SwitchReason::Up,
                ..
            })
        ));
    }

    /// After a switch: the last independent part at or before the buffered end (by PDT), the
    /// next part when the new variant is behind, the same position without PDT; and the
    /// overlap the previous variant already buffered is trimmed once.
    #[test]
    fn lands_a_switch_by_program_date_time_and_trims_the_overlap() {
        let pl = playlist(LIVE);
        // Buffered up to 22:00:03.200: 5.2 (03.000) is the last independent part before it.
        assert_eq!(switch_point(&pl, Some(T0 + 3_200), (9, 9)), (5, 2));
        // Within 50 ms of the next independent part counts as at it.
        assert_eq!(switch_point(&pl, Some(T0 + 3_960), (9, 9)), (6, 0));
        // Before anything the new variant lists: its next part.
        assert_eq!(switch_point(&pl, Some(T0 - 10_000), (9, 9)), (6, 2));
        assert_eq!(switch_point(&pl, None, (9, 9)), (9, 9));

        let mut p = planner();
        p.next = (9, 9);
        p.end_pdt_ms = Some(T0 + 3_200);
        p.switched(Some(&pl));
        assert_eq!(p.next, (5, 2));
        assert_eq!(p.trim_until_pdt, Some(T0 + 3_200));
        // 5.2 starts at 03.000 and lasts 0.5 s: its first 0.2 s is already buffered.
        let o = p.overlap(Some(T0 + 3_000), 0.5);
        assert!((o - 0.2).abs() < 1e-9, "{o}");
        assert_eq!(p.trim_until_pdt, None, "trimming ends at the trim point");
        assert_eq!(p.overlap(Some(T0 + 3_500), 0.5), 0.0);
    }

    /// Probes only at the edge below the top variant, once per interval, with hints on.
    #[test]
    fn probes_the_link_below_the_top_variant_once_per_interval() {
        let pl = playlist(LIVE);
        let v = |bandwidth| Variant {
            uri: String::new(),
            bandwidth,
            resolution: None,
            codecs: None,
        };
        let variants = [v(1_000_000), v(4_000_000)];
        let mut p = planner();
        assert_eq!(p.probe(1.0, &variants, 0, &pl), None, "not yet due");
        assert_eq!(p.probe(2.5, &variants, 0, &pl), Some("6.1.m4s".into()));
        assert_eq!(p.last_probe, 2.5);
        assert_eq!(p.probe(3.0, &variants, 0, &pl), None);
        assert_eq!(p.probe(9.0, &variants, 1, &pl), None, "on the top variant");
        assert_eq!(p.probe(9.0, &variants[..1], 0, &pl), None, "one variant");
        p.policy.pinned = true;
        assert_eq!(p.probe(9.0, &variants, 0, &pl), None, "pinned");
    }

    /// After a blocking reload: the hinted part is appended only when listed as itself, and
    /// a reload that did not list the part backs off instead of polling.
    #[test]
    fn settles_a_blocking_reload() {
        let pl = playlist(LIVE);
        assert_eq!(hinted_next(&pl, 6, 1), Some((6, 2)));
        assert_eq!(hinted_next(&pl, 6, 2), None, "not listed yet");
        // Segment 5 has four parts: 5.4 resolves to 6.0, not itself.
        assert_eq!(hinted_next(&pl, 5, 4), None);
        assert_eq!(reload_backoff(&pl, 6, 1), None);
        assert_eq!(reload_backoff(&pl, 6, 2), Some(0.5));
        let ended = playlist(&format!("{LIVE}#EXT-X-ENDLIST\n"));
        assert_eq!(reload_backoff(&ended, 6, 2), None);
        assert!(fails_over(404) && fails_over(503) && fails_over(403));
        assert!(!fails_over(0) && !fails_over(200) && !fails_over(429));
    }

    /// The first variant: the best under the start bandwidth (with ABR's safety factor), the
    /// lowest if none fits, the pinned one (clamped) if pinned.
    #[test]
    fn picks_the_start_variant() {
        let bw = [2_000_000, 500_000, 4_000_000];
        assert_eq!(start_variant(&bw, None, 5_000_000, 0.8), 2);
        assert_eq!(start_variant(&bw, None, 3_000_000, 0.8), 0);
        assert_eq!(start_variant(&bw, None, 100_000, 0.8), 1);
        assert_eq!(start_variant(&bw, Some(1), 100_000_000, 0.8), 1);
        assert_eq!(start_variant(&bw, Some(7), 0, 0.8), 2);
        assert_eq!(buffer_goals(&playlist(LIVE)), (0.9, 0.5));
    }

    /// The rendition report is picked by the caller's URI test.
    #[test]
    fn picks_the_rendition_report_the_caller_names() {
        let pl = playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-PART:DURATION=0.5,URI=\"5.0.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=5,LAST-PART=0\n\
             #EXT-X-RENDITION-REPORT:URI=\"../240p/index.m3u8\",LAST-MSN=4,LAST-PART=3\n",
        );
        assert_eq!(
            rendition_report(&pl, |u| u.contains("240p")),
            Some((4, Some(3)))
        );
        assert_eq!(rendition_report(&pl, |_| false), None);
    }
}
