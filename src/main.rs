//! The `ferrocast` binary: `ferrocast serve` runs the origin (RTMP/SRT ingest + LL-HLS over
//! HTTP); `ferrocast edge` runs a caching edge in front of it.

use clap::{Parser, Subcommand};
use ferrocast::{app, config};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "ferrocast",
    version,
    about = "Low-latency live streaming: RTMP in, LL-HLS out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the origin: RTMP and SRT ingest, LL-HLS over HTTP.
    Serve {
        /// TOML config file (see deploy/origin.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// RTMP listen address [default: 0.0.0.0:1935].
        #[arg(long)]
        rtmp: Option<String>,
        /// RTMPS listen address [default: 0.0.0.0:1936]; RTMPS is on when the config sets
        /// `rtmps_cert` and `rtmps_key`.
        #[arg(long)]
        rtmps: Option<String>,
        /// HTTP listen address [default: 0.0.0.0:8080].
        #[arg(long)]
        http: Option<String>,
        /// SRT listen address (UDP) [default: 0.0.0.0:9000].
        #[arg(long)]
        srt: Option<String>,
        /// Encoder for the ladder: auto (NVENC where it opens, else libx264), cpu, nvenc
        /// [default: auto, or `[transcode] transcoder`]. Turns on the standard ladder when
        /// the config has no `[transcode]`.
        #[arg(long, value_parser = ["auto", "cpu", "nvenc"])]
        transcoder: Option<String>,
    },
    /// Run an edge: a caching LL-HLS proxy in front of the origin.
    Edge {
        /// Origin base URL, e.g. http://origin:8080.
        #[arg(long)]
        origin: Option<String>,
        /// HTTP listen address [default: 0.0.0.0:8081].
        #[arg(long)]
        http: Option<String>,
        /// TOML config file (see deploy/edge.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve {
            config,
            rtmp,
            rtmps,
            http,
            srt,
            transcoder,
        } => {
            let mut cfg = match &config {
                Some(path) => config::Config::load(path)?,
                None => config::Config::default(),
            };
            if let Some(a) = rtmp {
                cfg.rtmp = a;
            }
            if let Some(a) = rtmps {
                cfg.rtmps = a;
            }
            if let Some(a) = http {
                cfg.http = a;
            }
            if let Some(a) = srt {
                cfg.srt = a;
            }
            // Secrets from the environment (Kubernetes secretKeyRef, Docker secrets) win
            // over the file.
            if let Some(t) = secret_env("FERROCAST_EDGE_TOKEN") {
                cfg.edge_token = Some(t);
            }
            if let Some(t) = secret_env("FERROCAST_ADMIN_TOKEN") {
                cfg.admin_token = Some(t);
            }
            if let Some(t) = transcoder {
                // Asking for an encoder asks for transcoding: without `[transcode]`, the
                // standard ladder.
                cfg.transcode
                    .get_or_insert_with(Default::default)
                    .transcoder = Some(t);
            }
            cfg.validate()?;
            runtime.block_on(serve(cfg))
        }
        Command::Edge {
            origin,
            http,
            config,
        } => {
            let mut cfg = match &config {
                Some(path) => config::EdgeFileConfig::load(path)?,
                None => config::EdgeFileConfig::default(),
            };
            if let Some(t) = secret_env("FERROCAST_EDGE_TOKEN") {
                cfg.token = Some(t);
            }
            if let Some(id) = secret_env("FERROCAST_EDGE_ID") {
                cfg.id = Some(id);
            }
            if let Some(o) = origin {
                cfg.origin = Some(o);
            }
            if let Some(a) = http {
                cfg.http = a;
            }
            cfg.validate()?;
            runtime.block_on(run_edge(cfg))
        }
    }
}

/// A non-empty environment variable, trimmed (a mounted secret often ends in a newline).
fn secret_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

async fn run_edge(cfg: config::EdgeFileConfig) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    app::run_edge(cfg, stop).await
}

async fn serve(cfg: config::Config) -> anyhow::Result<()> {
    let origin = app::start_origin(cfg).await?;
    // One machine-readable line on stdout, for scripts and tests that bind port 0.
    let rtmps = origin
        .rtmps
        .map(|a| format!(" rtmps={a}"))
        .unwrap_or_default();
    println!(
        "ferrocast listening rtmp={} http={} srt={}{rtmps}",
        origin.rtmp, origin.http, origin.srt
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    origin.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
