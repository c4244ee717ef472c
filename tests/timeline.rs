//! The timeline never breaks: a raw RTMP publisher replays an ffmpeg-made FLV in real time on
//! one connection while its clock misbehaves (jumps back and forward, the 32-bit wrap, video or
//! audio or both pausing, a burst after a stall). A follower checks, for each case, that the
//! live edge keeps advancing, every segment fits TARGETDURATION and decodes (starting with a
//! keyframe when it has video), every splice is an EXT-X-DISCONTINUITY, and the program
//! date-time at the live edge stays within 1 s of the wall clock.

#![allow(clippy::unwrap_used)]

mod common;

use common::flv::{self, Misbehave, Tag};
use common::{hls, Server};
use player_test::playlist::parse_date_time_ms;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS: u32 = 24;
const CONFIG: &str =
    "part_target = 0.333\ntarget_duration = 1\nwindow_segments = 40\ngrace_period = 5.0";

fn tags() -> &'static [Tag] {
    static TAGS: OnceLock<(tempfile::TempDir, Vec<Tag>)> = OnceLock::new();
    let (_, tags) = TAGS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = flv::make_flv(dir.path(), SECONDS);
        let tags = flv::read_tags(&path);
        (dir, tags)
    });
    tags
}

struct Expect {
    /// Discontinuities the follower must see (splices and holes).
    discontinuities: usize,
    /// The source's own silence (the follower may wait this much longer).
    gap: Duration,
    /// Source time span during which the PDT need not match the wall clock (a burst).
    pdt_exempt_ms: Option<(u32, u32)>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// How the source reaches the server.
enum Publish {
    /// The raw RTMP publisher, misbehaving as it says.
    Rtmp(Misbehave),
    /// MPEG-TS files sent one after another on one SRT connection, each paced in real time
    /// with its own timestamps (so a file encoded separately is a clock jump).
    Srt(Vec<(std::path::PathBuf, u32)>),
}

fn run(how: Misbehave, expect: Expect) {
    check(Publish::Rtmp(how), expect);
}

fn check(publish: Publish, expect: Expect) {
    let server = Server::start(&common::config(CONFIG));
    let rt = common::runtime();
    let (followed, replay_start) = rt.block_on(async {
        let started = SystemTime::now();
        let replay = match publish {
            Publish::Rtmp(how) => {
                let r = tokio::spawn(flv::replay(server.rtmp, common::KEY, tags(), how));
                tokio::spawn(async move { r.await.ok().and_then(|r| r.started) })
            }
            Publish::Srt(files) => {
                let url = format!("srt://{}?streamid=live/{}", server.srt, common::KEY);
                tokio::task::spawn_blocking(move || {
                    srt_in_sequence(&url, &files);
                    None
                })
            }
        };
        let c = hls::client();
        hls::wait_stream(&c, &server.base(), "cam").await;
        let media = format!("{}/live/cam/source/index.m3u8", server.base());
        let f = hls::follow(&c, &media, Duration::from_secs(u64::from(SECONDS) - 3)).await;
        let r = replay.await.ok().flatten();
        (f, r.unwrap_or(started))
    });
    let log = server.log();
    assert!(followed.errors.is_empty(), "{:?}\n{log}", followed.errors);

    // The live edge advanced, and no blocking reload waited long.
    let first = followed.playlists.first().unwrap().media_sequence;
    let last = *followed.entries.keys().last().unwrap();
    let expected = u64::from(SECONDS) - 8 - expect.gap.as_secs();
    assert!(
        last - first >= expected,
        "the live edge advanced {} segments, want ≥ {expected}\n{log}",
        last - first
    );
    let longest = followed
        .blocking_times
        .iter()
        .max()
        .copied()
        .unwrap_or_default();
    assert!(
        longest <= Duration::from_millis(1000 + 1500) + expect.gap,
        "a blocking reload waited {longest:?} (source gap {:?})\n{log}",
        expect.gap
    );

    // Durations: segments round to ≤ TARGETDURATION, parts ≤ PART-TARGET.
    let pl = followed.playlists.last().unwrap();
    let td = pl.target_duration as f64;
    for s in followed.entries.values() {
        if let Some(d) = s.duration {
            assert!(
                d.round() <= td,
                "segment {} lasts {d} s > TD {td}\n{}",
                s.msn,
                pl.text
            );
        }
        for p in &s.parts {
            assert!(
                p.duration <= pl.part_target + 0.001,
                "part {} lasts {} > PART-TARGET",
                p.uri,
                p.duration
            );
        }
    }

    // Every splice and hole is marked.
    let marked = followed
        .entries
        .values()
        .filter(|s| s.discontinuity)
        .count();
    assert_eq!(
        marked, expect.discontinuities,
        "EXT-X-DISCONTINUITY count\n{}",
        pl.text
    );

    // Program date-time at the live edge follows the wall clock (within 1 s).
    for (p, at) in followed.playlists.iter().zip(&followed.fetched_at) {
        let Some(seg) = p
            .segments
            .iter()
            .rev()
            .find(|s| s.program_date_time.is_some())
        else {
            continue;
        };
        let pdt = parse_date_time_ms(seg.program_date_time.as_deref().unwrap()).unwrap();
        let listed: f64 = match seg.duration {
            Some(d) => d,
            None => seg.parts.iter().map(|p| p.duration).sum(),
        };
        let edge = pdt + (listed * 1000.0) as i64;
        let source_ms = ms(*at) - ms(replay_start);
        if let Some((from, to)) = expect.pdt_exempt_ms {
            if (i64::from(from)..i64::from(to) + 3000).contains(&source_ms) {
                continue;
            }
        }
        let off = edge - ms(*at);
        assert!(
            off.abs() <= 1000,
            "live edge PDT {off} ms off the wall clock at {source_ms} ms of the source\n{}",
            p.text
        );
    }

    // INDEPENDENT=YES marks exactly the parts that start with a keyframe, or that have no
    // video at all (audio drove while video was away).
    let dir = tempfile::tempdir().unwrap();
    for ((msn, i), bytes) in &followed.parts {
        let (Some(entry), Some(map)) = (
            followed.entries.get(msn),
            followed.entries.get(msn).and_then(|e| e.map.clone()),
        ) else {
            continue;
        };
        let Some(listed) = entry.parts.get(*i) else {
            continue;
        };
        let init = &followed.inits[&map];
        let path = common::write_media(dir.path(), &format!("{msn}.{i}.mp4"), init, &[bytes]);
        let starts_clean = common::packets(&path)
            .iter()
            .find(|p| p.video)
            .is_none_or(|v| v.keyframe);
        assert_eq!(
            listed.independent, starts_clean,
            "part {msn}.{i}: INDEPENDENT={} but starts with a keyframe or no video={starts_clean}",
            listed.independent
        );
    }

    // Every complete segment decodes; one with video starts with a keyframe.
    let dir = tempfile::tempdir().unwrap();
    for (msn, bytes) in &followed.segments {
        let map = followed.entries[msn].map.clone().unwrap();
        let init = &followed.inits[&map];
        let path = common::write_media(dir.path(), &format!("{msn}.mp4"), init, &[bytes]);
        let packets = common::packets(&path);
        assert!(!packets.is_empty(), "segment {msn} is empty");
        match packets.iter().find(|p| p.video) {
            Some(v) => {
                assert!(v.keyframe, "segment {msn} does not start with a keyframe");
                if let Some(e) = common::decode_errors(&path) {
                    panic!("segment {msn} does not decode: {e}\n{log}");
                }
            }
            // Audio only (video paused): the init still declares video; decode the audio.
            None => {
                if let Some(e) = decode_audio_errors(&path) {
                    panic!("audio-only segment {msn} does not decode: {e}\n{log}");
                }
            }
        }
    }
}

/// `seconds` of the test pattern as MPEG-TS (ffmpeg CLI), its timestamps shifted by
/// `offset_secs` (an encoder started anew, or with a clock an hour ahead).
fn ts_file(
    dir: &std::path::Path,
    name: &str,
    seconds: u32,
    offset_secs: u32,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-bf", "2"])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-b:v", "300k", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
        .args([
            "-output_ts_offset",
            &offset_secs.to_string(),
            "-f",
            "mpegts",
        ])
        .arg(&path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg could not make {name}");
    path
}

/// Sends `files` (each `(path, seconds)`) one after another on one SRT connection
/// (srt-live-transmit reading stdin), each paced at its average byte rate, its timestamps
/// untouched (a remuxing pacer such as `ffmpeg -re -c copy` would "fix" the very wraps and
/// jumps under test).
fn srt_in_sequence(url: &str, files: &[(std::path::PathBuf, u32)]) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut slt = Command::new("srt-live-transmit")
        // -t is a total exit timer (a safety net): we stop it ourselves after the last file.
        .args(["-q", "-a:no", "-t:90", "file://con", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("srt-live-transmit (Debian srt-tools)");
    let mut sink = slt.stdin.take().unwrap();
    'files: for (path, seconds) in files {
        let bytes = std::fs::read(path).unwrap();
        let per_sec = bytes.len() as f64 / f64::from(*seconds);
        let start = std::time::Instant::now();
        for (i, chunk) in bytes.chunks(188 * 7).enumerate() {
            let due = Duration::from_secs_f64((i * 188 * 7) as f64 / per_sec);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            if sink.write_all(chunk).and_then(|_| sink.flush()).is_err() {
                break 'files;
            }
        }
    }
    // Let the last packets leave, then hang up (srt-live-transmit stays connected otherwise).
    std::thread::sleep(Duration::from_millis(500));
    drop(sink);
    let _ = slt.kill();
    let _ = slt.wait();
}

/// ffmpeg's complaints decoding only the audio of `path`.
fn decode_audio_errors(path: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    (!out.status.success() || !err.is_empty()).then_some(err)
}

#[test]
fn a_steady_publisher() {
    run(
        Misbehave::None,
        Expect {
            discontinuities: 0,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn clock_jumps_backward() {
    run(
        Misbehave::JumpBack {
            at_ms: 12_000,
            to_ms: 40,
        },
        Expect {
            discontinuities: 1,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn clock_jumps_forward_an_hour() {
    run(
        Misbehave::JumpForward {
            at_ms: 12_000,
            by_ms: 3_600_000,
        },
        Expect {
            discontinuities: 1,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn the_32_bit_millisecond_wrap() {
    run(
        Misbehave::Wrap { before_ms: 10_000 },
        Expect {
            discontinuities: 0,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn video_pauses_while_audio_goes_on() {
    run(
        Misbehave::VideoPause {
            at_ms: 10_000,
            for_ms: 4_000,
        },
        Expect {
            discontinuities: 0,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn audio_pauses_while_video_goes_on() {
    run(
        Misbehave::AudioPause {
            at_ms: 10_000,
            for_ms: 4_000,
        },
        Expect {
            discontinuities: 0,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn both_pause_within_the_grace_period() {
    run(
        Misbehave::BothPause {
            at_ms: 10_000,
            for_ms: 2_000,
        },
        Expect {
            discontinuities: 1,
            gap: Duration::from_secs(2),
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn a_burst_after_a_network_stall() {
    run(
        Misbehave::Burst {
            at_ms: 10_000,
            for_ms: 2_000,
        },
        Expect {
            discontinuities: 0,
            gap: Duration::from_secs(2),
            pdt_exempt_ms: Some((10_000, 12_000)),
        },
    );
}

#[test]
fn srt_clock_jumps_backward() {
    let dir = tempfile::tempdir().unwrap();
    // Two encoder runs back to back on one connection: the second one's clock starts anew.
    let a = (ts_file(dir.path(), "a.ts", 12, 0), 12);
    let b = (ts_file(dir.path(), "b.ts", 12, 0), 12);
    check(
        Publish::Srt(vec![a, b]),
        Expect {
            discontinuities: 1,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn srt_clock_jumps_forward_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let a = (ts_file(dir.path(), "a.ts", 12, 0), 12);
    let b = (ts_file(dir.path(), "b.ts", 12, 3612), 12);
    check(
        Publish::Srt(vec![a, b]),
        Expect {
            discontinuities: 1,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}

#[test]
fn srt_33_bit_wrap() {
    let dir = tempfile::tempdir().unwrap();
    // The 90 kHz clock wraps (2^33 ticks ≈ 95443.7 s) 10 s into the stream.
    let a = (ts_file(dir.path(), "a.ts", SECONDS, 95_434), SECONDS);
    check(
        Publish::Srt(vec![a]),
        Expect {
            discontinuities: 0,
            gap: Duration::ZERO,
            pdt_exempt_ms: None,
        },
    );
}
