//! The `ferrocast` binary: `ferrocast serve` runs the origin (RTMP/SRT ingest + LL-HLS over
//! HTTP); `ferrocast edge` runs a caching edge in front of it.

mod config;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
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
        /// HTTP listen address [default: 0.0.0.0:8080].
        #[arg(long)]
        http: Option<String>,
        /// SRT listen address (UDP) [default: 0.0.0.0:9000].
        #[arg(long)]
        srt: Option<String>,
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
            http,
            srt,
        } => {
            let mut cfg = match &config {
                Some(path) => config::Config::load(path)?,
                None => config::Config::default(),
            };
            if let Some(a) = rtmp {
                cfg.rtmp = a;
            }
            if let Some(a) = http {
                cfg.http = a;
            }
            if let Some(a) = srt {
                cfg.srt = a;
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

async fn run_edge(cfg: config::EdgeFileConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&cfg.http)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http))?;
    let addr = listener.local_addr()?;
    let edge = edge::Edge::new(cfg.edge_config(addr));
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => {
            let cert = std::fs::read(c).with_context(|| format!("reading {c}"))?;
            let key = std::fs::read(k).with_context(|| format!("reading {k}"))?;
            Some(edge::tls_config(&cert, &key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    edge::announce(&edge, addr, tls.is_some());
    println!(
        "ferrocast edge listening http={addr} id={}",
        edge.config().id
    );
    let shutdown = CancellationToken::new();
    let background = tokio::spawn(edge.clone().background(shutdown.clone()));
    let server = {
        let shutdown = shutdown.clone();
        let edge = edge.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => edge::serve_tls(listener, edge, tls, shutdown).await,
                None => edge::serve(listener, edge, shutdown).await,
            }
        })
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = background.await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    Ok(())
}

async fn serve(cfg: config::Config) -> anyhow::Result<()> {
    let keys = cfg.stream_keys()?;
    if cfg.streams.is_empty() {
        tracing::warn!(
            stream = config::DEV_STREAM,
            key = config::DEV_KEY,
            "no [[streams]] configured: accepting the DEVELOPMENT key; anyone who knows it can publish. Configure stream keys for any real use."
        );
    }
    if cfg.edge_token.is_none() {
        tracing::warn!("no edge_token configured: any host can report viewers as an edge");
    }
    let metrics = Arc::new(origin::metrics::Metrics::default());
    let streams = origin::Streams::new(cfg.origin_config(), Arc::clone(&metrics));
    let on_new = {
        let streams = Arc::clone(&streams);
        move |new| streams.start(new)
    };
    let hub = ingest::Hub::new(keys, cfg.grace_period(), on_new);

    let rtmp = TcpListener::bind(&cfg.rtmp)
        .await
        .with_context(|| format!("binding RTMP on {}", cfg.rtmp))?;
    let http = TcpListener::bind(&cfg.http)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http))?;
    let shutdown = CancellationToken::new();
    let srt_bind: std::net::SocketAddr = tokio::net::lookup_host(&cfg.srt)
        .await?
        .next()
        .with_context(|| format!("resolving SRT address {}", cfg.srt))?;
    let srt = ingest::srt::start(
        srt_bind,
        Arc::clone(&hub),
        metrics.clone() as Arc<dyn ingest::rtmp::IngestObserver>,
        cfg.srt_config(),
        shutdown.clone(),
    )
    .with_context(|| format!("binding SRT on {}", cfg.srt))?;
    let srt_addr = srt.local_addr;
    let (rtmp_addr, http_addr) = (rtmp.local_addr()?, http.local_addr()?);
    tracing::info!(%rtmp_addr, %http_addr, %srt_addr, "ferrocast origin listening");
    // One machine-readable line on stdout, for scripts and tests that bind port 0.
    println!("ferrocast listening rtmp={rtmp_addr} http={http_addr} srt={srt_addr}");

    let rtmp_task = tokio::spawn(ingest::rtmp::run(
        rtmp,
        Arc::clone(&hub),
        metrics.clone() as Arc<dyn ingest::rtmp::IngestObserver>,
        cfg.rtmp_config(),
        shutdown.clone(),
    ));
    let state = origin::http::AppState {
        streams: Arc::clone(&streams),
        hub: Arc::clone(&hub),
        edges: Arc::new(cfg.edges()),
    };
    let http_task = tokio::spawn(origin::http::run(http, state, shutdown.clone()));

    shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = rtmp_task.await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http_task).await;
    tokio::task::spawn_blocking(move || srt.join(std::time::Duration::from_secs(3)))
        .await
        .ok();
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
