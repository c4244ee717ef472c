//! A small LL-HLS playlist parser (RFC 8216bis with the Low-Latency tags): media playlists
//! (parts, preload hints, rendition reports, delta updates, program date-time) and
//! multivariant playlists. Pure: text in, typed values out.

#[derive(Debug, Clone, PartialEq)]
pub struct PartEntry {
    pub duration: f64,
    pub uri: String,
    pub independent: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SegmentEntry {
    pub msn: u64,
    pub duration: Option<f64>,
    pub uri: Option<String>,
    pub parts: Vec<PartEntry>,
    pub discontinuity: bool,
    pub program_date_time: Option<String>,
    pub map: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaPlaylist {
    pub text: String,
    pub version: u32,
    pub target_duration: u64,
    pub part_target: f64,
    pub part_hold_back: f64,
    pub can_skip_until: f64,
    pub can_block_reload: bool,
    pub media_sequence: u64,
    pub skipped: Option<u64>,
    pub segments: Vec<SegmentEntry>,
    pub preload_hint: Option<String>,
    pub rendition_reports: Vec<RenditionReport>,
    pub endlist: bool,
    /// Tag names in order of appearance (for ordering checks).
    pub tags: Vec<String>,
}

/// Why a playlist could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistError(pub String);

impl std::fmt::Display for PlaylistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad playlist: {}", self.0)
    }
}

impl std::error::Error for PlaylistError {}

fn num<T: std::str::FromStr>(v: Option<&str>, what: &str) -> Result<T, PlaylistError> {
    v.and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| PlaylistError(format!("{what}: missing or not a number")))
}

/// An attribute of a tag line; quoted values may contain commas (CODECS="avc1…,mp4a…").
fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = line.split_once(':')?.1;
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (
                &q[..end],
                q[end + 1..].strip_prefix(',').unwrap_or(&q[end + 1..]),
            )
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        if k.trim() == key {
            return Some(v);
        }
        rest = next;
    }
    None
}

/// `EXT-X-RENDITION-REPORT`: where another rendition's live edge is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: Option<usize>,
}

/// One `EXT-X-STREAM-INF` of a multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub resolution: Option<(u32, u32)>,
    pub codecs: Option<String>,
}

/// A multivariant playlist: its variants, in the order listed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MultivariantPlaylist {
    pub variants: Vec<Variant>,
}

impl MultivariantPlaylist {
    /// `true` if `text` is a multivariant playlist rather than a media playlist.
    pub fn is_multivariant(text: &str) -> bool {
        text.lines().any(|l| l.starts_with("#EXT-X-STREAM-INF:"))
    }

    pub fn parse(text: &str) -> Result<MultivariantPlaylist, PlaylistError> {
        if !text.starts_with("#EXTM3U") {
            return Err(PlaylistError("does not start with #EXTM3U".into()));
        }
        let mut out = MultivariantPlaylist::default();
        let mut pending: Option<Variant> = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#EXT-X-STREAM-INF:") {
                pending = Some(Variant {
                    uri: String::new(),
                    bandwidth: num(attr(line, "BANDWIDTH"), "BANDWIDTH")?,
                    resolution: attr(line, "RESOLUTION").and_then(|r| {
                        let (w, h) = r.split_once('x')?;
                        Some((w.parse().ok()?, h.parse().ok()?))
                    }),
                    codecs: attr(line, "CODECS").map(str::to_owned),
                });
            } else if !line.is_empty() && !line.starts_with('#') {
                if let Some(mut v) = pending.take() {
                    v.uri = line.to_owned();
                    out.variants.push(v);
                }
            }
        }
        if out.variants.is_empty() {
            return Err(PlaylistError("no EXT-X-STREAM-INF variants".into()));
        }
        Ok(out)
    }
}

/// Parses an RFC 3339 date-time (`2026-11-27T22:36:26.123Z`, or with a `±hh:mm` offset) into
/// Unix milliseconds.
pub fn parse_date_time_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (clock, offset_min) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?),
        )
    };
    let mut t = clock.splitn(3, ':');
    let (h, mi): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    if h > 23 || mi > 59 || !(0.0..61.0).contains(&sec) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(
        ((days * 86_400 + h * 3600 + mi * 60 - offset_min * 60) as f64 * 1000.0 + sec * 1000.0)
            .round() as i64,
    )
}

impl MediaPlaylist {
    pub fn parse(text: &str) -> Result<MediaPlaylist, PlaylistError> {
        if !text.starts_with("#EXTM3U") {
            return Err(PlaylistError("does not start with #EXTM3U".into()));
        }
        let mut p = MediaPlaylist {
            text: text.to_owned(),
            ..Default::default()
        };

        let mut cur = SegmentEntry::default();
        let mut map = None;
        let mut msn = None;
        for line in text.lines().map(str::trim_end) {
            if let Some(tag) = line.strip_prefix('#') {
                p.tags.push(tag.split(':').next().unwrap_or("").to_owned());
            }
            if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
                p.version = num(Some(v), "EXT-X-VERSION")?;
            } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                p.target_duration = num(Some(v), "EXT-X-TARGETDURATION")?;
            } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
                p.can_block_reload = attr(line, "CAN-BLOCK-RELOAD") == Some("YES");
                p.part_hold_back =
                    num(attr(line, "PART-HOLD-BACK").or(Some("0")), "PART-HOLD-BACK")?;
                p.can_skip_until =
                    num(attr(line, "CAN-SKIP-UNTIL").or(Some("0")), "CAN-SKIP-UNTIL")?;
            } else if line.starts_with("#EXT-X-PART-INF:") {
                p.part_target = num(attr(line, "PART-TARGET"), "PART-TARGET")?;
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = num(Some(v), "EXT-X-MEDIA-SEQUENCE")?;
                msn = Some(p.media_sequence);
            } else if line.starts_with("#EXT-X-SKIP:") {
                let n: u64 = num(attr(line, "SKIPPED-SEGMENTS"), "SKIPPED-SEGMENTS")?;
                p.skipped = Some(n);
                msn = Some(
                    msn.ok_or_else(|| PlaylistError("EXT-X-SKIP before MEDIA-SEQUENCE".into()))?
                        + n,
                );
            } else if line.starts_with("#EXT-X-MAP:") {
                map = attr(line, "URI").map(str::to_owned);
            } else if line == "#EXT-X-DISCONTINUITY" {
                cur.discontinuity = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                cur.program_date_time = Some(v.to_owned());
            } else if line.starts_with("#EXT-X-PART:") {
                cur.parts.push(PartEntry {
                    duration: num(attr(line, "DURATION"), "EXT-X-PART DURATION")?,
                    uri: attr(line, "URI")
                        .ok_or_else(|| PlaylistError("EXT-X-PART without URI".into()))?
                        .to_owned(),
                    independent: attr(line, "INDEPENDENT") == Some("YES"),
                });
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                cur.duration = Some(num(v.split(',').next(), "EXTINF")?);
            } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
                p.preload_hint = attr(line, "URI").map(str::to_owned);
            } else if line.starts_with("#EXT-X-RENDITION-REPORT:") {
                p.rendition_reports.push(RenditionReport {
                    uri: attr(line, "URI")
                        .ok_or_else(|| PlaylistError("RENDITION-REPORT without URI".into()))?
                        .to_owned(),
                    last_msn: num(attr(line, "LAST-MSN"), "LAST-MSN")?,
                    last_part: attr(line, "LAST-PART").and_then(|v| v.parse().ok()),
                });
            } else if line == "#EXT-X-ENDLIST" {
                p.endlist = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                cur.uri = Some(line.to_owned());
                cur.msn = msn.unwrap_or(0);
                cur.map = map.clone();
                msn = Some(cur.msn + 1);
                p.segments.push(std::mem::take(&mut cur));
            }
        }
        if !cur.parts.is_empty() || cur.program_date_time.is_some() {
            cur.msn = msn.unwrap_or(0);
            cur.map = map;
            p.segments.push(cur);
        }
        Ok(p)
    }

    /// Merges a Playlist Delta Update (`EXT-X-SKIP`) into the full playlist it updates: the
    /// skipped segments are taken from `self`. Errors if `self` no longer has them.
    pub fn apply_delta(&self, delta: MediaPlaylist) -> Result<MediaPlaylist, PlaylistError> {
        let Some(skipped) = delta.skipped else {
            return Ok(delta);
        };
        let first_new = delta.media_sequence + skipped;
        let kept: Vec<SegmentEntry> = self
            .segments
            .iter()
            .filter(|s| s.msn >= delta.media_sequence && s.msn < first_new)
            .cloned()
            .collect();
        if kept.len() as u64 != skipped {
            return Err(PlaylistError(format!(
                "delta update skips {skipped} segments from {}, only {} known",
                delta.media_sequence,
                kept.len()
            )));
        }
        let mut merged = delta;
        let mut segments = kept;
        // The delta's first listed segment inherits the last skipped one's map.
        let last_map = segments.last().and_then(|s| s.map.clone());
        for mut s in std::mem::take(&mut merged.segments) {
            if s.map.is_none() {
                s.map.clone_from(&last_map);
            }
            segments.push(s);
        }
        merged.segments = segments;
        merged.skipped = None;
        Ok(merged)
    }

    /// Program date-time of a part's start (Unix ms): the segment's PDT plus the parts before.
    pub fn part_date_time_ms(&self, msn: u64, part: usize) -> Option<i64> {
        let s = self.segments.iter().find(|s| s.msn == msn)?;
        let pdt = parse_date_time_ms(s.program_date_time.as_deref()?)?;
        let before: f64 = s.parts.iter().take(part).map(|p| p.duration).sum();
        Some(pdt + (before * 1000.0).round() as i64)
    }

    /// The segment `msn`, if listed.
    pub fn segment(&self, msn: u64) -> Option<&SegmentEntry> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    /// Where `(msn, part)` is in this playlist: itself if listed, the first part of the next
    /// segment if `msn` is complete with fewer parts, `None` if not (yet) listed.
    pub fn resolve(&self, msn: u64, part: usize) -> Option<(u64, usize)> {
        let s = self.segment(msn)?;
        if part < s.parts.len() {
            return Some((msn, part));
        }
        if s.uri.is_some() {
            let next = self.segment(msn + 1)?;
            return (!next.parts.is_empty() || next.uri.is_some()).then_some((msn + 1, 0));
        }
        None
    }

    /// The part after `(msn, part)` in this playlist's numbering (without knowing if it exists).
    pub fn after(&self, msn: u64, part: usize) -> (u64, usize) {
        match self.segment(msn) {
            Some(s) if s.uri.is_some() && part + 1 >= s.parts.len() => (msn + 1, 0),
            _ => (msn, part + 1),
        }
    }

    /// The last complete part listed: (msn, index).
    pub fn last_part(&self) -> Option<(u64, usize)> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.parts.is_empty())
            .map(|s| (s.msn, s.parts.len() - 1))
    }

    pub fn last_complete_msn(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.uri.is_some())
            .map(|s| s.msn)
    }

    /// The `_HLS_msn`/`_HLS_part` of the next part after the last one listed.
    pub fn next_part(&self) -> (u64, usize) {
        match self.last_part() {
            Some((msn, p)) => {
                let complete = self
                    .segments
                    .iter()
                    .find(|s| s.msn == msn)
                    .is_some_and(|s| s.uri.is_some());
                if complete {
                    (msn + 1, 0)
                } else {
                    (msn, p + 1)
                }
            }
            None => (self.last_complete_msn().map_or(0, |m| m + 1), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ll_hls_and_refuses_garbage() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-PART:DURATION=0.3,URI=\"7.0.m4s\",INDEPENDENT=YES\n#EXTINF:2.0,\n7.m4s\n#EXT-X-PART:DURATION=0.3,URI=\"8.0.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"8.1.m4s\"\n";
        let p = MediaPlaylist::parse(text).unwrap();
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.last_part(), Some((8, 0)));
        assert_eq!(p.next_part(), (8, 1));
        assert!(MediaPlaylist::parse("hello").is_err());
        assert!(MediaPlaylist::parse("#EXTM3U\n#EXT-X-TARGETDURATION:x\n").is_err());
        assert!(MediaPlaylist::parse("#EXTM3U\n#EXT-X-PART:DURATION=0.3\n").is_err());
        assert_eq!(p.resolve(7, 0), Some((7, 0)));
        assert_eq!(
            p.resolve(7, 1),
            Some((8, 0)),
            "segment 7 is complete with one part"
        );
        assert_eq!(p.resolve(8, 1), None);
        assert_eq!(p.after(7, 0), (8, 0));
        assert_eq!(p.after(8, 0), (8, 1));
    }

    #[test]
    fn date_times() {
        assert_eq!(parse_date_time_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_date_time_ms("2026-11-27T22:36:26.123Z"),
            Some(1_795_818_986_123)
        );
        assert_eq!(
            parse_date_time_ms("2026-11-27T23:36:26.123+01:00"),
            Some(1_795_818_986_123)
        );
        assert_eq!(parse_date_time_ms("2026-13-27T23:36:26Z"), None);
        assert_eq!(parse_date_time_ms("yesterday"), None);
    }

    /// A playlist as the origin writes it (captured from `ferrocast serve`), then a delta
    /// update of it: merging restores the skipped segments.
    #[test]
    fn delta_updates_merge() {
        let full = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,PART-HOLD-BACK=0.999\n#EXT-X-PART-INF:PART-TARGET=0.33300\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:00.000Z\n#EXTINF:1.00000,\n10.m4s\n#EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:01.000Z\n#EXTINF:1.00000,\n11.m4s\n#EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:02.000Z\n#EXT-X-PART:DURATION=0.33300,URI=\"12.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33300,URI=\"12.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.2.m4s\"\n#EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=12,LAST-PART=1\n";
        let full = MediaPlaylist::parse(full).unwrap();
        assert_eq!(full.part_date_time_ms(12, 1), Some(1_795_816_802_333));
        assert_eq!(
            full.rendition_reports,
            vec![RenditionReport {
                uri: "../480p/index.m3u8".into(),
                last_msn: 12,
                last_part: Some(1)
            }]
        );
        let delta = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-PROGRAM-DATE-TIME:2026-11-27T22:00:02.000Z\n#EXT-X-PART:DURATION=0.33300,URI=\"12.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33300,URI=\"12.1.m4s\"\n#EXT-X-PART:DURATION=0.33300,URI=\"12.2.m4s\"\n#EXTINF:1.00000,\n12.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"13.0.m4s\"\n";
        let delta = MediaPlaylist::parse(delta).unwrap();
        assert_eq!(delta.segments[0].msn, 12);
        let merged = full.apply_delta(delta.clone()).unwrap();
        let msns: Vec<u64> = merged.segments.iter().map(|s| s.msn).collect();
        assert_eq!(msns, vec![10, 11, 12]);
        assert_eq!(merged.segments[2].map.as_deref(), Some("init.mp4"));
        assert_eq!(merged.next_part(), (13, 0));
        // A delta that skips segments the client never had is refused.
        let stale = MediaPlaylist {
            segments: vec![],
            ..full
        };
        assert!(stale.apply_delta(delta).is_err());
    }

    #[test]
    fn multivariant() {
        let text = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=3200000,AVERAGE-BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000\nsource/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=426x240\n240p/index.m3u8\n";
        assert!(MultivariantPlaylist::is_multivariant(text));
        let m = MultivariantPlaylist::parse(text).unwrap();
        assert_eq!(m.variants.len(), 2);
        assert_eq!(
            m.variants[0].codecs.as_deref(),
            Some("avc1.64001f,mp4a.40.2")
        );
        assert_eq!(m.variants[0].resolution, Some((1280, 720)));
        assert_eq!(m.variants[1].bandwidth, 400_000);
        assert!(MultivariantPlaylist::parse("#EXTM3U\n").is_err());
        assert!(
            MultivariantPlaylist::parse("#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\nx\n").is_err()
        );
    }
}
