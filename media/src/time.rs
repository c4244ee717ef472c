//! Media timestamps that carry their timescale, unwrapping of wrapping counters, and
//! wall-clock formatting.

use std::cmp::Ordering;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A media timestamp: `ticks` of a `timescale` (ticks per second), already unwrapped to 64
/// bits. Video runs at [`crate::VIDEO_TIMESCALE`], AAC audio at its sample rate; the value says
/// which, so code never has to remember what a bare number meant for a given track.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    ticks: i64,
    timescale: u32,
}

impl Timestamp {
    /// `timescale` 0 is taken as 1 (a timescale is never zero).
    pub const fn new(ticks: i64, timescale: u32) -> Timestamp {
        Timestamp {
            ticks,
            timescale: if timescale == 0 { 1 } else { timescale },
        }
    }

    pub const fn ticks(self) -> i64 {
        self.ticks
    }

    pub const fn timescale(self) -> u32 {
        self.timescale
    }

    /// This time in another timescale (rounded to the nearest tick).
    pub fn rescale(self, timescale: u32) -> i64 {
        let to = i128::from(timescale.max(1));
        let from = i128::from(self.timescale);
        let v = i128::from(self.ticks) * to;
        let rounded = (v + v.signum() * from / 2) / from;
        i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
    }

    pub fn as_secs_f64(self) -> f64 {
        self.ticks as f64 / f64::from(self.timescale)
    }

    /// The same timescale, `ticks` later (earlier if negative).
    pub const fn add_ticks(self, ticks: i64) -> Timestamp {
        Timestamp {
            ticks: self.ticks.saturating_add(ticks),
            timescale: self.timescale,
        }
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    /// Compares instants, whatever their timescales.
    fn cmp(&self, other: &Self) -> Ordering {
        let a = i128::from(self.ticks) * i128::from(other.timescale);
        let b = i128::from(other.ticks) * i128::from(self.timescale);
        a.cmp(&b)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ticks, self.timescale)
    }
}

/// Unwraps an N-bit wrapping counter (RTMP: 32-bit milliseconds; MPEG-TS: 33-bit 90 kHz) into a
/// monotonic-enough `i64`. A step backwards of less than half the range is taken as a real step
/// back (B-frame reordering, small jitter), not a wrap.
#[derive(Debug, Clone)]
pub struct Unwrapper {
    bits: u32,
    last: Option<i64>,
}

impl Unwrapper {
    pub fn new(bits: u32) -> Unwrapper {
        assert!((1..=62).contains(&bits));
        Unwrapper { bits, last: None }
    }

    pub fn unwrap(&mut self, raw: u64) -> i64 {
        let range = 1i64 << self.bits;
        let raw = (raw as i64) & (range - 1);
        let value = match self.last {
            None => raw,
            Some(last) => {
                let base = last - last.rem_euclid(range);
                let candidates = [base - range + raw, base + raw, base + range + raw];
                candidates
                    .into_iter()
                    .min_by_key(|c| (c - last).abs())
                    .unwrap_or(raw)
            }
        };
        self.last = Some(value);
        value
    }
}

/// Formats a wall-clock time as RFC 3339 / ISO 8601 in UTC with milliseconds, as
/// `EXT-X-PROGRAM-DATE-TIME` wants: `2026-11-27T20:02:32.123Z`.
pub fn format_rfc3339_millis(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_know_their_timescale() {
        let v = Timestamp::new(90_000, 90_000);
        let a = Timestamp::new(48_000, 48_000);
        assert_eq!(v.cmp(&a), Ordering::Equal);
        assert_eq!(a.rescale(90_000), 90_000);
        assert_eq!(Timestamp::new(1024, 48_000).rescale(90_000), 1920);
        assert_eq!(Timestamp::new(-1, 3).rescale(90_000), -30_000);
        assert!(Timestamp::new(1, 44_100) < Timestamp::new(3, 90_000));
        assert_eq!(v.add_ticks(3000).ticks(), 93_000);
        assert_eq!(Timestamp::new(5, 0).timescale(), 1);
        assert_eq!(format!("{v:?}"), "90000/90000");
        assert!((a.as_secs_f64() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn rtmp_32bit_wrap() {
        let mut u = Unwrapper::new(32);
        assert_eq!(u.unwrap(4_294_967_000), 4_294_967_000);
        assert_eq!(u.unwrap(4_294_967_290), 4_294_967_290);
        assert_eq!(u.unwrap(5), 4_294_967_301);
        assert_eq!(u.unwrap(4_294_967_295), 4_294_967_295); // small step back across the wrap
        assert_eq!(u.unwrap(40), 4_294_967_336);
    }

    #[test]
    fn ts_33bit_wrap() {
        let mut u = Unwrapper::new(33);
        let max = (1u64 << 33) - 1;
        assert_eq!(u.unwrap(max - 3000), (max - 3000) as i64);
        assert_eq!(u.unwrap(1000), (max + 1 + 1000) as i64);
    }

    #[test]
    fn formats_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_723_352_123);
        assert_eq!(format_rfc3339_millis(t), "2026-11-26T20:02:32.123Z");
        assert_eq!(
            format_rfc3339_millis(UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
