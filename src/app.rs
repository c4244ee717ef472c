//! Starting and stopping the origin and the edge: binds the listeners, registers every
//! crate's metrics in one registry, and subscribes each new stream's consumers (the source
//! rendition's packager, copy renditions) to its fan-out.

use crate::config;
use crate::metrics::{register, Metrics};
use anyhow::Context;
use origin::RenditionInput;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running origin (`ferrocast serve`).
pub struct Origin {
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub srt: SocketAddr,
    pub hub: Arc<ingest::Hub>,
    pub streams: Arc<origin::Streams>,
    shutdown: CancellationToken,
    rtmp_task: JoinHandle<()>,
    http_task: JoinHandle<std::io::Result<()>>,
    srt_handle: ingest::srt::SrtHandle,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("rtmp", &self.rtmp)
            .field("http", &self.http)
            .field("srt", &self.srt)
            .finish_non_exhaustive()
    }
}

/// The transcoded ladder as the origin runs it.
struct LadderPlan {
    ladder: transcode::ladder::Ladder,
    priorities: std::collections::HashMap<String, config::Priority>,
    threads_per_rung: Option<usize>,
}

impl LadderPlan {
    /// The rungs a new stream starts with: its tier at 0 viewers (a partner's: the full
    /// ladder).
    fn rungs(&self, name: &str) -> Vec<transcode::Rung> {
        let priority = self.priorities.get(name).copied().unwrap_or_default();
        let tier = self.ladder.tier_for(0, priority.into());
        self.ladder
            .rungs_of(tier, u32::MAX)
            .into_iter()
            .cloned()
            .collect()
    }
}

/// Subscribes a new stream's renditions and starts packaging them.
fn wire_stream(
    streams: &Arc<origin::Streams>,
    copies: &[String],
    plan: Option<&LadderPlan>,
    new: ingest::NewStream,
) {
    let mut inputs = vec![RenditionInput {
        id: "source".into(),
        events: new.source.subscribe("packager:source"),
    }];
    for id in copies {
        let feed = transcode::copy(&new.source, new.name.as_str(), id);
        inputs.push(RenditionInput {
            events: feed.stream.subscribe(&format!("packager:{id}")),
            id: feed.id,
        });
    }
    if let Some(plan) = plan {
        let rungs = plan.rungs(new.name.as_str());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = plan
            .threads_per_rung
            .unwrap_or_else(|| (cores / rungs.len().max(1)).max(1));
        match transcode::encode::spawn(&new.source, new.name.as_str(), &rungs, threads) {
            Ok(feeds) => {
                for feed in feeds {
                    inputs.push(RenditionInput {
                        events: feed.stream.subscribe(&format!("packager:{}", feed.id)),
                        id: feed.id,
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the transcoder threads: source only")
            }
        }
    }
    streams.start(new.name, new.session, inputs);
}

/// Starts the origin with a validated config. Call from within the tokio runtime.
pub async fn start_origin(cfg: config::Config) -> anyhow::Result<Origin> {
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
    let origin_metrics = Arc::new(origin::metrics::Metrics::default());
    let streams = origin::Streams::new(cfg.origin_config(), Arc::clone(&origin_metrics));
    let on_new = {
        let streams = Arc::clone(&streams);
        let copies = cfg.copy_renditions.clone();
        let plan = cfg.ladder()?.map(|ladder| LadderPlan {
            ladder,
            priorities: cfg.priorities(),
            threads_per_rung: cfg.transcode.as_ref().and_then(|t| t.threads_per_rung),
        });
        move |new| wire_stream(&streams, &copies, plan.as_ref(), new)
    };
    let hub = ingest::Hub::new(keys, cfg.grace_period(), on_new);
    let metrics = Metrics::new();
    register("origin", origin_metrics.register(metrics.registry()))?;
    register("ingest", hub.metrics.register(metrics.registry()))?;

    let rtmp = TcpListener::bind(&cfg.rtmp)
        .await
        .with_context(|| format!("binding RTMP on {}", cfg.rtmp))?;
    let http = TcpListener::bind(&cfg.http)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http))?;
    let shutdown = CancellationToken::new();
    let srt_bind: SocketAddr = tokio::net::lookup_host(&cfg.srt)
        .await?
        .next()
        .with_context(|| format!("resolving SRT address {}", cfg.srt))?;
    let srt = ingest::srt::start(
        srt_bind,
        Arc::clone(&hub),
        cfg.srt_config(),
        shutdown.clone(),
    )
    .with_context(|| format!("binding SRT on {}", cfg.srt))?;
    let (rtmp_addr, http_addr, srt_addr) = (rtmp.local_addr()?, http.local_addr()?, srt.local_addr);
    tracing::info!(%rtmp_addr, %http_addr, %srt_addr, "ferrocast origin listening");

    let rtmp_task = tokio::spawn(ingest::rtmp::run(
        rtmp,
        Arc::clone(&hub),
        cfg.rtmp_config(),
        shutdown.clone(),
    ));
    let state = origin::http::AppState {
        streams: Arc::clone(&streams),
        edges: Arc::new(cfg.edges()),
    };
    let router = origin::http::router(state).merge(Arc::new(metrics).router());
    let http_task = tokio::spawn(origin::http::run(http, router, shutdown.clone()));
    Ok(Origin {
        rtmp: rtmp_addr,
        http: http_addr,
        srt: srt_addr,
        hub,
        streams,
        shutdown,
        rtmp_task,
        http_task,
        srt_handle: srt,
    })
}

impl Origin {
    /// Stops accepting, closes connections and waits (bounded) for the listeners to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.rtmp_task.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http_task).await;
        let srt = self.srt_handle;
        tokio::task::spawn_blocking(move || srt.join(Duration::from_secs(3)))
            .await
            .ok();
    }
}

/// Runs an edge with a validated config until `stop` fires.
pub async fn run_edge(cfg: config::EdgeFileConfig, stop: CancellationToken) -> anyhow::Result<()> {
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
    let mut metrics = Metrics::new();
    register("edge", edge.register_metrics(metrics.registry()))?;
    {
        let edge = edge.clone();
        metrics.on_scrape(move || edge.refresh_metrics());
    }
    let router = edge.router().merge(Arc::new(metrics).router());
    edge::announce(&edge, addr, tls.is_some());
    println!(
        "ferrocast edge listening http={addr} id={}",
        edge.config().id
    );
    let shutdown = CancellationToken::new();
    let background = tokio::spawn(edge.clone().background(shutdown.clone()));
    let server = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => edge::serve_tls(listener, router, tls, shutdown).await,
                None => edge::serve(listener, router, shutdown).await,
            }
        })
    };
    stop.cancelled().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = background.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
