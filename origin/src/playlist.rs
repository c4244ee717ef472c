//! LL-HLS playlist writers (RFC 8216bis with the Low-Latency extensions): pure functions from
//! a [`LiveWindow`] and request options to playlist text.

use crate::window::LiveWindow;
use std::fmt::Write;

/// File names of a rendition's objects.
pub fn part_uri(msn: u64, part: usize) -> String {
    format!("{msn}.{part}.m4s")
}

pub fn segment_uri(msn: u64) -> String {
    format!("{msn}.m4s")
}

pub fn init_uri(version: u32) -> String {
    if version == 0 {
        "init.mp4".to_owned()
    } else {
        format!("init-{version}.mp4")
    }
}

/// `EXT-X-RENDITION-REPORT` for another rendition of the same stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: usize,
}

#[derive(Debug, Clone, Default)]
pub struct MediaOptions {
    /// `_HLS_skip=YES`: write a Playlist Delta Update.
    pub skip: bool,
    pub reports: Vec<RenditionReport>,
}

/// Seconds with up to five decimals, trailing zeros kept to three (`2.000`, `0.30000`).
fn secs(v: f64) -> String {
    format!("{v:.5}")
}

fn control_secs(v: f64) -> String {
    format!("{v:.3}")
}

/// Renders the media playlist. Call only when [`LiveWindow::ready`].
pub fn media_playlist(w: &LiveWindow, opts: &MediaOptions) -> String {
    let td = w.target_duration().unwrap_or(1);
    let can_skip_until = 6.0 * f64::from(td);
    let part_hold_back = 3.0 * w.part_target_secs;
    let segments: Vec<_> = w.segments().collect();

    // Delta update: skip segments that start more than CAN-SKIP-UNTIL before the end.
    let mut skipped = 0usize;
    if opts.skip && !w.ended() {
        // Distance of each segment's end from the end of the playlist; a segment is skipped
        // only if it lies wholly before the skip boundary.
        let mut from_end = 0.0;
        let mut ends_from_end = vec![0.0; segments.len()];
        for (i, s) in segments.iter().enumerate().rev() {
            ends_from_end[i] = from_end;
            from_end += if s.duration.is_some() {
                s.duration_secs()
            } else {
                s.parts.iter().map(|p| p.duration_secs()).sum()
            };
        }
        skipped = ends_from_end
            .iter()
            .take_while(|d| **d > can_skip_until + 1e-9)
            .count();
        // Never skip the open segment.
        skipped = skipped.min(segments.iter().filter(|s| s.duration.is_some()).count());
    }

    let mut out = String::with_capacity(4096);
    let version = if opts.skip { 9 } else { 6 };
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{version}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{td}");
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={}",
        control_secs(can_skip_until),
        control_secs(part_hold_back)
    );
    let _ = writeln!(
        out,
        "#EXT-X-PART-INF:PART-TARGET={}",
        control_secs(w.part_target_secs)
    );
    let first_msn = segments.first().map_or(0, |s| s.msn);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    if w.discontinuity_sequence() > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            w.discontinuity_sequence()
        );
    }
    if opts.skip {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }

    let parts_from = segments.len().saturating_sub(w.part_segments);
    let mut current_init = None;
    for (i, s) in segments.iter().enumerate().skip(skipped) {
        if s.discontinuity && i > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if current_init != Some(s.init_version) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_uri(s.init_version));
            current_init = Some(s.init_version);
        }
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            media::format_rfc3339_millis(s.program_date_time)
        );
        if i >= parts_from {
            for (p, part) in s.parts.iter().enumerate() {
                if part.bytes.is_none() {
                    break;
                }
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={},URI=\"{}\"",
                    secs(part.duration_secs()),
                    part_uri(s.msn, p)
                );
                if part.independent {
                    out.push_str(",INDEPENDENT=YES");
                }
                out.push('\n');
            }
        }
        if s.duration.is_some() {
            let _ = writeln!(out, "#EXTINF:{},", secs(s.duration_secs()));
            let _ = writeln!(out, "{}", segment_uri(s.msn));
        }
    }
    if let Some((msn, part)) = w.preload_hint() {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_uri(msn, part)
        );
    }
    for r in &opts.reports {
        let _ = writeln!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
            r.uri, r.last_msn, r.last_part
        );
    }
    if w.ended() {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
    out
}

/// One variant of the multivariant playlist, measured from the actual stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    /// Video size and frame rate; None for an audio-only rendition (no RESOLUTION).
    pub video: Option<((u32, u32), f64)>,
}

pub fn multivariant_playlist(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:6\n");
    for v in variants {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            v.bandwidth, v.average_bandwidth, v.codecs
        );
        match v.video {
            Some(((w, h), fps)) => {
                let _ = writeln!(out, ",RESOLUTION={w}x{h},FRAME-RATE={fps:.3}");
            }
            None => out.push('\n'),
        }
        let _ = writeln!(out, "{}", v.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packager::Packaged;
    use bytes::Bytes;
    use std::time::{Duration, SystemTime};

    fn window(segments: usize, max: usize) -> LiveWindow {
        let mut w = LiveWindow::new(10, max, 0.333);
        w.apply(Packaged::Init {
            version: 0,
            bytes: Bytes::from_static(b"init"),
            config: crate::fmp4::InitConfig {
                video: Some(
                    media::AvcConfig::parse(Bytes::from_static(include_bytes!(
                        "../../media/testdata/avcc_720p_high.bin"
                    )))
                    .unwrap(),
                ),
                audio: None,
            },
        });
        w.apply(Packaged::TargetDuration(1));
        for i in 0..segments {
            w.apply(Packaged::SegmentStart {
                discontinuity: i == segments - 1 && i > 0,
                init_version: 0,
                program_date_time: SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64),
                start: 0,
            });
            for p in 0..3 {
                w.apply(Packaged::PartStart {
                    independent: p == 0,
                });
                w.apply(Packaged::Chunk(Bytes::from_static(b"x")));
                w.apply(Packaged::PartEnd { duration: 30_000 });
            }
            w.apply(Packaged::SegmentEnd { duration: 90_000 });
        }
        // An open segment with one complete part and one being written.
        w.apply(Packaged::SegmentStart {
            discontinuity: false,
            init_version: 0,
            program_date_time: SystemTime::UNIX_EPOCH + Duration::from_secs(segments as u64),
            start: 0,
        });
        w.apply(Packaged::PartStart { independent: true });
        w.apply(Packaged::PartEnd { duration: 30_000 });
        w.apply(Packaged::PartStart { independent: false });
        w
    }

    #[test]
    fn renders_ll_hls_tags() {
        let w = window(4, 6);
        let p = media_playlist(
            &w,
            &MediaOptions {
                skip: false,
                reports: vec![RenditionReport {
                    uri: "../480p/index.m3u8".into(),
                    last_msn: 14,
                    last_part: 0,
                }],
            },
        );
        let expected = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,PART-HOLD-BACK=0.999
#EXT-X-PART-INF:PART-TARGET=0.333
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:00.000Z
#EXTINF:1.00000,
10.m4s
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:01.000Z
#EXTINF:1.00000,
11.m4s
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:02.000Z
#EXT-X-PART:DURATION=0.33333,URI=\"12.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI=\"12.1.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"12.2.m4s\"
#EXTINF:1.00000,
12.m4s
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:03.000Z
#EXT-X-PART:DURATION=0.33333,URI=\"13.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI=\"13.1.m4s\"
#EXT-X-PART:DURATION=0.33333,URI=\"13.2.m4s\"
#EXTINF:1.00000,
13.m4s
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:04.000Z
#EXT-X-PART:DURATION=0.33333,URI=\"14.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"14.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=14,LAST-PART=0
";
        assert_eq!(p, expected);
    }

    #[test]
    fn delta_update_skips_old_segments() {
        let w = window(10, 10);
        let p = media_playlist(
            &w,
            &MediaOptions {
                skip: true,
                reports: vec![],
            },
        );
        assert!(p.contains("#EXT-X-VERSION:9\n"));
        // 10 complete 1 s segments + 0.33 s open; CAN-SKIP-UNTIL = 6 s → the 4 oldest skipped.
        assert!(p.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"), "{p}");
        let ms = p.find("#EXT-X-MEDIA-SEQUENCE:10").unwrap();
        assert!(ms < p.find("#EXT-X-SKIP").unwrap());
        assert!(!p.contains("\n10.m4s") && !p.contains("\n13.m4s") && p.contains("\n14.m4s"));
    }

    #[test]
    fn ended_stream_has_endlist_and_no_hint() {
        let mut w = window(2, 6);
        w.end();
        let p = media_playlist(&w, &MediaOptions::default());
        assert!(p.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!p.contains("PRELOAD-HINT"));
    }

    #[test]
    fn multivariant_has_measured_attributes() {
        let p = multivariant_playlist(&[Variant {
            uri: "source/index.m3u8".into(),
            bandwidth: 3_200_000,
            average_bandwidth: 3_000_000,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            video: Some(((1280, 720), 30.0)),
        }]);
        assert_eq!(
            p,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=3200000,AVERAGE-BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000\nsource/index.m3u8\n"
        );
    }

    #[test]
    fn an_audio_only_variant_has_no_resolution() {
        let p = multivariant_playlist(&[Variant {
            uri: "source/index.m3u8".into(),
            bandwidth: 140_000,
            average_bandwidth: 130_000,
            codecs: "mp4a.40.2".into(),
            video: None,
        }]);
        assert_eq!(
            p,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=130000,CODECS=\"mp4a.40.2\"\nsource/index.m3u8\n"
        );
    }
}
