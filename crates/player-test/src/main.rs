//! `ferrocast-player`: publish a clock-stamped test source, watch LL-HLS with glass-to-glass
//! latency, and load streams with many viewers.

use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ferrocast-player",
    version,
    about = "LL-HLS player and load tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a test pattern whose frames carry their capture time (visual clock code).
    Publish {
        /// rtmp://HOST/live/KEY or srt://HOST:PORT?streamid=live/KEY
        url: String,
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Frame size WxH.
        #[arg(long, default_value = "1280x720")]
        size: String,
        #[arg(long, default_value_t = 30)]
        fps: u32,
    },
    /// Watch a media playlist at the live edge and measure glass-to-glass latency.
    Watch {
        url: String,
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        #[arg(long)]
        json: bool,
    },
    /// Run K light LL-HLS viewers (own connection and session each) against a media playlist.
    Load {
        /// Media playlist URL (…/live/NAME/RENDITION/index.m3u8).
        url: String,
        #[arg(long, default_value_t = 10)]
        viewers: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Allow targets outside loopback (load only what you operate).
        #[arg(long)]
        allow_remote: bool,
    },
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let ticks: f64 =
                rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Publish {
            url,
            duration,
            size,
            fps,
        } => {
            let (w, h) = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
                .filter(|(w, h)| {
                    (64..=3840).contains(w) && (64..=2160).contains(h) && w % 2 == 0 && h % 2 == 0
                })
                .ok_or_else(|| anyhow::anyhow!("--size must be WxH, even, 64x64 to 3840x2160"))?;
            anyhow::ensure!((1..=120).contains(&fps), "--fps must be 1..=120");
            player_test::glass::publish(&url, w, h, fps, duration, 0)?;
        }
        Command::Watch {
            url,
            duration,
            json,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let r = rt.block_on(player_test::glass::watch(
                &url,
                Duration::from_secs_f64(duration),
            ));
            let ms = |p: f64| r.percentile(p);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ttff_ms": r.ttff.map(|d| d.as_millis() as u64),
                        "frames": r.frames,
                        "unreadable_frames": r.unreadable_frames,
                        "parts": r.parts,
                        "latency_ms": {"p50": ms(0.5), "p95": ms(0.95), "max": ms(1.0)},
                        "errors": r.errors.len(),
                        "first_errors": r.errors.iter().take(5).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!(
                    "{} frames ({} without a readable code), {} parts, TTFF {:?}; glass-to-glass p50 {:?} ms, p95 {:?} ms, max {:?} ms; {} errors",
                    r.frames, r.unreadable_frames, r.parts, r.ttff, ms(0.5), ms(0.95), ms(1.0), r.errors.len()
                );
            }
        }
        Command::Load {
            url,
            viewers,
            duration,
            json,
            allow_remote,
        } => {
            let host = url
                .split("//")
                .nth(1)
                .and_then(|r| r.split(['/', ':']).next())
                .unwrap_or("");
            let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
            anyhow::ensure!(
                loopback || allow_remote,
                "refusing to load a non-loopback host without --allow-remote"
            );
            anyhow::ensure!(
                (1..=20_000).contains(&viewers),
                "--viewers must be 1..=20000"
            );
            anyhow::ensure!(
                duration > 0.0 && duration <= 3600.0,
                "--duration must be in (0, 3600]"
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let cpu0 = cpu_seconds();
            let report = rt.block_on(player_test::load(
                &url,
                viewers,
                Duration::from_secs_f64(duration),
            ));
            let cpu = (cpu_seconds() - cpu0) / report.seconds.max(1e-9);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "viewers": report.viewers,
                        "seconds": report.seconds,
                        "playlist_requests": report.playlist_requests,
                        "part_requests": report.part_requests,
                        "requests_per_second": report.requests_per_second(),
                        "bytes": report.bytes,
                        "errors": report.errors.len(),
                        "first_errors": report.errors.iter().take(5).collect::<Vec<_>>(),
                        "cpu_cores": cpu,
                    })
                );
            } else {
                println!(
                    "{} viewers for {:.1}s: {} playlist + {} part requests ({:.0} req/s), {:.1} MB, {} errors, load tool CPU {:.2} cores",
                    report.viewers,
                    report.seconds,
                    report.playlist_requests,
                    report.part_requests,
                    report.requests_per_second(),
                    report.bytes as f64 / 1e6,
                    report.errors.len(),
                    cpu
                );
            }
        }
    }
    Ok(())
}
