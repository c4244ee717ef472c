//! The ffmpeg side of the ladder (libavcodec through `ffmpeg-next`), on dedicated threads,
//! never on the async runtime:
//!
//! - one **decoder thread** per stream reads the source fan-out, decodes H.264 once (frame
//!   threads, count set explicitly: libavcodec defaults to one), and hands each decoded picture
//!   to every rung by reference (`Arc`, no pixel copy), with the decision whether it is at a
//!   source keyframe; everything else (AAC config and frames, publisher start/stop) goes to
//!   every rung in order, so AAC is passed through untouched;
//! - one **rung thread** per rung scales (its scaler is created there: it is not `Send`) and
//!   encodes with libx264 (`tune=zerolatency`, no B-frames, closed GOP, scenecut off,
//!   `forced-idr`): an IDR exactly at each source keyframe's presentation time and nowhere
//!   else, so every rendition cuts segments and parts at the same media times. Output goes
//!   into the rung's own fan-out, which the origin packages like the source; the passed-through
//!   audio waits for the rung's (later) video, at most [`AUDIO_HOLD`].
//!
//! Rungs come and go while the stream runs ([`Transcoder::add`], [`Transcoder::remove`]): a
//! new rung gets the stream's state (publisher, AAC config) and starts at the next source
//! keyframe; the others are not touched. With no rung the decoder does not decode.
//!
//! Queues are bounded: the decoder's input is a fan-out subscription (a decoder that falls
//! behind lags to the next keyframe, counted), and each rung's input channel holds
//! [`RUNG_QUEUE`] pictures; a rung that cannot keep up makes the decoder wait, never memory
//! grow. A new SPS mid-stream (a resolution change) rebuilds the decoder, and each rung
//! rebuilds its scaler and, when its output size changes, its encoder (new avcC → new init and
//! a discontinuity downstream).

use crate::ladder::{rung_size, Decimator};
use crate::stats::{thread_name, CpuClock, RungStats};
use crate::{RenditionFeed, Rung, RENDITION_QUEUE};
use bytes::Bytes;
use ffmpeg_next as ff;
use media::fanout::{Fanout, StreamEvent, StreamEventKind, Subscription};
use media::{AvcConfig, CodecConfig, Frame, Timestamp, Track, VIDEO_TIMESCALE};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Decoded pictures waiting per rung.
pub const RUNG_QUEUE: usize = 8;

/// What a rung thread gets from the decoder thread.
enum Job {
    Picture {
        generation: u64,
        frame: Arc<ff::frame::Video>,
        /// The picture is at a source keyframe: the rung's IDR goes here.
        idr: bool,
        /// The source's frame rate, when its SPS says.
        fps: Option<f64>,
        /// When the source frame that completed this picture arrived at ingest.
        at: Instant,
    },
    /// Anything but video (audio, AAC config, publisher start/stop): passed through.
    Pass(StreamEvent),
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ff::init() {
            tracing::error!(error = %e, "libav initialisation failed");
        }
        ff::util::log::set_level(ff::util::log::Level::Error);
    });
}

/// Which H.264 encoder the rungs use (`--transcoder`, `[transcode] transcoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// NVENC where it opens, libx264 otherwise (per rung: a GPU out of sessions falls back).
    #[default]
    Auto,
    /// libx264 only.
    Cpu,
    /// NVENC; start-up fails when it cannot open (rungs that later cannot get a session
    /// still fall back to libx264, with a warning).
    Nvenc,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "cpu" => Ok(Backend::Cpu),
            "nvenc" => Ok(Backend::Nvenc),
            other => Err(format!("transcoder {other:?}: one of auto, cpu, nvenc")),
        }
    }
}

const X264: &str = "libx264";
const NVENC: &str = "h264_nvenc";

/// Whether NVENC opens here, decided once by opening it (being compiled into libavcodec
/// proves nothing: the driver, a GPU and a free session are needed too). `Err` says why not.
pub fn nvenc_usable() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            init();
            let rung = Rung {
                name: "probe".into(),
                height: 144,
                bitrate: 200_000,
                max_fps: 30.0,
            };
            open_video_encoder(NVENC, &rung, (256, 144), 30.0, 1)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Checks a backend at start-up: `nvenc` must open; `auto` logs what it will use.
pub fn check_backend(b: Backend) -> Result<(), String> {
    match (b, nvenc_usable()) {
        (Backend::Cpu, _) => Ok(()),
        (Backend::Nvenc, Ok(())) | (Backend::Auto, Ok(())) => {
            tracing::info!("transcoding on NVENC (h264_nvenc opened)");
            Ok(())
        }
        (Backend::Nvenc, Err(e)) => Err(format!(
            "--transcoder nvenc: h264_nvenc does not open here ({e}); use auto or cpu"
        )),
        (Backend::Auto, Err(e)) => {
            tracing::info!(reason = %e, "NVENC not usable: transcoding with libx264");
            Ok(())
        }
    }
}

/// What the decoder thread is told while it runs.
enum Control {
    /// A new rung: it gets the stream's state (publisher, AAC config), then pictures from the
    /// next source keyframe on.
    Add(String, SyncSender<Job>, Arc<RungStats>),
    /// Stop feeding this rung: its thread flushes its encoder and ends its rendition.
    Remove(String),
}

/// One stream's transcoder: a decoder thread, and rungs added and removed while it runs
/// (the ladder follows the viewers). Dropping it changes nothing; the threads end with the
/// source.
#[derive(Debug)]
pub struct Transcoder {
    stream_name: String,
    metrics: media::fanout::FanoutMetrics,
    threads_per_rung: usize,
    backend: Backend,
    control: Mutex<std::sync::mpsc::Sender<Control>>,
    alive: Arc<AtomicBool>,
    decoder: Arc<RungStats>,
}

impl Transcoder {
    /// Starts the decoder thread for `source` (it decodes only while some rung is fed).
    /// Call from within the tokio runtime.
    pub fn start(
        source: &Arc<Fanout>,
        stream_name: &str,
        threads_per_rung: usize,
        backend: Backend,
    ) -> std::io::Result<Transcoder> {
        init();
        let (tx, rx) = std::sync::mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let input = source.subscribe("transcode:decoder");
        let handle = tokio::runtime::Handle::current();
        let span = tracing::info_span!("decoder", stream = stream_name);
        let flag = Arc::clone(&alive);
        let decoder = Arc::new(RungStats::default());
        let stats = Arc::clone(&decoder);
        let name = thread_name("dec");
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _g = span.enter();
                let mut clock = CpuClock::new(&name, true);
                decode_loop(input, &handle, &rx, &mut |force| {
                    if let Some(t) = clock.sample(force) {
                        stats.set_cpu(t);
                    }
                });
                flag.store(false, Ordering::Relaxed);
            })?;
        Ok(Transcoder {
            stream_name: stream_name.to_owned(),
            metrics: source.metrics().clone(),
            threads_per_rung: threads_per_rung.max(1),
            backend,
            control: Mutex::new(tx),
            alive,
            decoder,
        })
    }

    /// The decoder runs (the source has not ended).
    pub fn is_running(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// The decoder's figures (its CPU time: the decode every rung shares).
    pub fn decoder_stats(&self) -> &Arc<RungStats> {
        &self.decoder
    }

    /// Starts a rung: its thread, and its rendition's fan-out (from the next source keyframe),
    /// with the figures its thread keeps.
    pub fn add(&self, rung: &Rung) -> std::io::Result<(RenditionFeed, Arc<RungStats>)> {
        let out = Fanout::new(&self.stream_name, RENDITION_QUEUE, self.metrics.clone());
        let (tx, rx) = sync_channel::<Job>(RUNG_QUEUE);
        let writer = Arc::clone(&out);
        let r = rung.clone();
        let (threads, backend) = (self.threads_per_rung, self.backend);
        let stats = Arc::new(RungStats::default());
        let theirs = Arc::clone(&stats);
        let span = tracing::info_span!("rung", stream = %self.stream_name, rendition = %rung.name);
        let name = thread_name("rung");
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _g = span.enter();
                tracing::info!("rung started");
                RungEncoder::new(r, threads, backend, theirs, &name).run(rx, &writer);
                writer.close();
                tracing::info!("rung stopped");
            })?;
        let sent = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Control::Add(rung.name.clone(), tx, Arc::clone(&stats)));
        if sent.is_err() {
            out.close(); // the source has ended
        }
        Ok((
            RenditionFeed {
                id: rung.name.clone(),
                stream: out,
            },
            stats,
        ))
    }

    /// Stops a rung (its rendition ends once the encoder is flushed).
    pub fn remove(&self, name: &str) {
        let _ = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Control::Remove(name.to_owned()));
    }
}

/// The decoder thread: source events in, pictures and pass-through events out to every rung.
fn decode_loop(
    mut input: Subscription,
    rt: &tokio::runtime::Handle,
    control: &std::sync::mpsc::Receiver<Control>,
    cpu: &mut dyn FnMut(bool),
) {
    let mut rungs: Vec<Feed> = Vec::new();
    let mut decoder: Option<(AvcConfig, ff::decoder::Video)> = None;
    let mut fps = None;
    // The stream's state, for a rung added mid-stream.
    let mut publisher: Option<StreamEvent> = None;
    let mut audio_config: Option<StreamEvent> = None;
    // Decoding (re)starts at a keyframe: at first, and after a time without rungs.
    let mut need_key = true;
    // Presentation times of source keyframes sent to the decoder and not yet decoded.
    let mut keys: VecDeque<i64> = VecDeque::new();
    while let Some(ev) = rt.block_on(input.recv()) {
        cpu(false);
        while let Ok(c) = control.try_recv() {
            match c {
                Control::Add(name, tx, stats) => {
                    for e in publisher.iter().chain(audio_config.iter()) {
                        let _ = tx.send(Job::Pass(e.clone()));
                    }
                    rungs.retain(|f| f.name != name);
                    rungs.push(Feed { name, tx, stats });
                }
                Control::Remove(name) => rungs.retain(|f| f.name != name),
            }
        }
        match &ev.kind {
            StreamEventKind::Config(CodecConfig::Avc(c)) => {
                if decoder.as_ref().map(|(old, _)| &old.record) != Some(&c.record) {
                    match open_decoder(c) {
                        Ok(d) => {
                            tracing::info!(
                                width = c.info.width,
                                height = c.info.height,
                                "decoder opened"
                            );
                            decoder = Some((c.clone(), d));
                            fps = c
                                .info
                                .frame_rate
                                .map(|(n, d)| f64::from(n) / f64::from(d.max(1)));
                            keys.clear();
                            need_key = true;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot open the H.264 decoder: no transcoded video until the next valid config");
                            decoder = None;
                        }
                    }
                }
            }
            StreamEventKind::Frame(f) if f.track == Track::Video => {
                if rungs.is_empty() {
                    need_key = true; // nobody to feed: no decoding
                    continue;
                }
                let Some((_, dec)) = decoder.as_mut() else {
                    continue;
                };
                if need_key {
                    if !f.keyframe {
                        continue;
                    }
                    need_key = false;
                }
                let pts = f.pts.rescale(VIDEO_TIMESCALE);
                if f.keyframe {
                    keys.push_back(pts);
                }
                let mut pkt = ff::Packet::copy(&f.data);
                pkt.set_pts(Some(pts));
                pkt.set_dts(Some(f.dts.rescale(VIDEO_TIMESCALE)));
                if f.keyframe {
                    pkt.set_flags(ff::packet::Flags::KEY);
                }
                if let Err(e) = dec.send_packet(&pkt) {
                    tracing::debug!(error = %e, "decoder refused a packet");
                }
                loop {
                    let mut pic = ff::frame::Video::empty();
                    if dec.receive_frame(&mut pic).is_err() {
                        break;
                    }
                    let Some(p) = pic.pts().or(pic.timestamp()) else {
                        continue;
                    };
                    while keys.front().is_some_and(|&k| k < p) {
                        keys.pop_front();
                    }
                    let idr = keys.front() == Some(&p);
                    if idr {
                        keys.pop_front();
                    }
                    let frame = Arc::new(pic);
                    let (generation, at) = (ev.generation, ev.at);
                    send_all(&mut rungs, &|| Job::Picture {
                        generation,
                        frame: Arc::clone(&frame),
                        idr,
                        fps,
                        at,
                    });
                }
            }
            kind => {
                match kind {
                    StreamEventKind::PublisherStarted { .. } => {
                        publisher = Some(ev.clone());
                    }
                    StreamEventKind::Config(CodecConfig::Aac(_)) => audio_config = Some(ev.clone()),
                    StreamEventKind::PublisherGone => publisher = None,
                    _ => {}
                }
                send_all(&mut rungs, &|| Job::Pass(ev.clone()));
            }
        }
    }
    cpu(true);
}

/// A rung as the decoder thread feeds it.
struct Feed {
    name: String,
    tx: SyncSender<Job>,
    stats: Arc<RungStats>,
}

/// Gives every rung a job; a rung whose thread has gone is dropped. A full queue makes the
/// decoder wait (counted: a rung that cannot keep up).
fn send_all(rungs: &mut Vec<Feed>, job: &dyn Fn() -> Job) {
    rungs.retain(|f| match f.tx.try_send(job()) {
        Ok(()) => true,
        Err(TrySendError::Full(j)) => {
            f.stats.waited();
            f.tx.send(j).is_ok()
        }
        Err(TrySendError::Disconnected(_)) => false,
    });
}

fn open_decoder(c: &AvcConfig) -> Result<ff::decoder::Video, ff::Error> {
    let codec = ff::decoder::find(ff::codec::Id::H264).ok_or(ff::Error::DecoderNotFound)?;
    let mut ctx = ff::codec::context::Context::new_with_codec(codec);
    set_extradata(&mut ctx, &c.record)?;
    let mut t = ff::codec::threading::Config::kind(ff::codec::threading::Type::Frame);
    t.count = 2;
    ctx.set_threading(t);
    let mut dec = ctx.decoder();
    dec.set_packet_time_base(ff::Rational::new(1, VIDEO_TIMESCALE as i32));
    dec.video()
}

/// Sets a codec context's extradata (the avcC record); libavcodec frees it with the context.
#[allow(unsafe_code)]
fn set_extradata(ctx: &mut ff::codec::context::Context, data: &[u8]) -> Result<(), ff::Error> {
    let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: the buffer comes from av_mallocz (zeroed padding included), as avcodec requires
    // of extradata it will av_freep; the context is not opened yet, so nothing reads it now.
    unsafe {
        let p = ff::ffi::av_mallocz(data.len() + padding).cast::<u8>();
        if p.is_null() {
            return Err(ff::Error::Other {
                errno: ff::error::ENOMEM,
            });
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
        let c = ctx.as_mut_ptr();
        (*c).extradata = p;
        (*c).extradata_size = i32::try_from(data.len()).unwrap_or(0);
    }
    Ok(())
}

/// Reads an opened encoder's extradata (libx264's Annex B SPS and PPS with a global header).
#[allow(unsafe_code)]
fn extradata(ctx: &ff::codec::context::Context) -> Bytes {
    // SAFETY: extradata/extradata_size describe a buffer owned by the opened context, which
    // outlives this copy.
    unsafe {
        let c = ctx.as_ptr();
        if (*c).extradata.is_null() || (*c).extradata_size <= 0 {
            return Bytes::new();
        }
        Bytes::copy_from_slice(std::slice::from_raw_parts(
            (*c).extradata,
            (*c).extradata_size as usize,
        ))
    }
}

/// One rung's scaler and encoder, rebuilt when the source size changes.
struct RungEncoder {
    rung: Rung,
    threads: usize,
    backend: Backend,
    stats: Arc<RungStats>,
    cpu: CpuClock,
    /// Pictures sent to the encoder and not yet out: presentation time, source arrival.
    pending: VecDeque<(i64, Instant)>,
    /// Scaler and its input (format, width, height).
    scaler: Option<(
        ff::software::scaling::Context,
        (ff::format::Pixel, u32, u32),
    )>,
    /// Encoder, its output size.
    encoder: Option<(ff::encoder::Video, (u32, u32))>,
    /// NVENC failed on this rung: libx264 from now on.
    nvenc_failed: bool,
    decimator: Decimator,
    /// The config this rung last announced.
    announced: Option<AvcConfig>,
    /// An IDR is owed (the keyframe's picture was decimated or the encoder reopened).
    owe_idr: bool,
    generation: u64,
    /// Video has gone out: pass-through events flow. Until then the publisher start and the
    /// AAC config wait in `held` and audio frames are dropped, so a rung that never gets
    /// video (a source not larger than it) never appears as an audio-only rendition.
    started: bool,
    held: Vec<StreamEvent>,
    /// The last presentation time given to the encoder (x264 wants them rising).
    last_pts: Option<i64>,
    /// Pass-through events waiting for the encoded video to catch up: audio leaves no more
    /// than [`AUDIO_HOLD`] ahead of the rung's video (decode and encode delay it), so the
    /// packager never sees audio run ahead as if video had paused.
    waiting: VecDeque<StreamEvent>,
    /// Presentation time (90 kHz) of the last video frame sent.
    video_out: Option<i64>,
}

/// The most audio (90 kHz) held back for the rung's video; beyond it audio goes on alone (the
/// source stopped sending video).
const AUDIO_HOLD: i64 = VIDEO_TIMESCALE as i64 * 3 / 10;

fn audio_time(ev: &StreamEvent) -> Option<i64> {
    match &ev.kind {
        StreamEventKind::Frame(f) if f.track == Track::Audio => {
            Some(f.pts.rescale(VIDEO_TIMESCALE))
        }
        _ => None,
    }
}

impl RungEncoder {
    fn new(
        rung: Rung,
        threads: usize,
        backend: Backend,
        stats: Arc<RungStats>,
        thread: &str,
    ) -> RungEncoder {
        let decimator = Decimator::new(rung.max_fps, VIDEO_TIMESCALE);
        RungEncoder {
            rung,
            threads: threads.max(1),
            backend,
            stats,
            // libx264 runs on the calling thread alone with one thread (zerolatency: no
            // lookahead thread); with more it starts slice threads.
            cpu: CpuClock::new(thread, threads > 1),
            pending: VecDeque::new(),
            nvenc_failed: false,
            scaler: None,
            encoder: None,
            decimator,
            announced: None,
            owe_idr: true,
            generation: 0,
            started: false,
            held: Vec::new(),
            last_pts: None,
            waiting: VecDeque::new(),
            video_out: None,
        }
    }

    /// Sends the waiting pass-through events that may go: up to the first audio frame that
    /// is ahead of the video sent (unless audio has waited [`AUDIO_HOLD`]); all with `all`.
    fn release(&mut self, out: &Fanout, all: bool) {
        let newest = self.waiting.iter().rev().find_map(audio_time);
        while let Some(ev) = self.waiting.front() {
            let go = all
                || match audio_time(ev) {
                    None => true,
                    Some(t) => {
                        self.video_out.is_some_and(|v| t <= v)
                            || newest.is_some_and(|n| n - t > AUDIO_HOLD)
                    }
                };
            if !go {
                break;
            }
            if let Some(ev) = self.waiting.pop_front() {
                out.send(ev);
            }
        }
    }

    fn pass(&mut self, ev: StreamEvent, out: &Fanout) {
        if self.started {
            if matches!(
                ev.kind,
                StreamEventKind::PublisherStarted { .. } | StreamEventKind::PublisherGone
            ) {
                self.release(out, true);
                self.video_out = None;
                out.send(ev);
            } else {
                self.waiting.push_back(ev);
                self.release(out, false);
            }
            return;
        }
        match &ev.kind {
            StreamEventKind::PublisherStarted { .. } => {
                self.held.clear();
                self.held.push(ev);
            }
            StreamEventKind::Config(_) => {
                self.held
                    .retain(|h| !matches!(h.kind, StreamEventKind::Config(_)));
                self.held.push(ev);
            }
            StreamEventKind::PublisherGone => self.held.clear(),
            StreamEventKind::Frame(_) => {}
        }
    }

    fn run(mut self, rx: Receiver<Job>, out: &Fanout) {
        let mut opened_for: Option<(u32, u32)> = None;
        while let Ok(job) = rx.recv() {
            match job {
                Job::Pass(ev) => {
                    if let StreamEventKind::PublisherStarted { .. } = ev.kind {
                        self.generation = ev.generation;
                        // A new publisher may send anything: its first picture gets an IDR.
                        self.owe_idr = true;
                    }
                    self.pass(ev, out);
                }
                Job::Picture {
                    generation,
                    frame,
                    idr,
                    fps,
                    at,
                } => {
                    self.generation = generation;
                    let src = (frame.width(), frame.height());
                    let Some(size) = rung_size(src, self.rung.height) else {
                        if opened_for != Some(src) {
                            tracing::warn!(
                                source_width = src.0,
                                source_height = src.1,
                                "source not larger than this rung: no video on it"
                            );
                            opened_for = Some(src);
                        }
                        continue;
                    };
                    opened_for = Some(src);
                    let pts = frame.pts().unwrap_or(0);
                    if !self.decimator.keep(pts, idr) {
                        continue;
                    }
                    let started = Instant::now();
                    let before = self.last_pts;
                    match self.encode(&frame, size, idr, fps, at, out) {
                        Ok(()) => {
                            if self.last_pts == Some(pts) {
                                let media = before.map_or(0, |b| (pts - b).max(0));
                                self.stats.encoded(
                                    Duration::from_micros(
                                        u64::try_from(media).unwrap_or(0) * 100 / 9,
                                    ),
                                    started.elapsed(),
                                );
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "encoding failed: the encoder reopens at the next keyframe");
                            self.encoder = None;
                            self.owe_idr = true;
                        }
                    }
                    if let Some(t) = self.cpu.sample(false) {
                        self.stats.set_cpu(t);
                    }
                }
            }
        }
        self.flush(out);
        self.release(out, true);
        if let Some(t) = self.cpu.sample(true) {
            self.stats.set_cpu(t);
        }
    }

    fn encode(
        &mut self,
        frame: &ff::frame::Video,
        size: (u32, u32),
        idr: bool,
        fps: Option<f64>,
        at: Instant,
        out: &Fanout,
    ) -> Result<(), ff::Error> {
        let input = (frame.format(), frame.width(), frame.height());
        if self.scaler.as_ref().map(|(_, i)| *i) != Some(input) {
            let s = ff::software::scaling::Context::get(
                input.0,
                input.1,
                input.2,
                ff::format::Pixel::YUV420P,
                size.0,
                size.1,
                ff::software::scaling::Flags::BILINEAR,
            )?;
            self.scaler = Some((s, input));
        }
        let pts = frame.pts().unwrap_or(0);
        if self.last_pts.is_some_and(|l| pts <= l) {
            // Time went back (a new publisher, a splice): a new encoder at the next keyframe.
            if !idr {
                return Ok(());
            }
            self.flush(out);
        }
        if self.encoder.as_ref().map(|(_, s)| *s) != Some(size) {
            if !idr {
                return Ok(()); // a (re)opened encoder starts at a source keyframe
            }
            self.flush(out);
            let enc = self.open_encoder(size, fps)?;
            self.encoder = Some((enc, size));
            self.owe_idr = true;
        }
        let (Some((scaler, _)), Some((enc, _))) = (self.scaler.as_mut(), self.encoder.as_mut())
        else {
            return Ok(());
        };
        let mut pic = ff::frame::Video::empty();
        scaler.run(frame, &mut pic)?;
        pic.set_pts(frame.pts());
        // (Taken first: `idr || take(..)` would leave the debt for the next picture, a second
        // IDR right after the first.)
        let owed = std::mem::take(&mut self.owe_idr);
        let force = idr || owed;
        pic.set_kind(if force {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        enc.send_frame(&pic)?;
        self.pending.push_back((pts, at));
        if self.pending.len() > 256 {
            self.pending.pop_front(); // an encoder that never gives back a frame
        }
        self.last_pts = Some(pts);
        self.drain(out);
        Ok(())
    }

    /// Ends the current encoder: what it still holds goes out, then it is dropped.
    fn flush(&mut self, out: &Fanout) {
        if let Some((enc, _)) = self.encoder.as_mut() {
            let _ = enc.send_eof();
        }
        self.drain(out);
        // Its worker threads end with it: their time is read while they are there.
        if let Some(t) = self.cpu.sample(true) {
            self.stats.set_cpu(t);
        }
        self.encoder = None;
        self.last_pts = None;
        self.pending.clear();
    }

    fn open_encoder(
        &mut self,
        (width, height): (u32, u32),
        source_fps: Option<f64>,
    ) -> Result<ff::encoder::Video, ff::Error> {
        // The rate the decimator lets through: the source's divided by a whole number.
        let fps = match source_fps {
            Some(f) if f > 0.0 => f / (f / self.rung.max_fps).ceil().max(1.0),
            _ => self.rung.max_fps,
        };
        let try_nvenc = !self.nvenc_failed
            && match self.backend {
                Backend::Cpu => false,
                Backend::Nvenc => true,
                Backend::Auto => nvenc_usable().is_ok(),
            };
        let mut opened = None;
        if try_nvenc {
            match open_video_encoder(NVENC, &self.rung, (width, height), fps, self.threads) {
                Ok(e) => opened = Some((e, NVENC)),
                Err(e) => {
                    // Consumer GPUs cap concurrent sessions system-wide: this rung goes on
                    // the CPU for good.
                    tracing::warn!(error = %e, "h264_nvenc did not open: this rung falls back to libx264");
                    self.nvenc_failed = true;
                }
            }
        }
        let (opened, name) = match opened {
            Some(o) => o,
            None => (
                open_video_encoder(X264, &self.rung, (width, height), fps, self.threads)?,
                X264,
            ),
        };
        let annexb = extradata(&opened);
        let au = media::annexb::access_unit(&annexb);
        let (Some(sps), Some(pps)) = (au.sps, au.pps) else {
            return Err(ff::Error::InvalidData);
        };
        let config =
            AvcConfig::from_parameter_sets(sps, pps).map_err(|_| ff::Error::InvalidData)?;
        tracing::info!(encoder = name, width, height, bitrate = self.rung.bitrate, fps, codec = %config.codec_string(), "rung encoder opened");
        self.stats.set_encoder(name);
        self.announced = Some(config);
        Ok(opened)
    }

    /// Sends what the encoder has ready, as frames of the rung's fan-out (the config first).
    fn drain(&mut self, out: &Fanout) {
        let Some((enc, _)) = self.encoder.as_mut() else {
            return;
        };
        let mut ready = Vec::new();
        let mut pkt = ff::Packet::empty();
        while enc.receive_packet(&mut pkt).is_ok() {
            ready.push(std::mem::replace(&mut pkt, ff::Packet::empty()));
        }
        for pkt in ready {
            if let Some(config) = self.announced.take() {
                if !self.started {
                    self.started = true;
                    let held = std::mem::take(&mut self.held);
                    let start = held
                        .iter()
                        .position(|h| matches!(h.kind, StreamEventKind::PublisherStarted { .. }));
                    if let Some(i) = start {
                        out.send(held[i].clone());
                    }
                    out.send(event(
                        self.generation,
                        StreamEventKind::Config(CodecConfig::Avc(config)),
                    ));
                    for (i, h) in held.into_iter().enumerate() {
                        if Some(i) != start {
                            out.send(h);
                        }
                    }
                } else {
                    out.send(event(
                        self.generation,
                        StreamEventKind::Config(CodecConfig::Avc(config)),
                    ));
                }
            }
            let Some(data) = pkt.data() else { continue };
            let au = media::annexb::access_unit(&Bytes::copy_from_slice(data));
            if au.sample.is_empty() {
                continue;
            }
            let pts = pkt.pts().unwrap_or(0);
            let dts = pkt.dts().unwrap_or(pts);
            while let Some(&(p, at)) = self.pending.front() {
                if p > pts {
                    break;
                }
                self.pending.pop_front();
                if p == pts {
                    self.stats.set_lag(at.elapsed());
                }
            }
            out.send(event(
                self.generation,
                StreamEventKind::Frame(Frame {
                    track: Track::Video,
                    pts: Timestamp::new(pts, VIDEO_TIMESCALE),
                    dts: Timestamp::new(dts.min(pts), VIDEO_TIMESCALE),
                    keyframe: pkt.is_key() || au.keyframe,
                    data: au.sample,
                }),
            ));
            self.video_out = Some(self.video_out.map_or(pts, |v| v.max(pts)));
            self.release(out, false);
        }
    }
}

/// Opens `codec` (libx264 or h264_nvenc) for one rung: low latency, no B-frames, an IDR only
/// where a picture is marked I (`forced-idr`), no scene-cut keyframes, an infinite GOP, the
/// bitrate bounded by `maxrate`/`bufsize`, the frame rate set.
fn open_video_encoder(
    codec: &str,
    rung: &Rung,
    (width, height): (u32, u32),
    fps: f64,
    threads: usize,
) -> Result<ff::encoder::Video, ff::Error> {
    let found = ff::encoder::find_by_name(codec).ok_or(ff::Error::EncoderNotFound)?;
    let mut ctx = ff::codec::context::Context::new_with_codec(found);
    if codec == X264 {
        let mut t = ff::codec::threading::Config::kind(ff::codec::threading::Type::Slice);
        t.count = threads;
        ctx.set_threading(t);
    }
    ctx.set_flags(ff::codec::Flags::GLOBAL_HEADER | ff::codec::Flags::CLOSED_GOP);
    let mut enc = ctx.encoder().video()?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(ff::Rational::new(1, VIDEO_TIMESCALE as i32));
    enc.set_frame_rate(Some(ff::Rational::new((fps * 1000.0).round() as i32, 1000)));
    enc.set_bit_rate(rung.bitrate as usize);
    enc.set_max_bit_rate(rung.bitrate as usize);
    enc.set_gop(u32::MAX / 2);
    enc.set_max_b_frames(0);
    let mut opts = ff::Dictionary::new();
    opts.set("forced-idr", "1");
    opts.set("bufsize", &rung.bitrate.to_string());
    if codec == NVENC {
        opts.set("preset", "p3");
        opts.set("tune", "ll");
        opts.set("zerolatency", "1");
        opts.set("delay", "0");
        opts.set("rc", "cbr");
        opts.set("no-scenecut", "1");
        opts.set("rc-lookahead", "0");
    } else {
        opts.set("preset", "veryfast");
        opts.set("tune", "zerolatency");
        opts.set("x264-params", "scenecut=0:open-gop=0:keyint=infinite");
    }
    enc.open_with(opts)
}

fn event(generation: u64, kind: StreamEventKind) -> StreamEvent {
    StreamEvent {
        generation,
        at: Instant::now(),
        kind,
    }
}
