//! Just enough ISO BMFF reading for a player: the video track and its timescale from an init
//! segment, and the first video decode time (`tfdt`) and sample count of a CMAF fragment (a part
//! or a segment, possibly several `moof`+`mdat` chunks). Pure; bounds-checked on every read.

/// Why a box could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Error(pub String);

impl std::fmt::Display for Mp4Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad mp4: {}", self.0)
    }
}

impl std::error::Error for Mp4Error {}

fn err<T>(what: &str) -> Result<T, Mp4Error> {
    Err(Mp4Error(what.to_owned()))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, Mp4Error> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| Mp4Error(format!("truncated at {at}")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, Mp4Error> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Mp4Error(format!("truncated at {at}")))
}

/// A box: its four-character type and payload.
type BoxRef<'a> = ([u8; 4], &'a [u8]);

/// The boxes directly inside `b`.
fn boxes(b: &[u8]) -> Result<Vec<BoxRef<'_>>, Mp4Error> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let size = u32_at(b, at)? as usize;
        let kind: [u8; 4] = b[at + 4..at + 8]
            .try_into()
            .map_err(|_| Mp4Error("box type".into()))?;
        let (header, size) = match size {
            1 => (
                16,
                usize::try_from(u64_at(b, at + 8)?).unwrap_or(usize::MAX),
            ),
            0 => (8, b.len() - at),
            s => (8, s),
        };
        if size < header || at + size > b.len() {
            // A part being streamed may end inside an mdat; what came before is still good.
            if &kind == b"mdat" {
                break;
            }
            return err(&format!(
                "box {} of {size} bytes overruns {} at {at}",
                String::from_utf8_lossy(&kind),
                b.len()
            ));
        }
        out.push((kind, &b[at + header..at + size]));
        at += size;
    }
    Ok(out)
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, Mp4Error> {
    Ok(boxes(b)?
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, p)| p))
}

/// The video track of an init segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTrack {
    pub track_id: u32,
    pub timescale: u32,
}

/// Finds the video track (`hdlr` = `vide`) in an init segment.
pub fn video_track(init: &[u8]) -> Result<VideoTrack, Mp4Error> {
    let moov = child(init, b"moov")?.ok_or_else(|| Mp4Error("no moov".into()))?;
    for (kind, trak) in boxes(moov)? {
        if &kind != b"trak" {
            continue;
        }
        let Some(mdia) = child(trak, b"mdia")? else {
            continue;
        };
        let hdlr = child(mdia, b"hdlr")?.ok_or_else(|| Mp4Error("no hdlr".into()))?;
        if hdlr.get(8..12) != Some(b"vide") {
            continue;
        }
        let tkhd = child(trak, b"tkhd")?.ok_or_else(|| Mp4Error("no tkhd".into()))?;
        let track_id = if tkhd.first() == Some(&1) {
            u32_at(tkhd, 20)?
        } else {
            u32_at(tkhd, 12)?
        };
        let mdhd = child(mdia, b"mdhd")?.ok_or_else(|| Mp4Error("no mdhd".into()))?;
        let timescale = if mdhd.first() == Some(&1) {
            u32_at(mdhd, 20)?
        } else {
            u32_at(mdhd, 12)?
        };
        if timescale == 0 {
            return err("video timescale 0");
        }
        return Ok(VideoTrack {
            track_id,
            timescale,
        });
    }
    err("no video track")
}

/// The video samples of a fragment: decode time of the first (seconds), how many, and when
/// the first is presented (its decode time plus its signed composition offset, as MSE and
/// the ISO BMFF spec read it — ffprobe without an edit list shifts every PTS of a track with
/// negative offsets by the largest of them, so it cannot tell this).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoRun {
    pub start_secs: f64,
    pub samples: u32,
    pub first_presented_secs: f64,
}

/// The first sample's composition offset in a `trun` (0 when the box carries none).
fn first_composition_offset(trun: &[u8]) -> Result<i64, Mp4Error> {
    let version = trun.first().copied().unwrap_or(0);
    let flags = u32_at(trun, 0)? & 0x00ff_ffff;
    if flags & 0x800 == 0 || u32_at(trun, 4)? == 0 {
        return Ok(0);
    }
    let mut at = 8;
    for (flag, len) in [(0x1, 4), (0x4, 4), (0x100, 4), (0x200, 4), (0x400, 4)] {
        if flags & flag != 0 {
            at += len;
        }
    }
    let raw = u32_at(trun, at)?;
    Ok(if version == 1 {
        i64::from(raw as i32)
    } else {
        i64::from(raw)
    })
}

/// Reads the video track's `tfdt` and sample counts from every `moof` in `fragment`.
pub fn video_run(fragment: &[u8], track: VideoTrack) -> Result<Option<VideoRun>, Mp4Error> {
    let mut run: Option<VideoRun> = None;
    for (kind, moof) in boxes(fragment)? {
        if &kind != b"moof" {
            continue;
        }
        for (kind, traf) in boxes(moof)? {
            if &kind != b"traf" {
                continue;
            }
            let tfhd = child(traf, b"tfhd")?.ok_or_else(|| Mp4Error("no tfhd".into()))?;
            if u32_at(tfhd, 4)? != track.track_id {
                continue;
            }
            let mut samples = 0;
            let mut first_offset = None;
            for (kind, b) in boxes(traf)? {
                if &kind == b"trun" {
                    if first_offset.is_none() {
                        first_offset = Some(first_composition_offset(b)?);
                    }
                    samples += u32_at(b, 4)?;
                }
            }
            match &mut run {
                Some(r) => r.samples += samples,
                None => {
                    let tfdt = child(traf, b"tfdt")?.ok_or_else(|| Mp4Error("no tfdt".into()))?;
                    let t = if tfdt.first() == Some(&1) {
                        u64_at(tfdt, 4)?
                    } else {
                        u64::from(u32_at(tfdt, 4)?)
                    };
                    let scale = f64::from(track.timescale);
                    run = Some(VideoRun {
                        start_secs: t as f64 / scale,
                        samples,
                        first_presented_secs: (t as f64 + first_offset.unwrap_or(0) as f64) / scale,
                    });
                }
            }
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    /// An init segment and a (non-independent) part captured from `ferrocast serve`
    /// (640x360 x264 + AAC published with ffmpeg): ffprobe reads 9 video packets from 52.3 s.
    #[test]
    fn reads_a_real_ferrocast_part() {
        let init = include_bytes!("../testdata/ferrocast_init_360p.mp4");
        let part = include_bytes!("../testdata/ferrocast_part_360p.m4s");
        let track = video_track(init).unwrap();
        assert_eq!(track.timescale, 90_000);
        let run = video_run(part, track).unwrap().unwrap();
        assert_eq!(run.samples, 9);
        assert!((run.start_secs - 52.3).abs() < 1e-9, "{}", run.start_secs);
        // No B-frames in this capture: the first sample is presented when it decodes.
        assert!((run.first_presented_secs - 52.3).abs() < 1e-9);
        // Every truncation of it is an error or a shorter read, never a panic.
        for cut in 0..part.len() {
            let _ = video_run(&part[..cut], track);
        }
    }

    #[test]
    fn reads_video_track_and_runs() {
        let mut tkhd = vec![0u8; 84];
        tkhd[12..16].copy_from_slice(&2u32.to_be_bytes());
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&90_000u32.to_be_bytes());
        let mut hdlr = vec![0u8; 24];
        hdlr[8..12].copy_from_slice(b"vide");
        let mdia = [bx(b"mdhd", &mdhd), bx(b"hdlr", &hdlr)].concat();
        let trak = [bx(b"tkhd", &tkhd), bx(b"mdia", &mdia)].concat();
        let init = [bx(b"ftyp", b"iso6"), bx(b"moov", &bx(b"trak", &trak))].concat();
        let track = video_track(&init).unwrap();
        assert_eq!(
            track,
            VideoTrack {
                track_id: 2,
                timescale: 90_000
            }
        );

        let mut tfhd = vec![0u8; 8];
        tfhd[4..8].copy_from_slice(&2u32.to_be_bytes());
        let mut tfdt = vec![1u8, 0, 0, 0];
        tfdt.extend_from_slice(&180_000u64.to_be_bytes());
        let mut trun = vec![0u8; 8];
        trun[4..8].copy_from_slice(&3u32.to_be_bytes());
        let traf = [bx(b"tfhd", &tfhd), bx(b"tfdt", &tfdt), bx(b"trun", &trun)].concat();
        let chunk = [bx(b"moof", &bx(b"traf", &traf)), bx(b"mdat", &[0; 16])].concat();
        let part = [chunk.clone(), chunk].concat();
        let run = video_run(&part, track).unwrap().unwrap();
        assert_eq!(run.samples, 6);
        assert!((run.start_secs - 2.0).abs() < 1e-9);
        // Garbage and truncation are errors, not panics.
        assert!(video_track(b"garbage!").is_err());
        assert!(video_run(&part[..20], track).is_err());
        assert_eq!(video_run(&[], track).unwrap(), None);
    }
}
