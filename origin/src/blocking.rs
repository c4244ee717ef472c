//! Blocking playlist reload decisions (RFC 8216bis §6.2.5.2): given the live window and a
//! request's `_HLS_msn` / `_HLS_part`, answer now, hold the request, or refuse it. Pure; the
//! HTTP handler re-evaluates on every window change until the answer is not `Hold` or its
//! deadline (3 × target duration) passes.

use crate::window::LiveWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Ready,
    Hold,
    BadRequest(&'static str),
}

/// The Advance Part Limit: 3 / PART-TARGET parts when PART-TARGET < 1 s, else 3.
pub fn advance_part_limit(part_target_secs: f64) -> u64 {
    if part_target_secs < 1.0 && part_target_secs > 0.0 {
        (3.0 / part_target_secs).ceil() as u64
    } else {
        3
    }
}

pub fn decide(w: &LiveWindow, msn: Option<u64>, part: Option<u64>) -> Decision {
    let Some(msn) = msn else {
        return if part.is_some() {
            Decision::BadRequest("_HLS_part without _HLS_msn")
        } else {
            Decision::Ready
        };
    };
    if w.ended() {
        return Decision::Ready; // directives are ignored once the playlist has ENDLIST
    }
    let Some(last) = w.last_complete_msn() else {
        return Decision::Hold;
    };
    if msn > last + 2 {
        return Decision::BadRequest("_HLS_msn is more than two segments past the last one");
    }
    let limit = advance_part_limit(w.part_target_secs);
    let Some(part) = part else {
        return if last >= msn {
            Decision::Ready
        } else {
            Decision::Hold
        };
    };
    let (mut msn, mut part) = (msn, part);
    loop {
        match w.segment(msn) {
            None if w.segments().next().is_some_and(|s| msn < s.msn) => return Decision::Ready,
            None => {
                // A segment that has not started yet.
                let open_remaining = match w.preload_hint() {
                    Some((m, p)) if m + 1 == msn => limit.saturating_sub(p as u64),
                    _ => limit,
                };
                return if part > open_remaining {
                    Decision::BadRequest("_HLS_part is beyond the advance part limit")
                } else {
                    Decision::Hold
                };
            }
            Some(seg) => {
                let complete = seg.complete_parts() as u64;
                if part < complete {
                    return Decision::Ready;
                }
                if seg.duration.is_some() {
                    // Past the end of a complete segment: part 0 of the next one.
                    msn += 1;
                    part = 0;
                    continue;
                }
                return if part >= complete + limit {
                    Decision::BadRequest("_HLS_part is beyond the advance part limit")
                } else {
                    Decision::Hold
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packager::Packaged;
    use bytes::Bytes;
    use std::time::SystemTime;

    /// Segments 0 and 1 complete with 3 parts each; segment 2 open with 1 complete part.
    fn window() -> LiveWindow {
        let mut w = LiveWindow::new(0, 6, 0.333);
        w.apply(Packaged::TargetDuration(1));
        for seg in 0..3 {
            w.apply(Packaged::SegmentStart {
                discontinuity: false,
                init_version: 0,
                program_date_time: SystemTime::UNIX_EPOCH,
                start: 0,
            });
            let parts = if seg < 2 { 3 } else { 1 };
            for _ in 0..parts {
                w.apply(Packaged::PartStart { independent: false });
                w.apply(Packaged::Chunk(Bytes::from_static(b"x")));
                w.apply(Packaged::PartEnd { duration: 30_000 });
            }
            if seg < 2 {
                w.apply(Packaged::SegmentEnd { duration: 90_000 });
            }
        }
        w
    }

    #[test]
    fn decisions() {
        let w = window();
        use Decision::*;
        assert_eq!(decide(&w, None, None), Ready);
        assert!(matches!(decide(&w, None, Some(1)), BadRequest(_)));
        assert_eq!(decide(&w, Some(1), None), Ready);
        assert_eq!(decide(&w, Some(2), None), Hold);
        assert_eq!(decide(&w, Some(3), None), Hold);
        assert!(matches!(decide(&w, Some(4), None), BadRequest(_)));
        assert_eq!(decide(&w, Some(2), Some(0)), Ready);
        assert_eq!(decide(&w, Some(2), Some(1)), Hold);
        // Part index past the end of a complete segment = next segment's part 0.
        assert_eq!(decide(&w, Some(1), Some(3)), Ready);
        assert_eq!(decide(&w, Some(1), Some(7)), Ready);
        assert_eq!(decide(&w, Some(0), Some(0)), Ready);
        // Advance part limit: 3 / 0.333 → 10 parts ahead.
        assert_eq!(advance_part_limit(0.333), 10);
        assert_eq!(decide(&w, Some(2), Some(10)), Hold);
        assert!(matches!(decide(&w, Some(2), Some(11)), BadRequest(_)));
        assert_eq!(decide(&w, Some(3), Some(0)), Hold);
        assert!(matches!(decide(&w, Some(3), Some(10)), BadRequest(_)));
    }

    #[test]
    fn ended_playlists_ignore_directives() {
        let mut w = window();
        w.end();
        assert_eq!(decide(&w, Some(3), Some(5)), Decision::Ready);
    }
}
