//! Shared harness for the integration tests: start the real `ferrocast` binary on ephemeral
//! ports, publish with the real ffmpeg CLI, follow LL-HLS playlists like a player, and check
//! media with ffprobe/ffmpeg.
#![allow(dead_code, clippy::unwrap_used)]

pub mod conformance;
pub mod flv;
pub mod hls;
pub mod rtmp;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ferrocast serve`.
pub struct Server {
    child: Child,
    pub rtmp: SocketAddr,
    /// Where RTMPS listens, when the config turns it on.
    pub rtmps: Option<SocketAddr>,
    pub http: SocketAddr,
    pub srt: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `config` (TOML; listen addresses are forced to 127.0.0.1:0).
    pub fn start(config: &str) -> Server {
        Server::start_with_env(config, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ferrocast.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrocast"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .args([
                "--rtmp",
                "127.0.0.1:0",
                "--rtmps",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--srt",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start ferrocast");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ferrocast did not report its listen addresses");
        let field = |k: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap()
                .parse()
                .unwrap()
        };
        let rtmps = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("rtmps="))
            .map(|a| a.parse().unwrap());
        Server {
            rtmp: field("rtmp="),
            rtmps,
            http: field("http="),
            srt: field("srt="),
            child,
            dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// An ffmpeg SRT URL with the given stream id. ffmpeg 5.1 passes the `streamid` value
    /// through verbatim (no percent-decoding), so it is written raw.
    pub fn srt_url(&self, stream_id: &str) -> String {
        format!("srt://{}?streamid={stream_id}&latency=120000", self.srt)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Waits until the server log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

/// What the test publisher sends.
#[derive(Debug, Clone)]
pub struct Source {
    pub width: u32,
    pub height: u32,
    /// Frame rate as ffmpeg takes it: `30`, `30000/1001`.
    pub fps: &'static str,
    /// Keyframe interval in frames.
    pub gop: u32,
    pub seconds: f64,
    pub video_bitrate: &'static str,
    /// No video at all: AAC only (internet radio, a podcast).
    pub audio_only: bool,
}

impl Source {
    /// The acceptance source: 1280x720@30 H.264 High with B-frames, 2 s GOP, + AAC.
    pub fn hd(seconds: f64) -> Source {
        Source {
            width: 1280,
            height: 720,
            fps: "30",
            gop: 60,
            seconds,
            video_bitrate: "2500k",
            audio_only: false,
        }
    }

    pub fn small(seconds: f64) -> Source {
        Source {
            width: 640,
            height: 360,
            fps: "30",
            gop: 60,
            seconds,
            video_bitrate: "800k",
            audio_only: false,
        }
    }

    /// AAC only, 48 kHz stereo: `ffmpeg -f lavfi -i sine … -c:a aac`.
    pub fn audio(seconds: f64) -> Source {
        Source {
            audio_only: true,
            ..Source::small(seconds)
        }
    }

    /// ffmpeg arguments producing this source in real time (input side and codec side).
    pub fn ffmpeg_args(&self) -> Vec<String> {
        let s = |v: &str| v.to_owned();
        if self.audio_only {
            return [
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                &self.seconds.to_string(),
                "-c:a",
                "aac",
                "-b:a",
                "96k",
                "-ac",
                "2",
            ]
            .map(s)
            .to_vec();
        }
        vec![
            s("-hide_banner"),
            s("-loglevel"),
            s("error"),
            s("-re"),
            s("-f"),
            s("lavfi"),
            s("-i"),
            format!(
                "testsrc2=size={}x{}:rate={}",
                self.width, self.height, self.fps
            ),
            s("-f"),
            s("lavfi"),
            s("-i"),
            s("sine=frequency=440:sample_rate=48000"),
            s("-t"),
            format!("{}", self.seconds),
            s("-c:v"),
            s("libx264"),
            s("-profile:v"),
            s("high"),
            s("-preset"),
            s("veryfast"),
            s("-bf"),
            s("2"),
            s("-g"),
            self.gop.to_string(),
            s("-keyint_min"),
            self.gop.to_string(),
            s("-sc_threshold"),
            s("0"),
            s("-b:v"),
            s(self.video_bitrate),
            s("-pix_fmt"),
            s("yuv420p"),
            s("-c:a"),
            s("aac"),
            s("-b:a"),
            s("96k"),
            s("-ac"),
            s("2"),
        ]
    }
}

/// A real ffmpeg CLI publisher.
pub struct Publisher {
    child: Child,
}

impl Publisher {
    pub fn rtmp(url: &str, source: &Source) -> Publisher {
        Publisher::ffmpeg(source, &["-f", "flv", url])
    }

    /// The real ffmpeg CLI publishing MPEG-TS over SRT to `url` (see [`Server::srt_url`]).
    pub fn srt(url: &str, source: &Source) -> Publisher {
        Publisher::ffmpeg(source, &["-f", "mpegts", url])
    }

    /// The ffmpeg CLI with arguments of the test's own (a relay, an odd source).
    #[allow(dead_code)]
    pub fn command(args: &[String]) -> Publisher {
        let child = Command::new("ffmpeg")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg must be installed (apt-get install ffmpeg)");
        Publisher { child }
    }

    fn ffmpeg(source: &Source, output: &[&str]) -> Publisher {
        let child = Command::new("ffmpeg")
            .args(source.ffmpeg_args())
            .args(output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg must be installed (apt-get install ffmpeg)");
        Publisher { child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for ffmpeg to exit; returns whether it succeeded and its stderr.
    pub fn wait(mut self) -> (bool, String) {
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `parts` after `init` to a file in `dir` and returns its path.
pub fn write_media(dir: &Path, name: &str, init: &[u8], parts: &[&[u8]]) -> PathBuf {
    let path = dir.join(name);
    let mut data = init.to_vec();
    for p in parts {
        data.extend_from_slice(p);
    }
    std::fs::write(&path, data).unwrap();
    path
}

/// Fully decodes a file with ffmpeg; returns stderr if anything went wrong.
pub fn decode_errors(path: &Path) -> Option<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (!out.status.success() || !err.trim().is_empty()).then_some(err)
}

/// One demuxed packet as ffprobe reports it (timestamps in the stream's time base).
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub video: bool,
    pub pts: i64,
    pub dts: i64,
    pub keyframe: bool,
}

/// Lists packets with ffprobe (fails the test if ffprobe cannot parse the file).
pub fn packets(path: &Path) -> Vec<Packet> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=codec_type,pts,dts,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() < 4 {
                return None;
            }
            Some(Packet {
                video: f[0] == "video",
                pts: f[1].parse().ok()?,
                dts: f[2].parse().ok()?,
                keyframe: f[3].contains('K'),
            })
        })
        .collect()
}

/// A tokio runtime for tests that drive async clients from sync test functions.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub const KEY: &str = "test-key-0123456789";
pub const KEY2: &str = "other-key-0123456789";

/// A config with two streams: `cam` (KEY) and `other` (KEY2), plus extra TOML lines.
pub fn config(extra: &str) -> String {
    format!(
        "{extra}\n[[streams]]\nname = \"cam\"\nkey = \"{KEY}\"\n\n[[streams]]\nname = \"other\"\nkey = \"{KEY2}\"\n"
    )
}

/// The media checks every ingest path must pass (RTMP now, SRT later share them): every part
/// and segment parses and its frames decode, segments start with keyframes, segment bytes are
/// exactly their parts' concatenation, INDEPENDENT=YES marks exactly the parts that start with
/// a keyframe, and audio and video timestamps run on without gaps or overlaps across segments.
pub fn check_followed_media(f: &hls::Followed, frame_ticks: i64) {
    let dir = tempfile::tempdir().unwrap();
    assert!(f.errors.is_empty(), "fetch errors: {:?}", f.errors);
    assert!(!f.segments.is_empty(), "no complete segments were seen");
    let init_for = |msn: u64| -> Vec<u8> {
        let map = f.entries[&msn]
            .map
            .clone()
            .expect("segment without EXT-X-MAP");
        f.inits[&map].clone()
    };
    // Segments: decode, keyframe first, == concatenation of parts (when all parts were seen).
    let mut seg_packets = Vec::new();
    for (msn, bytes) in &f.segments {
        let path = write_media(dir.path(), &format!("{msn}.mp4"), &init_for(*msn), &[bytes]);
        if let Some(e) = decode_errors(&path) {
            panic!("segment {msn} does not decode: {e}");
        }
        let pk = packets(&path);
        let first_video = pk.iter().find(|p| p.video).expect("segment without video");
        assert!(
            first_video.keyframe,
            "segment {msn} does not start with a keyframe"
        );
        let entry = &f.entries[msn];
        if !entry.parts.is_empty()
            && (0..entry.parts.len()).all(|i| f.parts.contains_key(&(*msn, i)))
        {
            let concat: Vec<u8> = (0..entry.parts.len())
                .flat_map(|i| f.parts[&(*msn, i)].clone())
                .collect();
            assert!(
                concat == *bytes,
                "segment {msn} != concatenation of its {} parts",
                entry.parts.len()
            );
        }
        seg_packets.push((*msn, pk));
    }
    // Parts: parse; independent ones decode alone; INDEPENDENT=YES ⇔ starts with a keyframe.
    for ((msn, i), bytes) in &f.parts {
        let Some(entry) = f.entries.get(msn) else {
            continue;
        };
        let Some(listed) = entry.parts.get(*i) else {
            continue;
        };
        let path = write_media(
            dir.path(),
            &format!("{msn}.{i}.mp4"),
            &init_for(*msn),
            &[bytes],
        );
        let pk = packets(&path);
        let first_video = pk.iter().find(|p| p.video).expect("part without video");
        assert_eq!(
            listed.independent, first_video.keyframe,
            "part {msn}.{i}: INDEPENDENT={} but first frame keyframe={}",
            listed.independent, first_video.keyframe
        );
        if listed.independent {
            if let Some(e) = decode_errors(&path) {
                panic!("independent part {msn}.{i} does not decode: {e}");
            }
        }
    }
    // Continuity across consecutive segments (same discontinuity domain).
    for w in seg_packets.windows(2) {
        let ((m0, a), (m1, b)) = (&w[0], &w[1]);
        if m1 != &(m0 + 1) || f.entries[m1].discontinuity {
            continue;
        }
        let last_v = a.iter().filter(|p| p.video).map(|p| p.dts).max().unwrap();
        let first_v = b.iter().filter(|p| p.video).map(|p| p.dts).min().unwrap();
        let step = first_v - last_v;
        assert!(
            (step - frame_ticks).abs() <= frame_ticks / 10,
            "video gap between segments {m0} and {m1}: {step} ticks (frame {frame_ticks})"
        );
        let last_a = a.iter().filter(|p| !p.video).map(|p| p.pts).max();
        let first_a = b.iter().filter(|p| !p.video).map(|p| p.pts).min();
        if let (Some(la), Some(fa)) = (last_a, first_a) {
            assert_eq!(fa - la, 1024, "audio gap between segments {m0} and {m1}");
        }
    }
}

/// `deploy/local-cluster.sh`: origin + N edges as local processes (the compose topology).
pub struct Cluster {
    script: Child,
    pub origin_pid: u32,
    pub origin_http: SocketAddr,
    pub origin_rtmp: SocketAddr,
    pub origin_srt: SocketAddr,
    /// (pid, http address, id) per edge.
    pub edges: Vec<(u32, SocketAddr, String)>,
    pub origin_log: PathBuf,
    pub edge_logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the cluster with `edges` edges; `config` is the origin's TOML; `extra` more
    /// script options. The origin logs its access log (for counting upstream fetches).
    pub fn start(edges: usize, config: &str, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("origin.toml");
        std::fs::write(&cfg, config).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .args([
                "--edges",
                &edges.to_string(),
                "--bin",
                env!("CARGO_BIN_EXE_ferrocast"),
                "--config",
            ])
            .arg(&cfg)
            .args(extra)
            .env("RUST_LOG", "info,ferrocast::access=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start local-cluster.sh");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let field = |line: &str, k: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_default()
                .to_owned()
        };
        let mut c = Cluster {
            script: child,
            origin_pid: 0,
            origin_http: "0.0.0.0:0".parse().unwrap(),
            origin_rtmp: "0.0.0.0:0".parse().unwrap(),
            origin_srt: "0.0.0.0:0".parse().unwrap(),
            edges: Vec::new(),
            origin_log: PathBuf::new(),
            edge_logs: Vec::new(),
            _dir: dir,
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("cluster did not start");
            if line.starts_with("origin pid=") {
                c.origin_pid = field(&line, "pid=").parse().unwrap();
                c.origin_http = field(&line, "http=").parse().unwrap();
                c.origin_rtmp = field(&line, "rtmp=").parse().unwrap();
                c.origin_srt = field(&line, "srt=").parse().unwrap();
            } else if line.starts_with("origin log=") {
                c.origin_log = PathBuf::from(field(&line, "log="));
            } else if line.starts_with("edge log=") {
                c.edge_logs.push(PathBuf::from(field(&line, "log=")));
            } else if line.starts_with("edge pid=") {
                c.edges.push((
                    field(&line, "pid=").parse().unwrap(),
                    field(&line, "http=").parse().unwrap(),
                    field(&line, "id="),
                ));
            } else if line == "cluster ready" {
                return c;
            }
        }
    }

    pub fn origin_base(&self) -> String {
        format!("http://{}", self.origin_http)
    }

    pub fn edge_base(&self, i: usize) -> String {
        format!("http://{}", self.edges[i].1)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.origin_rtmp)
    }

    pub fn origin_log(&self) -> String {
        std::fs::read_to_string(&self.origin_log).unwrap_or_default()
    }

    pub fn edge_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.edge_logs[i]).unwrap_or_default()
    }

    /// Sends a signal to a node (`STOP`, `CONT`, `KILL`).
    pub fn signal(pid: u32, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status();
    }

    /// Origin fetches per (edge id, request URI) from the origin's access log.
    pub fn origin_fetches(&self) -> std::collections::HashMap<(String, String), usize> {
        let mut out = std::collections::HashMap::new();
        for line in self
            .origin_log()
            .lines()
            .filter(|l| l.contains("ferrocast::access"))
        {
            let edge = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("edge="))
                .unwrap_or("-");
            let uri = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("uri="))
                .unwrap_or("");
            *out.entry((edge.to_owned(), uri.to_owned())).or_default() += 1;
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        Cluster::signal(self.origin_pid, "CONT");
        Cluster::signal(self.script.id(), "TERM");
        let _ = self.script.wait();
    }
}
