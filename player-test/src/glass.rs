//! The clock-stamped source for glass-to-glass measurement ([`crate::clock`]): [`publish`]
//! generates a test pattern in real time, stamps every frame with its capture wall-clock time,
//! and hands the raw frames to the ffmpeg CLI, which encodes them (x264, zero-latency tuning)
//! and publishes over RTMP or SRT, exactly as an encoder would. The player
//! ([`crate::player`]) reads the stamps back from decoded frames.

use crate::clock;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What [`publish`] sends.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishOptions {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub seconds: f64,
    /// Stamp frames as if captured this much earlier (a source delayed by a known amount).
    pub delay_ms: u64,
    /// Apply `delay_ms` only to alternate runs of this many frames (frames `k·n .. (k+1)·n`
    /// with `k` odd), so one viewing session sees both the true and the delayed latency.
    pub delay_every: Option<u64>,
    /// Encode as OBS does by default (x264 veryfast, 2 B-frames, no zero-latency tuning:
    /// frame reordering and lookahead delay) instead of x264's zero-latency tuning.
    pub obs_like: bool,
}

impl PublishOptions {
    pub fn new(width: usize, height: usize, fps: u32, seconds: f64) -> PublishOptions {
        PublishOptions {
            width,
            height,
            fps,
            seconds,
            delay_ms: 0,
            delay_every: None,
            obs_like: false,
        }
    }

    /// The delay stamped on frame `i`.
    pub fn delay_of(&self, i: u64) -> u64 {
        match self.delay_every {
            Some(n) if n > 0 && (i / n).is_multiple_of(2) => 0,
            _ => self.delay_ms,
        }
    }
}

/// Publishes a clock-stamped test pattern to `url` (rtmp://… or srt://…), in real time.
pub fn publish(url: &str, o: &PublishOptions) -> std::io::Result<()> {
    let (width, height, fps, seconds) = (o.width, o.height, o.fps, o.seconds);
    let format = if url.starts_with("srt://") {
        "mpegts"
    } else {
        "flv"
    };
    let gop = (fps * 2).to_string();
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-s",
            &format!("{width}x{height}"),
            "-r",
            &fps.to_string(),
            "-i",
            "-",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-shortest",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
        ])
        .args(if o.obs_like {
            ["-bf", "2"]
        } else {
            ["-tune", "zerolatency"]
        })
        .args([
            "-g",
            &gop,
            "-keyint_min",
            &gop,
            "-sc_threshold",
            "0",
            "-b:v",
            "2M",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "96k", "-f", format, url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let (w, h) = (width, height);
    let mut frame = vec![128u8; w * h * 3 / 2];
    let frames = (seconds * f64::from(fps)) as u64;
    let start = Instant::now();
    for i in 0..frames {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(fps));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A moving gradient under the code, so the encoder has real work to do.
        for (k, p) in frame[..w * h].iter_mut().enumerate() {
            let (x, y) = (k % w, k / w);
            *p = ((x + y + i as usize * 4) % 200 + 28) as u8;
        }
        clock::draw(
            &mut frame[..w * h],
            w,
            h,
            w,
            now_ms().saturating_sub(o.delay_of(i)),
        );
        if stdin.write_all(&frame).is_err() {
            break;
        }
    }
    drop(stdin);
    child.wait()?;
    Ok(())
}
