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
use tracing::Instrument;

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
    threads_per_rung: usize,
    hysteresis: Duration,
    quiet_period: Duration,
}

/// How often a stream's ladder looks at its viewer count (tier up within ~2 polls).
const LADDER_POLL: Duration = Duration::from_secs(1);

impl LadderPlan {
    fn new(ladder: transcode::ladder::Ladder, cfg: &config::Config) -> LadderPlan {
        let t = cfg.transcode.clone().unwrap_or_default();
        // x264's own thread count oversubscribes a small machine when several rungs run: give
        // each rung an equal share of the cores for the largest tier.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let widest = ladder
            .tiers()
            .iter()
            .map(|t| t.rungs.len())
            .max()
            .unwrap_or(1);
        LadderPlan {
            threads_per_rung: t
                .threads_per_rung
                .unwrap_or_else(|| (cores / widest.max(1)).max(1)),
            hysteresis: t.hysteresis(),
            quiet_period: t.quiet_period(),
            priorities: cfg.priorities(),
            ladder,
        }
    }

    fn priority(&self, name: &str) -> transcode::ladder::Priority {
        self.priorities
            .get(name)
            .copied()
            .unwrap_or_default()
            .into()
    }

    /// The rungs tier `tier` offers a source `source_height` lines high (0: not known yet).
    fn rungs(&self, tier: usize, source_height: u32) -> Vec<transcode::Rung> {
        let height = if source_height == 0 {
            u32::MAX
        } else {
            source_height
        };
        self.ladder
            .rungs_of(tier, height)
            .into_iter()
            .cloned()
            .collect()
    }
}

/// Subscribes a new stream's renditions and starts packaging them; with a ladder, starts its
/// transcoder at the tier for 0 viewers (a partner's: the full ladder) and the task that
/// follows its viewers.
fn wire_stream(
    streams: &Arc<origin::Streams>,
    edges: &Arc<origin::edges::Edges>,
    copies: &[String],
    plan: Option<&Arc<LadderPlan>>,
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
    let mut ladder = None;
    if let Some(plan) = plan {
        match transcode::encode::Transcoder::start(
            &new.source,
            new.name.as_str(),
            plan.threads_per_rung,
        ) {
            Ok(t) => {
                let mut tiering = transcode::ladder::Tiering::new(plan.hysteresis);
                let priority = plan.priority(new.name.as_str());
                let tier = tiering.update(&plan.ladder, 0, priority, std::time::Instant::now());
                let mut running = std::collections::BTreeMap::new();
                for rung in plan.rungs(tier, 0) {
                    match t.add(&rung) {
                        Ok(feed) => {
                            inputs.push(RenditionInput {
                                events: feed.stream.subscribe(&format!("packager:{}", feed.id)),
                                id: feed.id,
                            });
                            running.insert(rung.name.clone(), None);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, rung = %rung.name, "cannot start a rung thread")
                        }
                    }
                }
                ladder = Some(Ladder {
                    transcoder: t,
                    tiering,
                    priority,
                    running,
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the transcoder threads: source only")
            }
        }
    }
    let (name, session) = (new.name.clone(), new.session);
    streams.start(new.name, new.session, inputs);
    if let (Some(plan), Some(ladder)) = (plan, ladder) {
        let span = tracing::info_span!("ladder", stream = %name, %session);
        tokio::spawn(
            follow_viewers(
                Arc::clone(plan),
                Arc::clone(streams),
                Arc::clone(edges),
                name.as_str().to_owned(),
                session,
                ladder,
            )
            .instrument(span),
        );
    }
}

/// A stream's running ladder.
struct Ladder {
    transcoder: transcode::encode::Transcoder,
    tiering: transcode::ladder::Tiering,
    priority: transcode::ladder::Priority,
    /// Rungs running → since when each has been unadvertised and unwatched.
    running: std::collections::BTreeMap<String, Option<std::time::Instant>>,
}

/// Advertise by tier, stop by demand: each poll, the viewer count (origin and edges) gives
/// the tier; a rung the tier adds starts (it joins at the next source keyframe, running rungs
/// untouched) and is advertised; a rung it drops leaves the multivariant playlist and keeps
/// running while anyone still fetches it, then stops after the quiet period.
async fn follow_viewers(
    plan: Arc<LadderPlan>,
    streams: Arc<origin::Streams>,
    edges: Arc<origin::edges::Edges>,
    name: String,
    session: media::SessionId,
    mut ladder: Ladder,
) {
    let mut tick = tokio::time::interval(LADDER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tier = ladder.tiering.current();
    loop {
        tick.tick().await;
        let Some(stream) = streams.get(&name).filter(|s| s.session == session) else {
            return;
        };
        if !ladder.transcoder.is_running() {
            return;
        }
        let now = std::time::Instant::now();
        let viewers = edges.rendition_viewers(&name, now);
        let total: u64 = viewers.values().sum();
        let new_tier = ladder
            .tiering
            .update(&plan.ladder, total, ladder.priority, now);
        if new_tier != tier {
            tracing::info!(
                viewers = total,
                from = tier,
                to = new_tier,
                "ladder tier changed"
            );
            tier = new_tier;
        }
        let source_height = stream.renditions().first().map_or(0, |r| {
            r.info.lock().unwrap_or_else(|e| e.into_inner()).height
        });
        let wanted = plan.rungs(tier, source_height);
        for rung in &wanted {
            if ladder.running.contains_key(&rung.name) {
                continue;
            }
            match ladder.transcoder.add(rung) {
                Ok(feed) => {
                    let input = RenditionInput {
                        events: feed.stream.subscribe(&format!("packager:{}", feed.id)),
                        id: feed.id,
                    };
                    if streams.add_rendition(&name, session, input) {
                        tracing::info!(rung = %rung.name, "rung started for the viewers");
                        ladder.running.insert(rung.name.clone(), None);
                    } else {
                        ladder.transcoder.remove(&rung.name);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, rung = %rung.name, "cannot start a rung thread")
                }
            }
        }
        let mut stop = Vec::new();
        for (rung, idle_since) in &mut ladder.running {
            let advertised = wanted.iter().any(|w| &w.name == rung);
            streams.advertise(&name, session, rung, advertised);
            let watched = viewers.get(rung).is_some_and(|n| *n > 0);
            if advertised || watched {
                *idle_since = None;
            } else if now.duration_since(*idle_since.get_or_insert(now)) >= plan.quiet_period {
                stop.push(rung.clone());
            }
        }
        for rung in stop {
            tracing::info!(rung = %rung, "rung stopped: not advertised and no viewers");
            ladder.transcoder.remove(&rung);
            ladder.running.remove(&rung);
        }
    }
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
    let edges = Arc::new(cfg.edges());
    let on_new = {
        let streams = Arc::clone(&streams);
        let edges = Arc::clone(&edges);
        let copies = cfg.copy_renditions.clone();
        let plan = cfg
            .ladder()?
            .map(|ladder| Arc::new(LadderPlan::new(ladder, &cfg)));
        move |new| wire_stream(&streams, &edges, &copies, plan.as_ref(), new)
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
        edges,
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
