//! A small LL-HLS media playlist parser (the tags Ferrocast and Apple's LL-HLS use).

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
    pub rendition_reports: Vec<String>,
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

fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split_once(':')?.1;
    // Attributes are comma separated; quoted values contain no commas in our output.
    rest.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
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
        for line in text.lines() {
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
                p.rendition_reports.push(line.to_owned());
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
    }
}
