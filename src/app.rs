//! Starting and stopping the origin and the edge: binds the listeners, registers every
//! crate's metrics in one registry, and subscribes each new stream's consumers (the source
//! rendition's packager, copy renditions) to its fan-out.

use crate::config;
use crate::metrics::{register, Metrics};
use anyhow::Context;
use origin::RenditionInput;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running origin (`ferrocast serve`).
pub struct Origin {
    pub rtmp: SocketAddr,
    /// The RTMPS listener, when configured.
    pub rtmps: Option<SocketAddr>,
    pub http: SocketAddr,
    pub srt: SocketAddr,
    pub hub: Arc<ingest::Hub>,
    pub streams: Arc<origin::Streams>,
    shutdown: CancellationToken,
    rtmp_task: JoinHandle<()>,
    rtmps_task: Option<JoinHandle<()>>,
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

/// The transcoded ladder as the origin runs it: the rules, and every transcoded stream's
/// state, which one task updates each [`LADDER_POLL`] ([`LadderPlan::pass`]).
struct LadderPlan {
    ladder: transcode::ladder::Ladder,
    priorities: std::collections::HashMap<String, config::Priority>,
    threads_per_rung: usize,
    hysteresis: Duration,
    quiet_period: Duration,
    max_lag: Duration,
    backend: transcode::encode::Backend,
    metrics: transcode::metrics::Metrics,
    streams: Arc<origin::Streams>,
    edges: Arc<origin::edges::Edges>,
    state: std::sync::Mutex<Ladders>,
}

/// Every transcoded stream's ladder, and the budget they share.
struct Ladders {
    by_stream: BTreeMap<String, Ladder>,
    shedder: transcode::budget::Shedder,
}

/// A stream's running ladder.
struct Ladder {
    session: media::SessionId,
    transcoder: transcode::encode::Transcoder,
    tiering: transcode::ladder::Tiering,
    priority: transcode::ladder::Priority,
    tier: usize,
    started: Instant,
    rungs: BTreeMap<String, RungRun>,
    /// Rungs the tier wants that the budget does not grant, and why.
    shed: BTreeMap<String, transcode::budget::ShedReason>,
    /// CPU seconds of rungs that have stopped.
    past_cpu: f64,
    /// Measured CPU seconds per media second of each rung that ran (for the saving).
    cost: BTreeMap<String, f64>,
    /// The decoder's CPU seconds already counted in the metric.
    decoder_counted: f64,
}

/// A running rung.
struct RungRun {
    rung: transcode::Rung,
    stats: Arc<transcode::stats::RungStats>,
    /// Since when it has been out of the multivariant playlist (stopping after the quiet
    /// period once nobody watches; a shed rung at the latest then).
    unadvertised_since: Option<Instant>,
    /// Since when nobody has fetched it (while unadvertised).
    idle_since: Option<Instant>,
    /// CPU seconds already counted in the metric.
    counted: f64,
}

/// How often the ladders look at their viewer counts (tier up within ~2 polls).
const LADDER_POLL: Duration = Duration::from_secs(1);

impl LadderPlan {
    fn new(
        ladder: transcode::ladder::Ladder,
        cfg: &config::Config,
        streams: &Arc<origin::Streams>,
        edges: &Arc<origin::edges::Edges>,
    ) -> anyhow::Result<LadderPlan> {
        let t = cfg.transcode.clone().unwrap_or_default();
        let backend = t.backend()?;
        transcode::encode::check_backend(backend).map_err(anyhow::Error::msg)?;
        // x264's own thread count oversubscribes a small machine when several rungs run: give
        // each rung an equal share of the cores for the largest tier.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let widest = ladder
            .tiers()
            .iter()
            .map(|t| t.rungs.len())
            .max()
            .unwrap_or(1);
        let max_rungs = t.max_rungs.unwrap_or(usize::MAX);
        if max_rungs != usize::MAX {
            tracing::info!(max_rungs, "transcode budget");
        }
        Ok(LadderPlan {
            threads_per_rung: t
                .threads_per_rung
                .unwrap_or_else(|| (cores / widest.max(1)).max(1)),
            hysteresis: t.hysteresis(),
            quiet_period: t.quiet_period(),
            max_lag: t.max_lag(),
            backend,
            metrics: transcode::metrics::Metrics::default(),
            priorities: cfg.priorities(),
            ladder,
            streams: Arc::clone(streams),
            edges: Arc::clone(edges),
            state: std::sync::Mutex::new(Ladders {
                by_stream: BTreeMap::new(),
                shedder: transcode::budget::Shedder::new(max_rungs),
            }),
        })
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Ladders> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream: its transcoder starts at the tier for 0 viewers (a partner's: the full
    /// ladder), within the budget. Returns the rungs' inputs for the packager.
    fn start_stream(&self, new: &ingest::NewStream) -> Vec<RenditionInput> {
        let name = new.name.as_str().to_owned();
        let transcoder = match transcode::encode::Transcoder::start(
            &new.source,
            &name,
            self.threads_per_rung,
            self.backend,
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the transcoder threads: source only");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let priority = self.priority(&name);
        let mut tiering = transcode::ladder::Tiering::new(self.hysteresis);
        let tier = tiering.update(&self.ladder, 0, priority, now);
        let mut st = self.lock();
        st.by_stream.insert(
            name.clone(),
            Ladder {
                session: new.session,
                transcoder,
                tiering,
                priority,
                tier,
                started: now,
                rungs: BTreeMap::new(),
                shed: BTreeMap::new(),
                past_cpu: 0.0,
                cost: BTreeMap::new(),
                decoder_counted: 0.0,
            },
        );
        let (budget, configured) = (st.shedder.update(0, false, now).0, st.shedder.configured());
        let wants = self.wants(&st, &BTreeMap::new());
        let grants = transcode::budget::allocate(&wants, budget, configured);
        let mut inputs = Vec::new();
        let Some(ladder) = st.by_stream.get_mut(&name) else {
            return inputs;
        };
        let transcode::budget::Grant { granted, shed } =
            grants.get(&name).cloned().unwrap_or_default();
        for rung in self.rungs(tier, 0) {
            if !granted.contains(&rung.name) {
                continue;
            }
            if let Some(input) = start_rung(ladder, &rung) {
                inputs.push(input);
            }
        }
        // The stream's shed counts exist from its start, at 0.
        for reason in [
            transcode::budget::ShedReason::Budget,
            transcode::budget::ShedReason::Overload,
        ] {
            self.metrics
                .sheds
                .with_label_values(&[name.as_str(), reason.as_str()]);
        }
        self.note_sheds(&name, ladder, &shed);
        inputs
    }

    /// What every stream's tier wants, for the budget.
    fn wants(&self, st: &Ladders, viewers: &BTreeMap<String, u64>) -> Vec<transcode::budget::Want> {
        st.by_stream
            .iter()
            .map(|(name, l)| transcode::budget::Want {
                stream: name.clone(),
                priority: l.priority,
                viewers: viewers.get(name).copied().unwrap_or(0),
                rungs: self
                    .rungs(l.tier, self.source_height(name))
                    .into_iter()
                    .map(|r| (r.name, r.height))
                    .collect(),
            })
            .collect()
    }

    fn source_height(&self, name: &str) -> u32 {
        self.streams
            .get(name)
            .and_then(|s| s.renditions().first().cloned())
            .map_or(0, |r| {
                r.info.lock().unwrap_or_else(|e| e.into_inner()).height
            })
    }

    fn note_sheds(
        &self,
        name: &str,
        ladder: &mut Ladder,
        shed: &[(String, transcode::budget::ShedReason)],
    ) {
        for (rung, reason) in shed {
            if ladder.shed.insert(rung.clone(), *reason) != Some(*reason) {
                tracing::warn!(rung = %rung, reason = reason.as_str(), "rung shed: the transcode budget does not grant it");
                self.metrics
                    .sheds
                    .with_label_values(&[name, reason.as_str()])
                    .inc();
            }
        }
        ladder.shed.retain(|r, _| shed.iter().any(|(s, _)| s == r));
    }

    /// One poll over every ladder: viewers → tier → wanted rungs; the budget (lowered while
    /// encoders lag) grants them; rungs start, are advertised or not, stop; figures update.
    fn pass(&self, now: Instant) {
        let mut st = self.lock();
        let ended: Vec<String> = st
            .by_stream
            .iter()
            .filter(|(name, l)| {
                !l.transcoder.is_running()
                    || self
                        .streams
                        .get(name)
                        .is_none_or(|s| s.session != l.session)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in ended {
            if let Some(l) = st.by_stream.remove(&name) {
                for rung in l.rungs.keys() {
                    self.metrics.forget_rung(&name, rung);
                }
                self.metrics.forget_stream(&name);
            }
        }
        let mut per_rendition = BTreeMap::new();
        let mut totals = BTreeMap::new();
        for (name, l) in st.by_stream.iter_mut() {
            let viewers = self.edges.rendition_viewers(name, now);
            let total: u64 = viewers.values().sum();
            let tier = l.tiering.update(&self.ladder, total, l.priority, now);
            if tier != l.tier {
                tracing::info!(stream = %name, viewers = total, from = l.tier, to = tier, "ladder tier changed");
                l.tier = tier;
            }
            totals.insert(name.clone(), total);
            per_rendition.insert(name.clone(), viewers);
        }
        // Rungs still draining after a shed count against nothing new: the budget is lowered
        // again only once they are gone (their effect is not visible before).
        let draining = st.by_stream.values().any(|l| {
            l.rungs
                .iter()
                .any(|(n, r)| l.shed.contains_key(n) && r.unadvertised_since.is_some())
        });
        let lagging: Vec<(String, String, f64)> = st
            .by_stream
            .iter()
            .flat_map(|(name, l)| {
                l.rungs.iter().filter_map(move |(rung, r)| {
                    let f = r.stats.figures();
                    (f.frames > 0 && f.lag_secs > self.max_lag.as_secs_f64())
                        .then(|| (name.clone(), rung.clone(), f.lag_secs))
                })
            })
            .collect();
        let running: usize = st.by_stream.values().map(|l| l.rungs.len()).sum();
        let (budget, lowered) = st
            .shedder
            .update(running, !lagging.is_empty() && !draining, now);
        if lowered {
            tracing::warn!(budget, lagging = ?lagging, "encoders behind real time: the transcode budget is lowered");
        }
        self.metrics.budget.set(if budget == usize::MAX {
            f64::INFINITY
        } else {
            budget as f64
        });
        let configured = st.shedder.configured();
        let grants = transcode::budget::allocate(&self.wants(&st, &totals), budget, configured);
        for (name, l) in st.by_stream.iter_mut() {
            let viewers = per_rendition.get(name).cloned().unwrap_or_default();
            self.apply(name, l, &viewers, grants.get(name), now);
        }
    }

    /// Applies one stream's grants: starts, advertises and stops its rungs; updates figures.
    fn apply(
        &self,
        name: &str,
        l: &mut Ladder,
        viewers: &BTreeMap<String, u64>,
        grant: Option<&transcode::budget::Grant>,
        now: Instant,
    ) {
        let transcode::budget::Grant { granted, shed } = grant.cloned().unwrap_or_default();
        let wanted = self.rungs(l.tier, self.source_height(name));
        for rung in &wanted {
            if !granted.contains(&rung.name) || l.rungs.contains_key(&rung.name) {
                continue;
            }
            if let Some(input) = start_rung(l, rung) {
                if self.streams.add_rendition(name, l.session, input) {
                    tracing::info!(stream = %name, rung = %rung.name, "rung started for the viewers");
                } else {
                    l.transcoder.remove(&rung.name);
                    l.rungs.remove(&rung.name);
                }
            }
        }
        self.note_sheds(name, l, &shed);
        let mut stop = Vec::new();
        for (rung, r) in l.rungs.iter_mut() {
            let advertised = granted.contains(rung) && wanted.iter().any(|w| &w.name == rung);
            self.streams.advertise(name, l.session, rung, advertised);
            let watched = viewers.get(rung).is_some_and(|n| *n > 0);
            if advertised {
                r.unadvertised_since = None;
                r.idle_since = None;
                continue;
            }
            let out_since = *r.unadvertised_since.get_or_insert(now);
            if watched {
                r.idle_since = None;
            }
            let idle_since = *r.idle_since.get_or_insert(now);
            let quiet = now.duration_since(idle_since) >= self.quiet_period;
            // A shed rung frees its encoder as soon as nobody watches it, and at the latest
            // after the quiet period.
            let shed_done = l.shed.contains_key(rung)
                && (!watched || now.duration_since(out_since) >= self.quiet_period);
            // A rung started before the source's size was known that turns out not to be
            // smaller than it has never had a picture: nobody can be watching it.
            let never_ran = r.stats.figures().frames == 0 && !watched;
            if quiet || shed_done || never_ran {
                stop.push(rung.clone());
            }
        }
        for rung in stop {
            tracing::info!(stream = %name, rung = %rung, "rung stopped: not advertised and no viewers (or shed)");
            l.transcoder.remove(&rung);
            if let Some(r) = l.rungs.remove(&rung) {
                l.past_cpu += r.stats.figures().cpu_secs;
            }
            self.metrics.forget_rung(name, &rung);
        }
        self.update_figures(name, l, &wanted);
    }

    /// Metrics and the `/api/streams` view of one ladder.
    fn update_figures(&self, name: &str, l: &mut Ladder, wanted: &[transcode::Rung]) {
        let mut rungs = Vec::new();
        let mut running_cpu = 0.0;
        let mut advertised = 0;
        for (id, r) in l.rungs.iter_mut() {
            let f = r.stats.figures();
            let labels = [name, id.as_str()];
            if let Some(speed) = f.speed {
                self.metrics.speed.with_label_values(&labels).set(speed);
            }
            self.metrics.lag.with_label_values(&labels).set(f.lag_secs);
            if f.cpu_secs > r.counted {
                self.metrics
                    .cpu
                    .with_label_values(&labels)
                    .inc_by(f.cpu_secs - r.counted);
                r.counted = f.cpu_secs;
            }
            if f.media_secs >= 5.0 {
                l.cost.insert(id.clone(), f.cpu_secs / f.media_secs);
            }
            running_cpu += f.cpu_secs;
            let is_advertised = r.unadvertised_since.is_none();
            advertised += usize::from(is_advertised);
            rungs.push(serde_json::json!({
                "name": id,
                "height": r.rung.height,
                "bitrate": r.rung.bitrate,
                "advertised": is_advertised,
                "encoder": f.encoder.map(|e| if e == "h264_nvenc" { "nvenc" } else { "x264" }),
                "codec": f.encoder,
                "frames": f.frames,
                "media_seconds": round3(f.media_secs),
                "speed": f.speed.map(round3),
                "lag_seconds": round3(f.lag_secs),
                "cpu_seconds": round3(f.cpu_secs),
                "decoder_waits": f.waits,
                "shed": l.shed.get(id).map(|r| r.as_str()),
            }));
        }
        let decoder = l.transcoder.decoder_stats().figures().cpu_secs;
        if decoder > l.decoder_counted {
            self.metrics
                .decoder_cpu
                .with_label_values(&[name])
                .inc_by(decoder - l.decoder_counted);
            l.decoder_counted = decoder;
        }
        for (state, n) in [
            ("running", l.rungs.len()),
            ("advertised", advertised),
            ("shed", l.shed.len()),
        ] {
            self.metrics
                .rungs
                .with_label_values(&[name, state])
                .set(n as f64);
        }
        let used = l.past_cpu + running_cpu;
        let saved = self.saved(name, l, used);
        let shed: Vec<serde_json::Value> = l
            .shed
            .iter()
            .map(|(rung, reason)| serde_json::json!({"rung": rung, "reason": reason.as_str()}))
            .collect();
        let status = serde_json::json!({
            "tier": l.tier,
            "priority": match l.priority {
                transcode::ladder::Priority::Partner => "partner",
                transcode::ladder::Priority::Normal => "normal",
                transcode::ladder::Priority::Free => "free",
            },
            "wanted": wanted.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            "advertised": l.rungs.iter().filter(|(_, r)| r.unadvertised_since.is_none()).map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "running": l.rungs.keys().collect::<Vec<_>>(),
            "shed": shed,
            "rungs": rungs,
            "decoder_cpu_seconds": round3(decoder),
            "cpu_seconds": round3(used + decoder),
            "cpu_saved_seconds": saved.map(round3),
        });
        if let Some(s) = self.streams.get(name).filter(|s| s.session == l.session) {
            s.set_ladder_status(status);
        }
    }

    /// CPU seconds the tiering saved against running the full ladder since the stream began:
    /// each full-ladder rung's measured cost per media second (a rung that never ran: the
    /// mean measured cost per pixel per second, scaled to its size and rate) times the
    /// stream's duration, minus what the rungs used. `None` until a rung has been measured.
    fn saved(&self, name: &str, l: &Ladder, used: f64) -> Option<f64> {
        let full = self.rungs(
            self.ladder.tiers().len().saturating_sub(1),
            self.source_height(name),
        );
        let (w, h) = self
            .streams
            .get(name)
            .and_then(|s| s.renditions().first().cloned())
            .map(|r| {
                let i = r.info.lock().unwrap_or_else(|e| e.into_inner());
                (i.width, i.height)
            })
            .unwrap_or((16, 9));
        let pixels = |r: &transcode::Rung| {
            transcode::ladder::rung_size((w.max(2), h.max(2)), r.height)
                .map_or(0.0, |(w, h)| f64::from(w) * f64::from(h) * r.max_fps)
        };
        let per_pixel: Vec<f64> = l
            .cost
            .iter()
            .filter_map(|(id, c)| {
                let r = self.ladder.rungs().iter().find(|r| &r.name == id)?;
                let p = pixels(r);
                (p > 0.0).then(|| c / p)
            })
            .collect();
        if per_pixel.is_empty() {
            return None;
        }
        let mean = per_pixel.iter().sum::<f64>() / per_pixel.len() as f64;
        let secs = l.started.elapsed().as_secs_f64();
        let full_cost: f64 = full
            .iter()
            .map(|r| l.cost.get(&r.name).copied().unwrap_or(mean * pixels(r)) * secs)
            .sum();
        Some((full_cost - used).max(0.0))
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Starts one rung of `l` and returns its packager input.
fn start_rung(l: &mut Ladder, rung: &transcode::Rung) -> Option<RenditionInput> {
    match l.transcoder.add(rung) {
        Ok((feed, stats)) => {
            l.rungs.insert(
                rung.name.clone(),
                RungRun {
                    rung: rung.clone(),
                    stats,
                    unadvertised_since: None,
                    idle_since: None,
                    counted: 0.0,
                },
            );
            Some(RenditionInput {
                events: feed.stream.subscribe(&format!("packager:{}", feed.id)),
                id: feed.id,
            })
        }
        Err(e) => {
            tracing::error!(error = %e, rung = %rung.name, "cannot start a rung thread");
            None
        }
    }
}

/// Subscribes a new stream's renditions and starts packaging them; with a ladder, its
/// transcoder starts at the tier for 0 viewers within the budget.
fn wire_stream(
    streams: &Arc<origin::Streams>,
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
    if let Some(plan) = plan {
        let span = tracing::info_span!("ladder", stream = %new.name, session = %new.session);
        inputs.extend(span.in_scope(|| plan.start_stream(&new)));
    }
    streams.start(new.name, new.session, inputs);
}

/// Advertise by tier, stop by demand, within the budget: every poll, each stream's viewer
/// count (origin and edges) gives its tier; the budget grants rungs; a rung granted starts
/// (it joins at the next source keyframe, running rungs untouched) and is advertised; a rung
/// dropped by the tier leaves the multivariant playlist and keeps running while anyone still
/// fetches it, then stops after the quiet period; a shed rung stops once nobody watches it.
async fn run_ladders(plan: Arc<LadderPlan>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LADDER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        plan.pass(Instant::now());
    }
}

/// Every second: each publisher's uplink health into `/api/streams` and the metrics; a flag
/// and its clearing are logged with the figures.
async fn watch_uplinks(
    hub: Arc<ingest::Hub>,
    streams: Arc<origin::Streams>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut flagged = std::collections::HashSet::new();
    let mut live_before: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let uplinks = hub.uplinks();
        // A publisher gone: its series go too (a stale "degraded" would mislead).
        for old in &live_before {
            if !uplinks.iter().any(|(n, _, _)| n.as_str() == old) {
                let _ = hub.metrics.ingest_lag.remove_label_values(&[old]);
                let _ = hub.metrics.uplink_degraded.remove_label_values(&[old]);
                let _ = hub.metrics.bitrate.remove_label_values(&[old]);
                let _ = hub.metrics.fps.remove_label_values(&[old]);
            }
        }
        live_before = uplinks
            .iter()
            .map(|(n, _, _)| n.as_str().to_owned())
            .collect();
        for (name, session, s) in uplinks {
            let stream = name.as_str();
            hub.metrics
                .ingest_lag
                .with_label_values(&[stream])
                .set(s.lag_secs);
            hub.metrics
                .uplink_degraded
                .with_label_values(&[stream])
                .set(i64::from(s.degraded));
            hub.metrics
                .bitrate
                .with_label_values(&[stream])
                .set(s.bitrate / 8.0);
            hub.metrics.fps.with_label_values(&[stream]).set(s.fps);
            let key = (stream.to_owned(), session);
            if s.degraded && flagged.insert(key.clone()) {
                tracing::warn!(%stream, %session, reason = s.reason.unwrap_or("-"), lag_secs = s.lag_secs, bitrate = s.bitrate, reference_bitrate = ?s.reference_bitrate, "uplink degraded: the publisher's media arrives late or thin");
            } else if !s.degraded && flagged.remove(&key) {
                tracing::info!(%stream, %session, "uplink recovered");
            }
            if let Some(live) = streams.get(stream).filter(|l| l.session == session) {
                live.set_uplink_status(serde_json::json!({
                    "degraded": s.degraded,
                    "reason": s.reason,
                    "lag_seconds": round3(s.lag_secs),
                    "bitrate": s.bitrate.round(),
                    "reference_bitrate": s.reference_bitrate.map(f64::round),
                    "fps": (s.fps * 10.0).round() / 10.0,
                    "episodes": s.episodes,
                }));
            }
        }
    }
}

/// Viewers and what their players say (CMCD) per stream and rendition into the metrics (only
/// streams and renditions that exist: edges' reports cannot add series).
fn refresh_audience(
    streams: &origin::Streams,
    edges: &origin::edges::Edges,
    m: &origin::metrics::Metrics,
) {
    let now = std::time::Instant::now();
    m.viewers.reset();
    m.players.reset();
    for s in streams.all() {
        let name = s.name.as_str();
        let known: Vec<String> = s.renditions().iter().map(|r| r.id.to_string()).collect();
        for (rendition, n) in edges.rendition_viewers(name, now) {
            if known.contains(&rendition) {
                m.viewers
                    .with_label_values(&[name, rendition.as_str()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        for (rendition, p) in edges.stream_players(name, now) {
            if known.contains(&rendition) {
                m.players.set(name, &rendition, &p);
            }
        }
    }
    m.edges
        .set(i64::try_from(edges.healthy(now).len()).unwrap_or(i64::MAX));
}

/// Starts the origin with a validated config. Call from within the tokio runtime.
pub async fn start_origin(cfg: config::Config) -> anyhow::Result<Origin> {
    let keys = cfg.stream_keys()?;
    if cfg.streams.is_empty() && cfg.publish_hook.is_none() {
        tracing::warn!(
            stream = config::DEV_STREAM,
            key = config::DEV_KEY,
            "no [[streams]] configured: accepting the DEVELOPMENT key; anyone who knows it can publish. Configure stream keys for any real use."
        );
    }
    if cfg.edge_token.is_none() {
        tracing::warn!("no edge_token configured: any host can report viewers as an edge");
    }
    if cfg.admin_token.is_none() {
        tracing::warn!("no admin_token configured: the dashboard's data (/api/streams, /api/edges) is open to anyone who can reach the origin's HTTP port");
    }
    let origin_metrics = Arc::new(origin::metrics::Metrics::default());
    let streams = origin::Streams::new(cfg.origin_config(), Arc::clone(&origin_metrics));
    let edges = Arc::new(cfg.edges());
    let plan = match cfg.ladder()? {
        Some(ladder) => Some(Arc::new(LadderPlan::new(ladder, &cfg, &streams, &edges)?)),
        None => None,
    };
    let on_new = {
        let streams = Arc::clone(&streams);
        let copies = cfg.copy_renditions.clone();
        let plan = plan.clone();
        move |new| wire_stream(&streams, &copies, plan.as_ref(), new)
    };
    let hub = ingest::Hub::new(keys, cfg.grace_period(), on_new);
    hub.set_limits(ingest::PublishLimits {
        total: cfg.max_publishers,
        per_ip: cfg.max_publishers_per_ip,
    });
    if let Some(url) = &cfg.publish_hook {
        let timeout = Duration::from_secs_f64(cfg.publish_hook_timeout);
        let hook = crate::hook::HttpHook::new(url, timeout)?;
        hub.set_publish_hook(ingest::admission::Gate::new(
            Arc::new(hook),
            ingest::admission::GateConfig {
                timeout,
                cache: Duration::from_secs_f64(cfg.publish_hook_cache),
                max_in_flight: cfg.publish_hook_max_in_flight,
            },
        ));
        tracing::info!(
            timeout_secs = cfg.publish_hook_timeout,
            "publish hook on: keys no [[streams]] entry knows are authorized by it"
        );
    }
    let mut metrics = Metrics::new();
    register("origin", origin_metrics.register(metrics.registry()))?;
    register("ingest", hub.metrics.register(metrics.registry()))?;
    {
        let (streams, edges, m) = (
            Arc::clone(&streams),
            Arc::clone(&edges),
            Arc::clone(&origin_metrics),
        );
        metrics.on_scrape(move || refresh_audience(&streams, &edges, &m));
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_uplinks(
        Arc::clone(&hub),
        Arc::clone(&streams),
        shutdown.clone(),
    ));
    if let Some(plan) = &plan {
        register("transcode", plan.metrics.register(metrics.registry()))?;
        tokio::spawn(run_ladders(Arc::clone(plan), shutdown.clone()));
    }

    let rtmp = TcpListener::bind(&cfg.rtmp)
        .await
        .with_context(|| format!("binding RTMP on {}", cfg.rtmp))?;
    let rtmps = match (&cfg.rtmps_cert, &cfg.rtmps_key) {
        (Some(cert), Some(key)) => {
            let c = std::fs::read(cert).with_context(|| format!("reading rtmps_cert {cert}"))?;
            let k = std::fs::read(key).with_context(|| format!("reading rtmps_key {key}"))?;
            let tls = media::tls::server_config(&c, &k, &[])
                .map_err(|e| anyhow::anyhow!("RTMPS certificate and key: {e}"))?;
            let listener = TcpListener::bind(&cfg.rtmps)
                .await
                .with_context(|| format!("binding RTMPS on {}", cfg.rtmps))?;
            Some((listener, tls))
        }
        _ => None,
    };
    let http = TcpListener::bind(&cfg.http)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http))?;
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
    let (rtmps_addr, rtmps_task) = match rtmps {
        Some((listener, tls)) => {
            let addr = listener.local_addr()?;
            tracing::info!(rtmps_addr = %addr, "RTMPS listening");
            let task = tokio::spawn(ingest::rtmp::run_tls(
                listener,
                tls,
                Arc::clone(&hub),
                cfg.rtmp_config(),
                shutdown.clone(),
            ));
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    let state = origin::http::AppState {
        streams: Arc::clone(&streams),
        edges,
        admin_token: cfg.admin_token.as_deref().map(Arc::from),
    };
    let router = origin::http::router(state).merge(Arc::new(metrics).router());
    let http_task = tokio::spawn(media::server::serve(
        http,
        router,
        None,
        cfg.http_limits.limits(0.0),
        hub.metrics.refusals.clone(),
        shutdown.clone(),
    ));
    Ok(Origin {
        rtmp: rtmp_addr,
        rtmps: rtmps_addr,
        http: http_addr,
        srt: srt_addr,
        hub,
        streams,
        shutdown,
        rtmp_task,
        rtmps_task,
        http_task,
        srt_handle: srt,
    })
}

impl Origin {
    /// Stops accepting, closes connections and waits (bounded) for the listeners to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.rtmp_task.await;
        if let Some(t) = self.rtmps_task {
            let _ = t.await;
        }
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
    let refusals = media::limits::Refusals::new();
    register("limits", refusals.register(metrics.registry()))?;
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
        let limits = cfg.http_limits.limits(config::EDGE_REQUESTS_PER_IP);
        tokio::spawn(media::server::serve(
            listener, router, tls, limits, refusals, shutdown,
        ))
    };
    stop.cancelled().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = background.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
