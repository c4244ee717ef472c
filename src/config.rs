//! `ferrocast serve` configuration: TOML, unknown keys refused, defaults documented here and in
//! the README, checked by `validate()` after parsing and after command-line overrides.

use anyhow::{bail, Context};
use media::{StreamKey, StreamName};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The stream name and key accepted when no `[[streams]]` are configured (development only).
pub const DEV_STREAM: &str = "demo";
pub const DEV_KEY: &str = "ferrocast-dev-key";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// RTMP listen address.
    pub rtmp: String,
    /// RTMPS (RTMP over TLS) listen address; on only when `rtmps_cert` and `rtmps_key` are set.
    pub rtmps: String,
    /// PEM certificate chain and private key for RTMPS.
    pub rtmps_cert: Option<String>,
    pub rtmps_key: Option<String>,
    /// HTTP listen address.
    pub http: String,
    /// SRT listen address (UDP).
    pub srt: String,
    /// SRT latency (TSBPD) in milliseconds.
    pub srt_latency_ms: u32,
    /// Server-wide SRT passphrase (10-79 characters); callers must encrypt with it.
    pub srt_passphrase: Option<String>,
    /// Seconds without data after which an SRT publisher is closed.
    pub srt_idle_timeout: f64,
    /// Seconds a stream stays live after its publisher drops (a reconnect within it continues
    /// the same playlists).
    pub grace_period: f64,
    /// `default` (PART-TARGET 0.333 s, PART-HOLD-BACK 1.0 s) or `lowest` (0.2 s parts under a
    /// PART-TARGET of 0.21 s, PART-HOLD-BACK 0.63 s). See [`LatencyProfile`].
    pub latency_profile: LatencyProfile,
    /// LL-HLS PART-TARGET in seconds [default: the latency profile's]. Use [`Config::part_target`].
    pub part_target: Option<f64>,
    /// Smallest EXT-X-TARGETDURATION in seconds (raised to the source GOP if longer).
    pub target_duration: u32,
    /// Complete segments kept in memory and listed per rendition.
    pub window_segments: usize,
    /// Seconds an RTMP handshake may take.
    pub rtmp_handshake_timeout: f64,
    /// Seconds of silence after which an RTMP connection is closed.
    pub rtmp_idle_timeout: f64,
    /// Largest Set Chunk Size an RTMP publisher may announce (SRS allows up to 65536).
    pub rtmp_max_chunk_size: u32,
    /// Largest RTMP message (one FLV tag) in bytes.
    pub rtmp_max_message_size: u32,
    /// Seconds an ended stream's playlists (with EXT-X-ENDLIST) stay available.
    pub ended_linger: f64,
    /// Shared secret edges send with their viewer reports (`Authorization: Bearer …`).
    pub edge_token: Option<String>,
    /// Publishers at once, in total and from one IP address (a takeover replaces, not adds).
    pub max_publishers: usize,
    pub max_publishers_per_ip: usize,
    /// URL POSTed before a publish with a key no `[[streams]]` entry knows (see `src/hook.rs`).
    pub publish_hook: Option<String>,
    /// Seconds the publish hook may take before the publish is refused.
    pub publish_hook_timeout: f64,
    /// Seconds a hook's answer for a key is reused (0: ask every time).
    pub publish_hook_cache: f64,
    /// Hook questions in flight at once; a publish beyond them is refused.
    pub publish_hook_max_in_flight: usize,
    /// Secret for the dashboard's data (`GET /api/streams`, `GET /api/edges`: `Authorization:
    /// Bearer …`; the dashboard page asks for it). Absent: those are open.
    pub admin_token: Option<String>,
    /// Viewers = distinct sessions seen within this many seconds.
    pub viewer_window: f64,
    /// Extra renditions that carry an untouched copy of the source under these ids (no
    /// transcoding): for exercising players' rendition switching and reports. Default none.
    pub copy_renditions: Vec<String>,
    /// `[http_limits]`.
    pub http_limits: HttpLimitsConfig,
    /// The transcoded ladder (`[transcode]`, `[[transcode.rungs]]`, `[[transcode.tiers]]`).
    /// Absent: no transcoding, the source alone.
    pub transcode: Option<TranscodeConfig>,
    pub streams: Vec<StreamConfig>,
}

/// `[http_limits]` (origin and edge alike): the HTTP server's limits, see
/// [`media::server::HttpLimits`]. Over a limit the client gets 429 (its own excess) or 503 (the
/// server's) with `Retry-After`, and the refusal is logged and counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimitsConfig {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Request line + headers, in bytes (HTTP/2: the header list).
    pub max_header_bytes: usize,
    /// Seconds a request's headers may take to arrive (slowloris).
    pub header_timeout: f64,
    /// Seconds a response write may make no progress before the connection is cut (a reader
    /// that stopped reading).
    pub send_timeout: f64,
    /// Seconds a connection may move no bytes either way.
    pub idle_timeout: f64,
    /// Requests per second per IP address, burst twice that; 0: no limit [default: 0 on the
    /// origin (edges share few addresses), 200 on an edge].
    pub requests_per_ip: Option<f64>,
    /// Blocking playlist requests (`_HLS_msn`) waiting at once, in total and per connection.
    pub max_blocked_requests: usize,
    pub max_blocked_requests_per_connection: usize,
}

impl Default for HttpLimitsConfig {
    fn default() -> Self {
        let d = media::server::HttpLimits::default();
        HttpLimitsConfig {
            max_connections: d.max_connections,
            max_connections_per_ip: d.max_connections_per_ip,
            max_header_bytes: d.max_header_bytes,
            header_timeout: d.header_timeout.as_secs_f64(),
            send_timeout: d.send_timeout.as_secs_f64(),
            idle_timeout: d.idle_timeout.as_secs_f64(),
            requests_per_ip: None,
            max_blocked_requests: d.max_blocked,
            max_blocked_requests_per_connection: d.max_blocked_per_connection,
        }
    }
}

impl HttpLimitsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (what, v) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_blocked_requests", self.max_blocked_requests),
            (
                "max_blocked_requests_per_connection",
                self.max_blocked_requests_per_connection,
            ),
        ] {
            if !(1..=10_000_000).contains(&v) {
                bail!("http_limits.{what} must be between 1 and 10000000");
            }
        }
        if !(1024..=1 << 20).contains(&self.max_header_bytes) {
            bail!("http_limits.max_header_bytes must be between 1024 and 1048576");
        }
        for (what, v) in [
            ("header_timeout", self.header_timeout),
            ("send_timeout", self.send_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if !(0.1..=3600.0).contains(&v) {
                bail!("http_limits.{what} must be between 0.1 and 3600 seconds");
            }
        }
        if self
            .requests_per_ip
            .is_some_and(|r| !(0.0..=1e6).contains(&r))
        {
            bail!("http_limits.requests_per_ip must be between 0 (off) and 1000000");
        }
        Ok(())
    }

    /// The limits, with `default_rate` requests per second per IP unless set.
    pub fn limits(&self, default_rate: f64) -> media::server::HttpLimits {
        media::server::HttpLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_header_bytes: self.max_header_bytes,
            header_timeout: secs(self.header_timeout),
            send_timeout: secs(self.send_timeout),
            idle_timeout: secs(self.idle_timeout),
            requests_per_ip: self.requests_per_ip.unwrap_or(default_rate),
            max_blocked: self.max_blocked_requests,
            max_blocked_per_connection: self.max_blocked_requests_per_connection,
        }
    }
}

/// Requests per second per IP an edge allows unless `http_limits.requests_per_ip` says
/// otherwise (an LL-HLS viewer makes about 6 a second; 30 viewers behind one address fit).
pub const EDGE_REQUESTS_PER_IP: f64 = 200.0;

/// `[transcode]`: the ladder's rungs and its tiers by viewer count. Both lists empty: the
/// standard ladder (see [`transcode::ladder::Ladder::standard`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    pub rungs: Vec<RungConfig>,
    pub tiers: Vec<TierConfig>,
    /// libx264 threads per rung [default: the machine's cores / the largest tier's rungs, at
    /// least 1].
    pub threads_per_rung: Option<usize>,
    /// Seconds the viewer count must stay below a tier before the ladder drops to a lower one
    /// [default 60].
    pub hysteresis: Option<f64>,
    /// Seconds a rung no longer advertised keeps running without viewers before it stops
    /// [default 30].
    pub quiet_period: Option<f64>,
    /// The transcode budget: rungs running at once over all streams [default: no limit].
    /// Beyond it the lowest-priority, least-watched streams' rungs are shed.
    pub max_rungs: Option<usize>,
    /// Seconds a rung may run behind real time (source arrival → encoded frame) before the
    /// budget is lowered and a rung shed [default 2].
    pub max_lag: Option<f64>,
    /// `auto` (NVENC where it opens, else libx264), `cpu` or `nvenc` [default auto; the
    /// `--transcoder` flag overrides it].
    pub transcoder: Option<String>,
}

impl TranscodeConfig {
    pub fn hysteresis(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.hysteresis.unwrap_or(60.0))
    }

    pub fn quiet_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.quiet_period.unwrap_or(30.0))
    }

    pub fn max_lag(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.max_lag.unwrap_or(2.0))
    }

    pub fn backend(&self) -> anyhow::Result<transcode::encode::Backend> {
        self.transcoder
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(|e: String| anyhow::anyhow!("[transcode] {e}"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Rendition id (`/live/NAME/{name}/index.m3u8`).
    pub name: String,
    /// Output height; the width keeps the source's aspect ratio.
    pub height: u32,
    /// Video bitrate, kbit/s.
    pub bitrate_kbps: u64,
    /// Frame-rate cap [default 30; 60 above 720 lines].
    pub max_fps: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// From this many viewers on.
    pub min_viewers: u64,
    /// The rungs offered beside the source.
    pub rungs: Vec<String>,
}

/// `priority` of a stream: `partner` always gets the full ladder, `free` never more than the
/// first tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Partner,
    #[default]
    Normal,
    Free,
}

impl From<Priority> for transcode::ladder::Priority {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Partner => transcode::ladder::Priority::Partner,
            Priority::Normal => transcode::ladder::Priority::Normal,
            Priority::Free => transcode::ladder::Priority::Free,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Public name: playback at `/live/{name}/index.m3u8`.
    pub name: String,
    /// Secret publish key (the RTMP stream key; `live/KEY` in an SRT stream id).
    pub key: String,
    /// Optional SRT passphrase for this stream (overrides `srt_passphrase`).
    #[serde(default)]
    pub srt_passphrase: Option<String>,
    /// `partner`, `normal` (default) or `free`: how much of the ladder the stream gets.
    #[serde(default)]
    pub priority: Priority,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rtmp: "0.0.0.0:1935".into(),
            rtmps: "0.0.0.0:1936".into(),
            rtmps_cert: None,
            rtmps_key: None,
            http: "0.0.0.0:8080".into(),
            srt: "0.0.0.0:9000".into(),
            srt_latency_ms: 120,
            srt_passphrase: None,
            srt_idle_timeout: 10.0,
            grace_period: 10.0,
            latency_profile: LatencyProfile::Default,
            part_target: None,
            target_duration: 2,
            window_segments: 16,
            rtmp_handshake_timeout: 10.0,
            rtmp_idle_timeout: 10.0,
            rtmp_max_chunk_size: 65_536,
            rtmp_max_message_size: 8 << 20,
            ended_linger: 60.0,
            edge_token: None,
            admin_token: None,
            max_publishers: 256,
            max_publishers_per_ip: 16,
            publish_hook: None,
            publish_hook_timeout: 2.0,
            publish_hook_cache: 5.0,
            publish_hook_max_in_flight: 8,
            viewer_window: 15.0,
            copy_renditions: Vec::new(),
            http_limits: HttpLimitsConfig::default(),
            transcode: None,
            streams: Vec::new(),
        }
    }
}

/// A named choice of LL-HLS part size: the latency a player can reach against the requests it
/// makes (about one playlist reload and one part per PART-TARGET per rendition watched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyProfile {
    /// PART-TARGET 0.333 s: parts of 9-10 frames at 30 fps, 8 at 25; PART-HOLD-BACK 1.0 s.
    Default,
    /// Parts of 0.2 s (MediaMTX's default: 6 frames at 29.97/30 fps, 5 at 25, 10 at 50, 12 at
    /// 59.94/60) under a PART-TARGET of 0.21 s; PART-HOLD-BACK 0.63 s. A target of exactly
    /// 0.2 s would break the LL-HLS rules at 29.97 fps: 6 frames (0.2002 s) exceed it and
    /// 5 frames are only 83 % of it (parts must be ≥ 85 %).
    Lowest,
}

impl LatencyProfile {
    pub fn part_target(self) -> f64 {
        match self {
            LatencyProfile::Default => 0.333,
            LatencyProfile::Lowest => 0.21,
        }
    }
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v)
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// The PART-TARGET in seconds: `part_target` if set, else the latency profile's.
    pub fn part_target(&self) -> f64 {
        self.part_target
            .unwrap_or_else(|| self.latency_profile.part_target())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.publish_hook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("publish_hook must be an http:// or https:// URL");
            }
        }
        if !(0.05..=60.0).contains(&self.publish_hook_timeout) {
            bail!("publish_hook_timeout must be between 0.05 and 60 seconds");
        }
        if !(0.0..=3600.0).contains(&self.publish_hook_cache) {
            bail!("publish_hook_cache must be between 0 and 3600 seconds");
        }
        if !(1..=100_000).contains(&self.max_publishers)
            || !(1..=100_000).contains(&self.max_publishers_per_ip)
        {
            bail!("max_publishers and max_publishers_per_ip must be between 1 and 100000");
        }
        self.http_limits.validate()?;
        if !(128..=0xFF_FFFF).contains(&self.rtmp_max_chunk_size) {
            bail!("rtmp_max_chunk_size must be between 128 and 16777215");
        }
        if !(4096..=0xFF_FFFF).contains(&self.rtmp_max_message_size) {
            bail!("rtmp_max_message_size must be between 4096 and 16777215");
        }
        if !(1..=10_000).contains(&self.publish_hook_max_in_flight) {
            bail!("publish_hook_max_in_flight must be between 1 and 10000");
        }
        if self.rtmps_cert.is_some() != self.rtmps_key.is_some() {
            bail!("rtmps_cert and rtmps_key go together (RTMPS is on when both are set)");
        }
        if !(0.1..=2.0).contains(&self.part_target()) {
            bail!("part_target must be between 0.1 and 2.0 seconds");
        }
        if !(1..=10).contains(&self.target_duration) {
            bail!("target_duration must be between 1 and 10 seconds");
        }
        if self.part_target() * 2.0 > f64::from(self.target_duration) {
            bail!("part_target must be at most half of target_duration");
        }
        if !(2..=100).contains(&self.window_segments) {
            bail!("window_segments must be between 2 and 100");
        }
        for (what, v) in [
            ("grace_period", self.grace_period),
            ("rtmp_handshake_timeout", self.rtmp_handshake_timeout),
            ("rtmp_idle_timeout", self.rtmp_idle_timeout),
            ("ended_linger", self.ended_linger),
            ("srt_idle_timeout", self.srt_idle_timeout),
            ("viewer_window", self.viewer_window),
        ] {
            if !(0.0..=86_400.0).contains(&v) {
                bail!("{what} must be between 0 and 86400 seconds");
            }
        }
        if !(20..=8000).contains(&self.srt_latency_ms) {
            bail!("srt_latency_ms must be between 20 and 8000");
        }
        let passphrases = self
            .streams
            .iter()
            .filter_map(|s| s.srt_passphrase.as_ref())
            .chain(self.srt_passphrase.as_ref());
        for p in passphrases {
            if !(10..=79).contains(&p.len()) {
                bail!("SRT passphrases must be 10 to 79 characters long");
            }
        }
        let mut ids = std::collections::HashSet::from(["source"]);
        if self.copy_renditions.len() > 8 {
            bail!("copy_renditions: at most 8");
        }
        for id in &self.copy_renditions {
            if StreamName::new(id).is_none() || id.len() > 32 {
                bail!("copy_renditions: {id:?} must be 1-32 characters of A-Z a-z 0-9 _ -");
            }
            if !ids.insert(id.as_str()) {
                bail!("copy_renditions: {id:?} is taken (\"source\" or listed twice)");
            }
        }
        if let Some(ladder) = self.ladder()? {
            for r in ladder.rungs() {
                if !ids.insert(r.name.as_str()) {
                    bail!(
                        "transcode rung {:?}: the id is taken (\"source\" or a copy rendition)",
                        r.name
                    );
                }
            }
        }
        if let Some(t) = &self.transcode {
            if let Some(n) = t.threads_per_rung {
                if !(1..=64).contains(&n) {
                    bail!("transcode.threads_per_rung must be between 1 and 64");
                }
            }
            t.backend()?;
            if t.max_lag.is_some_and(|v| !(0.1..=60.0).contains(&v)) {
                bail!("transcode.max_lag must be between 0.1 and 60 seconds");
            }
            if t.max_rungs.is_some_and(|n| n > 10_000) {
                bail!("transcode.max_rungs must be at most 10000");
            }
            for (key, v) in [
                ("hysteresis", t.hysteresis),
                ("quiet_period", t.quiet_period),
            ] {
                if v.is_some_and(|v| !(0.0..=86_400.0).contains(&v)) {
                    bail!("transcode.{key} must be between 0 and 86400 seconds");
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for s in &self.streams {
            if StreamName::new(&s.name).is_none() {
                bail!(
                    "stream name {:?} must be 1-64 characters of A-Z a-z 0-9 _ -",
                    s.name
                );
            }
            if s.key.len() < 8 {
                bail!(
                    "the key of stream {:?} is too short (8 characters at least)",
                    s.name
                );
            }
            if !names.insert(&s.name) {
                bail!("stream {:?} is declared twice", s.name);
            }
            if !keys.insert(&s.key) {
                bail!("two streams share a key");
            }
        }
        Ok(())
    }

    /// The configured keys; with none and no publish hook, the development key.
    pub fn stream_keys(&self) -> anyhow::Result<Vec<(StreamName, StreamKey)>> {
        if self.streams.is_empty() && self.publish_hook.is_none() {
            let name = StreamName::new(DEV_STREAM).context("dev stream name")?;
            return Ok(vec![(name, StreamKey::new(DEV_KEY))]);
        }
        self.streams
            .iter()
            .map(|s| {
                let name = StreamName::new(&s.name).context("invalid stream name")?;
                Ok((name, StreamKey::new(s.key.clone())))
            })
            .collect()
    }

    /// The validated ladder, if `[transcode]` is configured.
    pub fn ladder(&self) -> anyhow::Result<Option<transcode::ladder::Ladder>> {
        let Some(t) = &self.transcode else {
            return Ok(None);
        };
        if t.rungs.is_empty() && t.tiers.is_empty() {
            return Ok(Some(transcode::ladder::Ladder::standard()));
        }
        let rungs = t
            .rungs
            .iter()
            .map(|r| transcode::Rung {
                name: r.name.clone(),
                height: r.height,
                bitrate: r.bitrate_kbps.saturating_mul(1000),
                max_fps: r
                    .max_fps
                    .unwrap_or(if r.height > 720 { 60.0 } else { 30.0 }),
            })
            .collect();
        let tiers = t
            .tiers
            .iter()
            .map(|t| transcode::ladder::Tier {
                min_viewers: t.min_viewers,
                rungs: t.rungs.clone(),
            })
            .collect();
        transcode::ladder::Ladder::new(rungs, tiers)
            .map(Some)
            .context("[transcode]")
    }

    /// Each configured stream's priority.
    pub fn priorities(&self) -> std::collections::HashMap<String, Priority> {
        self.streams
            .iter()
            .map(|s| (s.name.clone(), s.priority))
            .collect()
    }

    pub fn grace_period(&self) -> Duration {
        secs(self.grace_period)
    }

    pub fn origin_config(&self) -> origin::OriginConfig {
        origin::OriginConfig {
            part_target: secs(self.part_target()),
            min_target_duration: self.target_duration,
            window_segments: self.window_segments,
            ended_linger: secs(self.ended_linger),
        }
    }

    pub fn edges(&self) -> origin::edges::Edges {
        origin::edges::Edges::new(
            self.edge_token.clone(),
            Duration::from_secs(4),
            secs(self.viewer_window),
        )
    }

    pub fn srt_config(&self) -> ingest::srt::SrtConfig {
        ingest::srt::SrtConfig {
            latency: Duration::from_millis(u64::from(self.srt_latency_ms)),
            passphrase: self.srt_passphrase.clone(),
            stream_passphrases: self
                .streams
                .iter()
                .filter_map(|s| Some((StreamName::new(&s.name)?, s.srt_passphrase.clone()?)))
                .collect(),
            idle_timeout: secs(self.srt_idle_timeout),
            ..Default::default()
        }
    }

    pub fn rtmp_config(&self) -> ingest::rtmp::RtmpConfig {
        ingest::rtmp::RtmpConfig {
            handshake_timeout: secs(self.rtmp_handshake_timeout),
            idle_timeout: secs(self.rtmp_idle_timeout),
            chunks: ingest::chunk_guard::ChunkLimits {
                max_chunk_size: self.rtmp_max_chunk_size,
                max_message_size: self.rtmp_max_message_size,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// `ferrocast edge` configuration (TOML, all keys optional except the origin, which may come
/// from `--origin`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeFileConfig {
    /// Origin base URL, e.g. `http://origin:8080`.
    pub origin: Option<String>,
    /// HTTP listen address.
    pub http: String,
    /// The URL viewers reach this edge at (for the origin's director); default
    /// `http(s)://<listen address>`.
    pub public_url: Option<String>,
    /// Edge id in reports and logs (default: random).
    pub id: Option<String>,
    /// Shared secret for viewer reports (the origin's `edge_token`).
    pub token: Option<String>,
    /// Cache memory budget in MiB.
    pub cache_mb: usize,
    /// PEM certificate chain and key: serve HTTPS with HTTP/2 (ALPN) instead of plain HTTP.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Seconds between viewer reports.
    pub report_interval: f64,
    /// Viewers = distinct sessions seen within this many seconds.
    pub viewer_window: f64,
    /// Seconds to wait for the origin on a playlist before serving the last good copy.
    pub stale_after: f64,
    /// `[http_limits]`.
    pub http_limits: HttpLimitsConfig,
}

impl Default for EdgeFileConfig {
    fn default() -> Self {
        EdgeFileConfig {
            origin: None,
            http: "0.0.0.0:8081".into(),
            public_url: None,
            id: None,
            token: None,
            cache_mb: 256,
            tls_cert: None,
            tls_key: None,
            report_interval: 1.0,
            viewer_window: 15.0,
            stale_after: 2.0,
            http_limits: HttpLimitsConfig::default(),
        }
    }
}

impl EdgeFileConfig {
    pub fn load(path: &Path) -> anyhow::Result<EdgeFileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let origin = self.origin.as_deref().unwrap_or("");
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            bail!("the origin must be an http:// or https:// URL (--origin or `origin`)");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("tls_cert and tls_key go together");
        }
        self.http_limits.validate()?;
        if !(1..=1 << 20).contains(&self.cache_mb) {
            bail!("cache_mb must be between 1 and 1048576");
        }
        for (what, v) in [
            ("report_interval", self.report_interval),
            ("viewer_window", self.viewer_window),
            ("stale_after", self.stale_after),
        ] {
            if !(0.05..=3600.0).contains(&v) {
                bail!("{what} must be between 0.05 and 3600 seconds");
            }
        }
        Ok(())
    }

    pub fn edge_config(&self, bound: std::net::SocketAddr) -> edge::EdgeConfig {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let default_url = if bound.ip().is_unspecified() {
            format!("{scheme}://127.0.0.1:{}", bound.port())
        } else {
            format!("{scheme}://{bound}")
        };
        let mut c = edge::EdgeConfig::new(
            self.origin.as_deref().unwrap_or_default(),
            self.public_url.as_deref().unwrap_or(&default_url),
        );
        if let Some(id) = &self.id {
            c.id = id.clone();
        }
        c.token = self.token.clone();
        c.cache_bytes = self.cache_mb << 20;
        c.report_interval = secs(self.report_interval);
        c.viewer_window = secs(self.viewer_window);
        c.stale_after = secs(self.stale_after);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses_and_validates() {
        let c: Config = toml::from_str(include_str!("../deploy/origin.toml")).unwrap();
        c.validate().unwrap();
        assert!(!c.streams.is_empty());
    }

    #[test]
    fn the_deployment_configs_parse_and_validate() {
        for (what, text) in [
            ("compose", include_str!("../deploy/origin.compose.toml")),
            ("k8s", include_str!("../deploy/k8s/origin.toml")),
        ] {
            let c: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        for (what, text) in [
            ("compose", include_str!("../deploy/edge.compose.toml")),
            ("k8s", include_str!("../deploy/k8s/edge.toml")),
        ] {
            let c: EdgeFileConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("rtmpp = \"x\"").is_err());
        let c: Config = toml::from_str("part_target = 5.0").unwrap();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str("[[streams]]\nname = \"a b\"\nkey = \"12345678\"").unwrap();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str("[[streams]]\nname = \"ab\"\nkey = \"short\"").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn sample_edge_config_parses_and_validates() {
        let c: EdgeFileConfig = toml::from_str(include_str!("../deploy/edge.toml")).unwrap();
        c.validate().unwrap();
        assert!(toml::from_str::<EdgeFileConfig>("originn = \"x\"").is_err());
        let c: EdgeFileConfig = toml::from_str("origin = \"ftp://x\"").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_latency_profile_sets_the_part_target_unless_given() {
        let c: Config = toml::from_str("latency_profile = \"lowest\"").unwrap();
        c.validate().unwrap();
        assert_eq!(c.part_target(), 0.21);
        assert_eq!(Config::default().part_target(), 0.333);
        let c: Config = toml::from_str("latency_profile = \"lowest\"\npart_target = 0.25").unwrap();
        assert_eq!(c.part_target(), 0.25);
        assert!(toml::from_str::<Config>("latency_profile = \"fastest\"").is_err());
    }

    #[test]
    fn no_streams_means_dev_key() {
        let keys = Config::default().stream_keys().unwrap();
        assert_eq!(keys[0].0.as_str(), DEV_STREAM);
        assert!(keys[0].1.matches(DEV_KEY));
    }
}
