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
        /// Encode as OBS does by default (x264 veryfast, 2 B-frames, no zero-latency tuning).
        #[arg(long)]
        obs_like: bool,
    },
    /// Play a stream (multivariant or media playlist) as an LL-HLS player would: ABR, buffer,
    /// stalls, and glass-to-glass latency from the visual clock code when the source has it.
    Watch {
        url: String,
        /// Seconds to watch.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Print the report as JSON (otherwise a summary, with a progress line while running).
        #[arg(long)]
        json: bool,
        /// Do not decode (no visual-code latency; no ffmpeg needed).
        #[arg(long)]
        no_decode: bool,
        /// Play this variant (index in the multivariant playlist) without switching.
        #[arg(long)]
        variant: Option<usize>,
        /// Do not fetch preload-hinted parts.
        #[arg(long)]
        no_preload_hints: bool,
        /// Do not ask for playlist delta updates.
        #[arg(long)]
        no_delta: bool,
        /// Minimum seconds between ordinary down-switches.
        #[arg(long, default_value_t = 30.0)]
        down_interval: f64,
        /// Seconds a higher variant must fit before switching up to it.
        #[arg(long, default_value_t = 4.0)]
        up_after: f64,
        /// Buffer (seconds) under which one emergency down-switch is allowed.
        #[arg(long, default_value_t = 0.35)]
        emergency_buffer: f64,
        /// Assumed throughput (bits/s) before the first sample: picks the first variant.
        #[arg(long, default_value_t = 5_000_000)]
        start_bandwidth: u64,
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Publish {
            url,
            duration,
            size,
            fps,
            obs_like,
        } => {
            let (w, h) = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
                .filter(|(w, h)| {
                    (64..=3840).contains(w) && (64..=2160).contains(h) && w % 2 == 0 && h % 2 == 0
                })
                .ok_or_else(|| anyhow::anyhow!("--size must be WxH, even, 64x64 to 3840x2160"))?;
            anyhow::ensure!((1..=120).contains(&fps), "--fps must be 1..=120");
            let mut options = player_test::glass::PublishOptions::new(w, h, fps, duration);
            options.obs_like = obs_like;
            player_test::glass::publish(&url, &options)?;
        }
        Command::Watch {
            url,
            duration,
            json,
            no_decode,
            variant,
            no_preload_hints,
            no_delta,
            down_interval,
            up_after,
            emergency_buffer,
            start_bandwidth,
        } => {
            anyhow::ensure!(
                duration > 0.0 && duration <= 86_400.0,
                "--duration must be in (0, 86400]"
            );
            anyhow::ensure!(
                (0.0..=3600.0).contains(&down_interval)
                    && (0.0..=3600.0).contains(&up_after)
                    && (0.0..=60.0).contains(&emergency_buffer),
                "--down-interval and --up-after must be in [0, 3600], --emergency-buffer in [0, 60]"
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let cfg = player_test::PlayerConfig {
                duration: Duration::from_secs_f64(duration),
                decode: !no_decode,
                preload_hints: !no_preload_hints,
                delta_updates: !no_delta,
                pin: variant,
                abr: player_test::abr::AbrConfig {
                    down_interval,
                    up_after,
                    emergency_buffer,
                    ..Default::default()
                },
                start_bandwidth,
                session_id: Some(format!("watch-{}", std::process::id())),
                progress: Some(Default::default()),
                ..Default::default()
            };
            // The progress line: rewritten in place on a terminal, a line every 10 s otherwise.
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let status = cfg.progress.clone();
            let progress = (!json).then(|| {
                let done = done.clone();
                std::thread::spawn(move || {
                    use std::io::IsTerminal;
                    let tty = std::io::stderr().is_terminal();
                    let mut ticks = 0u64;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(250));
                        ticks += 1;
                        let line = status
                            .as_ref()
                            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
                            .unwrap_or_default();
                        if tty {
                            eprint!("\r\x1b[K{line}");
                        } else if ticks.is_multiple_of(40) {
                            eprintln!("{line}");
                        }
                    }
                    if tty {
                        eprintln!();
                    }
                })
            });
            let r = rt.block_on(player_test::play(&url, cfg));
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(p) = progress {
                let _ = p.join();
            }
            if json {
                println!("{}", r.to_json());
            } else {
                println!("{}", r.summary());
                for s in &r.switches {
                    println!(
                        "  switch at {:.1}s: {} → {} ({}, estimate {:.0} kbit/s, buffer {:.2}s)",
                        s.at,
                        s.from,
                        s.to,
                        s.reason.as_str(),
                        s.estimate_bps / 1000.0,
                        s.buffer
                    );
                }
            }
            if r.fatal.is_some() {
                std::process::exit(1);
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
                        "part_fetch_ms": {"p50": report.part_latency_p50_ms, "p99": report.part_latency_p99_ms},
                        "underruns": report.underruns,
                        "underrun_s": report.underrun_secs,
                        "errors": report.errors.len(),
                        "first_errors": report.errors.iter().take(5).collect::<Vec<_>>(),
                        "cpu_cores": cpu,
                    })
                );
            } else {
                let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
                println!(
                    "{} viewers for {:.1}s: {} playlist + {} part requests ({:.0} req/s), part fetch p50 {} / p99 {} ms, {} underruns ({:.1}s), {:.1} MB, {} errors, load tool CPU {:.2} cores",
                    report.viewers,
                    report.seconds,
                    report.playlist_requests,
                    report.part_requests,
                    report.requests_per_second(),
                    ms(report.part_latency_p50_ms),
                    ms(report.part_latency_p99_ms),
                    report.underruns,
                    report.underrun_secs,
                    report.bytes as f64 / 1e6,
                    report.errors.len(),
                    cpu
                );
            }
        }
    }
    Ok(())
}
