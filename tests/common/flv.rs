//! A raw RTMP publisher that replays an ffmpeg-made FLV file in real time on one connection,
//! with the timestamps a script says (clock jumps, wraps, gaps, bursts): the timeline tests'
//! misbehaving encoder. The tags' payloads are the real encoder's; only time is rewritten.

use super::rtmp::Client;
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// One FLV tag: 8 audio, 9 video.
#[derive(Debug, Clone)]
pub struct Tag {
    pub kind: u8,
    pub ts: u32,
    pub data: Bytes,
}

impl Tag {
    /// An AVC or AAC sequence header (decoder configuration).
    pub fn is_header(&self) -> bool {
        self.data.len() > 1 && self.data[1] == 0
    }

    pub fn is_video(&self) -> bool {
        self.kind == 9
    }
}

/// Encodes `seconds` of a 320x180@30 test pattern (H.264, 2 B-frames, 1 s GOP) + AAC 48 kHz
/// with the real ffmpeg CLI into `path`; `muxer` are the output options (format and more).
pub fn encode_test_pattern(path: &Path, seconds: u32, muxer: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-bf", "2"])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-b:v", "300k", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
        .args(muxer)
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg could not make {}", path.display());
}

/// The test pattern as FLV.
pub fn make_flv(dir: &Path, seconds: u32) -> PathBuf {
    let path = dir.join("source.flv");
    encode_test_pattern(&path, seconds, &["-f", "flv"]);
    path
}

/// The audio and video tags of an FLV file, in file order.
pub fn read_tags(path: &Path) -> Vec<Tag> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..3], b"FLV");
    let mut pos = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= b.len() {
        let kind = b[pos] & 0x1f;
        let size = u32::from_be_bytes([0, b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([b[pos + 7], b[pos + 4], b[pos + 5], b[pos + 6]]);
        let start = pos + 11;
        if start + size > b.len() {
            break;
        }
        if kind == 8 || kind == 9 {
            tags.push(Tag {
                kind,
                ts,
                data: Bytes::copy_from_slice(&b[start..start + size]),
            });
        }
        pos = start + size + 4;
    }
    tags
}

/// What happens to the timeline, from `at_ms` of source time on.
#[derive(Debug, Clone, Copy)]
pub enum Misbehave {
    /// Nothing: a well-behaved encoder.
    None,
    /// Timestamps restart at `to_ms` (sequence headers re-sent), as a restarting encoder does.
    JumpBack { at_ms: u32, to_ms: u32 },
    /// Timestamps jump forward by `by_ms` (sequence headers re-sent).
    JumpForward { at_ms: u32, by_ms: u32 },
    /// Timestamps start `before_ms` before the 32-bit millisecond wrap.
    Wrap { before_ms: u32 },
    /// No video for `for_ms` (audio goes on); video resumes at a keyframe.
    VideoPause { at_ms: u32, for_ms: u32 },
    /// No audio for `for_ms` (video goes on).
    AudioPause { at_ms: u32, for_ms: u32 },
    /// Nothing at all for `for_ms` (the connection stays up).
    BothPause { at_ms: u32, for_ms: u32 },
    /// The network stalls for `for_ms`, then everything held back arrives at once.
    Burst { at_ms: u32, for_ms: u32 },
    /// The encoder's clock runs `percent` % slow (sent in real time, stamped slower).
    SlowClock { percent: u32 },
}

/// What the replay did: when the publish began and how each source time was sent.
#[derive(Debug, Default)]
pub struct Replayed {
    pub started: Option<SystemTime>,
    pub tags_sent: usize,
}

/// Publishes `tags` to `rtmp://addr/live/key` in real time (paced by the source timestamps),
/// misbehaving as `how` says.
pub async fn replay(addr: SocketAddr, key: &str, tags: &[Tag], how: Misbehave) -> Replayed {
    let mut c = Client::connect(addr).await;
    assert!(c.publish(key).await, "publish refused");
    let headers: Vec<Tag> = tags.iter().filter(|t| t.is_header()).cloned().collect();
    let start = Instant::now();
    let mut out = Replayed {
        started: Some(SystemTime::now()),
        tags_sent: 0,
    };
    let mut resent = false;
    let mut video_waits_key = false;
    for t in tags {
        // Pacing: real time by the source clock (a burst holds tags back, then sends them).
        let mut send_at = Duration::from_millis(u64::from(t.ts));
        if let Misbehave::Burst { at_ms, for_ms } = how {
            if (at_ms..at_ms + for_ms).contains(&t.ts) {
                send_at = Duration::from_millis(u64::from(at_ms + for_ms));
            }
        }
        tokio::time::sleep_until((start + send_at).into()).await;
        let (ts, send) = match how {
            Misbehave::None | Misbehave::Burst { .. } => (t.ts, true),
            Misbehave::SlowClock { percent } => (
                (u64::from(t.ts) * u64::from(100 - percent) / 100) as u32,
                true,
            ),
            Misbehave::JumpBack { at_ms, to_ms } if t.ts >= at_ms => (t.ts - at_ms + to_ms, true),
            Misbehave::JumpForward { at_ms, by_ms } if t.ts >= at_ms => (t.ts + by_ms, true),
            Misbehave::JumpBack { .. } | Misbehave::JumpForward { .. } => (t.ts, true),
            Misbehave::Wrap { before_ms } => (t.ts.wrapping_add(before_ms.wrapping_neg()), true),
            Misbehave::VideoPause { at_ms, for_ms } => {
                let paused = t.is_video() && (at_ms..at_ms + for_ms).contains(&t.ts);
                if paused {
                    video_waits_key = true;
                }
                (t.ts, !paused)
            }
            Misbehave::AudioPause { at_ms, for_ms } => {
                let paused = !t.is_video() && (at_ms..at_ms + for_ms).contains(&t.ts);
                (t.ts, !paused)
            }
            Misbehave::BothPause { at_ms, for_ms } => {
                (t.ts, !(at_ms..at_ms + for_ms).contains(&t.ts))
            }
        };
        let mut send = send && !t.is_header() || t.is_header() && t.ts == 0;
        if video_waits_key && t.is_video() && send {
            // The encoder resumes at a keyframe (frame type 1 in the FLV video tag).
            if t.data[0] >> 4 == 1 {
                video_waits_key = false;
            } else {
                send = false;
            }
        }
        let jumped = match how {
            Misbehave::JumpBack { at_ms, .. } | Misbehave::JumpForward { at_ms, .. } => {
                t.ts >= at_ms
            }
            _ => false,
        };
        if jumped && !resent {
            // A restarting encoder sends its sequence headers again, at the new clock.
            for h in &headers {
                c.media(h.kind, h.data.clone(), ts).await.unwrap();
            }
            resent = true;
        }
        if send {
            let data = match how {
                Misbehave::SlowClock { percent } => slow_cts(&t.data, percent),
                _ => t.data.clone(),
            };
            c.media(t.kind, data, ts).await.unwrap();
            out.tags_sent += 1;
        }
    }
    out
}

/// A slow clock stretches composition offsets too: rewrites the AVC NALU tag's SI24 CTS.
fn slow_cts(data: &Bytes, percent: u32) -> Bytes {
    if data.len() < 5 || data[0] & 0x0f != 7 || data[1] != 1 {
        return data.clone();
    }
    let raw = u32::from_be_bytes([0, data[2], data[3], data[4]]);
    let cts = ((raw << 8) as i32) >> 8; // sign-extend 24 bits
    let scaled = (i64::from(cts) * i64::from(100 - percent) / 100) as i32;
    let mut v = data.to_vec();
    v[2..5].copy_from_slice(&(scaled as u32).to_be_bytes()[1..]);
    Bytes::from(v)
}
