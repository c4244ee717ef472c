//! Glass-to-glass measurement with the visual clock code ([`crate::clock`]).
//!
//! - [`publish`] generates a test pattern in real time, stamps every frame with its capture
//!   wall-clock time, and hands the raw frames to the ffmpeg CLI, which encodes them (x264,
//!   zero-latency tuning) and publishes over RTMP or SRT — exactly like an encoder would.
//! - [`watch`] follows an LL-HLS media playlist at the live edge (blocking reloads, parts),
//!   pipes the init segment and each part into the ffmpeg CLI as a decoder, reads the clock
//!   code back from every decoded frame and reports capture → display latency.

use crate::clock;
use crate::playlist::MediaPlaylist;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Publishes `seconds` of a clock-stamped test pattern to `url` (rtmp://… or srt://…).
/// `delay_ms` stamps each frame as if it had been captured that much earlier (to test the
/// measurement against a known delay).
pub fn publish(
    url: &str,
    width: usize,
    height: usize,
    fps: u32,
    seconds: f64,
    delay_ms: u64,
) -> std::io::Result<()> {
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
            "-tune",
            "zerolatency",
            "-profile:v",
            "high",
        ])
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
            now_ms().saturating_sub(delay_ms),
        );
        if stdin.write_all(&frame).is_err() {
            break;
        }
    }
    drop(stdin);
    child.wait()?;
    Ok(())
}

/// What [`watch`] measured.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    /// Time to first decoded frame.
    pub ttff: Option<Duration>,
    /// Capture → decoded latency of every frame whose code was read (ms).
    pub latencies_ms: Vec<i64>,
    pub frames: u64,
    pub unreadable_frames: u64,
    pub parts: u64,
    pub errors: Vec<String>,
}

impl WatchReport {
    pub fn percentile(&self, p: f64) -> Option<i64> {
        let mut v = self.latencies_ms.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v.get(i).copied()
    }
}

/// Watches `playlist_url` (a media playlist) for `duration` and measures glass-to-glass latency.
pub async fn watch(playlist_url: &str, duration: Duration) -> WatchReport {
    let (w, h) = (320usize, 180usize);
    let started = Instant::now();
    let mut report = WatchReport::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_default();
    let base = playlist_url
        .split('?')
        .next()
        .and_then(|p| p.rsplit_once('/'))
        .map_or(String::new(), |(b, _)| b.to_owned());
    let mut decoder = match Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-fflags",
            "nobuffer",
            "-f",
            "mp4",
            "-i",
            "pipe:0",
        ])
        .args([
            "-vf",
            &format!("scale={w}:{h}"),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!("ffmpeg: {e}"));
            return report;
        }
    };
    let (Some(mut to_decoder), Some(mut from_decoder)) =
        (decoder.stdin.take(), decoder.stdout.take())
    else {
        report.errors.push("ffmpeg pipes".into());
        return report;
    };
    // Frames come out of the decoder on a thread of their own; latency is taken on arrival.
    let reader = std::thread::spawn(move || {
        let mut frame = vec![0u8; w * h];
        let mut out = (Vec::new(), 0u64, 0u64, None::<Instant>);
        while from_decoder.read_exact(&mut frame).is_ok() {
            out.3.get_or_insert_with(Instant::now);
            out.1 += 1;
            match clock::read(&frame, w, h, w) {
                Some(code) => out.0.push(now_ms() as i64 - code as i64),
                None => out.2 += 1,
            }
        }
        out
    });
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let writer = std::thread::spawn(move || {
        for chunk in rx {
            if to_decoder.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let get = |url: String| {
        let c = client.clone();
        async move {
            let r = c.get(&url).send().await.map_err(|e| e.to_string())?;
            let s = r.status().as_u16();
            let b = r.bytes().await.map_err(|e| e.to_string())?;
            if s == 200 {
                Ok(b)
            } else {
                Err(format!("{url} → {s}"))
            }
        }
    };
    let mut pl = match get(playlist_url.to_owned())
        .await
        .map(|b| MediaPlaylist::parse(&String::from_utf8_lossy(&b)))
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            report.errors.push(e.to_string());
            return report;
        }
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    let init = pl
        .segments
        .iter()
        .find_map(|s| s.map.clone())
        .unwrap_or_else(|| "init.mp4".into());
    match get(format!("{base}/{init}")).await {
        Ok(b) => {
            let _ = tx.send(b.to_vec());
        }
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    }
    // Start at the last independent part near the live edge.
    let mut next = pl
        .segments
        .iter()
        .flat_map(|s| {
            s.parts
                .iter()
                .enumerate()
                .map(move |(i, p)| (s.msn, i, p.independent))
        })
        .rfind(|(_, _, ind)| *ind)
        .map(|(m, i, _)| (m, i));
    let sep = if playlist_url.contains('?') { '&' } else { '?' };
    while started.elapsed() < duration {
        let Some((msn, part)) = next else { break };
        // Fetch the part if listed (at a segment boundary, part 0 of the next segment).
        let listed = pl
            .segments
            .iter()
            .find(|s| s.msn == msn)
            .and_then(|s| s.parts.get(part).map(|p| (msn, part, p.uri.clone())))
            .or_else(|| {
                pl.segments
                    .iter()
                    .find(|s| s.msn == msn + 1)
                    .and_then(|s| s.parts.first().map(|p| (msn + 1, 0, p.uri.clone())))
            });
        if let Some((m, p, uri)) = listed {
            match get(format!("{base}/{uri}")).await {
                Ok(b) => {
                    report.parts += 1;
                    let _ = tx.send(b.to_vec());
                }
                Err(e) => report.errors.push(e),
            }
            next = Some((m, p + 1));
            continue;
        }
        // Not listed yet: a blocking reload for it.
        let url = format!("{playlist_url}{sep}_HLS_msn={msn}&_HLS_part={part}");
        match get(url)
            .await
            .map(|b| MediaPlaylist::parse(&String::from_utf8_lossy(&b)))
        {
            Ok(Ok(p)) => {
                if p.endlist && !p.segments.iter().any(|s| s.msn >= msn) {
                    break;
                }
                pl = p;
            }
            Ok(Err(e)) => report.errors.push(e.to_string()),
            Err(e) => {
                report.errors.push(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = decoder.wait();
    if let Ok((lat, frames, unreadable, first)) = reader.join() {
        report.latencies_ms = lat;
        report.frames = frames;
        report.unreadable_frames = unreadable;
        report.ttff = first.map(|f| f.duration_since(started));
    }
    report
}
