//! LL-HLS conformance checks, one named check per rule, run against a live origin — or an
//! edge in front of one (the same code, so edges are held to the same rules). The checks share
//! one stream (publishing is the slow part); each check is its own function and assertion
//! message, and all broken rules are reported at once.
//!
//! Stream: 640x360@30, 1 s GOP, TARGETDURATION 1, PART-TARGET 0.333, the default live window
//! (so the checks show delta updates skip segments at the defaults), grace period 8 s (so a
//! stalled stream outlives the 3 × target duration blocking limit before it ends).

use super::hls::{self, MediaPlaylist};
use super::{Publisher, Source};
use std::time::{Duration, Instant};

/// The PART-TARGET and TARGETDURATION that [`CONFIG`] gives.
const PART_TARGET: f64 = 0.333;
const TD: u64 = 1;

struct Ctx {
    /// Where viewers fetch (the origin, or an edge in front of it).
    base: String,
    c: reqwest::Client,
    /// The rendition under test and the stream's other renditions.
    rendition: String,
    others: Vec<String>,
    media: String,
    failures: Vec<String>,
    playlists: Vec<MediaPlaylist>,
    /// The PART-TARGET and TARGETDURATION the server was configured with.
    part_target: f64,
    td: u64,
}

impl Ctx {
    fn url(&self, q: &str) -> String {
        if q.is_empty() {
            self.media.clone()
        } else {
            format!("{}?{q}", self.media)
        }
    }

    fn part_url(&self, uri: &str) -> String {
        format!("{}/live/cam/{}/{uri}", self.base, self.rendition)
    }

    async fn playlist(
        &mut self,
        q: &str,
    ) -> (u16, MediaPlaylist, reqwest::header::HeaderMap, Duration) {
        let t = Instant::now();
        let r = self.c.get(self.url(q)).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let elapsed = t.elapsed();
        let pl = if status == 200 {
            let pl = MediaPlaylist::parse(&text).unwrap();
            self.playlists.push(pl.clone());
            pl
        } else {
            MediaPlaylist::default()
        };
        (status, pl, headers, elapsed)
    }

    fn check(&mut self, rule: &str, ok: bool, detail: impl std::fmt::Display) {
        if !ok {
            self.failures.push(format!("{rule}: {detail}"));
        }
    }
}

/// The origin config the checks assume (pass it to the server or cluster under test).
pub const CONFIG: &str = "part_target = 0.333\ntarget_duration = 1\ngrace_period = 8.0";

/// The publisher the checks assume: 640x360@30, 1 s GOP, 60 s.
pub fn source() -> Source {
    let mut s = Source::small(60.0);
    s.gop = 30;
    s
}

/// Runs every check against `base` (an origin or an edge) while `publisher` feeds the stream
/// `cam`; kills the publisher midway (to check the grace period, 503 and ENDLIST). Returns the
/// broken rules, one line each.
pub async fn check_all(base: &str, publisher: &mut Publisher) -> Vec<String> {
    check_renditions(base, publisher, &["source"]).await
}

/// [`check_all`] for a stream with the renditions `ids` (the first listed first): every
/// rendition passes every check, and each carries a rendition report for every other one.
pub async fn check_renditions(base: &str, publisher: &mut Publisher, ids: &[&str]) -> Vec<String> {
    let c = hls::client();
    let master_url = format!("{base}/live/cam/index.m3u8");
    let (status, master) = hls::wait_for(&c, &master_url).await;
    assert_eq!(status, 200, "{master}");
    let mut ctxs: Vec<Ctx> = ids
        .iter()
        .map(|id| Ctx {
            base: base.to_owned(),
            c: c.clone(),
            rendition: (*id).to_owned(),
            others: ids
                .iter()
                .filter(|o| *o != id)
                .map(|o| (*o).to_owned())
                .collect(),
            media: format!("{base}/live/cam/{id}/index.m3u8"),
            failures: Vec::new(),
            playlists: Vec::new(),
            part_target: PART_TARGET,
            td: TD,
        })
        .collect();
    multivariant_attributes(&mut ctxs[0], &master);
    for id in ids {
        ctxs[0].check(
            &format!("multivariant lists {id}"),
            master.contains(&format!("\n{id}/index.m3u8")),
            &master,
        );
    }
    // Delta updates need a full window to skip anything: wait for it (10 × 1 s segments).
    window_full(&mut ctxs[0], 10).await;
    for ctx in ctxs.iter_mut() {
        live_checks(ctx).await;
    }
    // The publisher stops; within the grace period nothing advances.
    publisher.kill();
    blocked_request_times_out_with_503(&mut ctxs[0]).await;
    for ctx in ctxs.iter_mut() {
        directives_ignored_after_endlist(ctx).await;
        fixed_values_never_change(ctx);
    }
    ctxs.into_iter()
        .flat_map(|ctx| {
            let r = ctx.rendition;
            ctx.failures.into_iter().map(move |f| format!("[{r}] {f}"))
        })
        .collect()
}

/// The checks that hold at any moment of a live stream (no publisher kill, no window wait),
/// against rendition `rendition` of stream `cam` at `base`: run after a timeline event to
/// show the stream is conformant again. Returns the broken rules.
pub async fn check_live(base: &str, rendition: &str) -> Vec<String> {
    check_live_at(base, rendition, PART_TARGET, TD, 0).await
}

/// [`check_live`] for a server configured with another PART-TARGET and TARGETDURATION, once
/// the playlist lists `segments` complete segments (waited for, bounded).
pub async fn check_live_at(
    base: &str,
    rendition: &str,
    part_target: f64,
    td: u64,
    segments: usize,
) -> Vec<String> {
    let mut ctx = Ctx {
        base: base.to_owned(),
        c: hls::client(),
        rendition: rendition.to_owned(),
        others: Vec::new(),
        media: format!("{base}/live/cam/{rendition}/index.m3u8"),
        failures: Vec::new(),
        playlists: Vec::new(),
        part_target,
        td,
    };
    if segments > 0 {
        window_full(&mut ctx, segments).await;
    }
    live_checks(&mut ctx).await;
    fixed_values_never_change(&mut ctx);
    ctx.failures
}

/// Every check that holds at any moment of a live stream, in order.
async fn live_checks(ctx: &mut Ctx) {
    server_control_and_part_inf(ctx).await;
    blocking_reload_waits_and_answers_promptly(ctx).await;
    part_past_segment_end_is_next_segment_part_zero(ctx).await;
    advance_limits_give_400(ctx).await;
    delta_update(ctx).await;
    preload_hint_is_streamed_while_written(ctx).await;
    parts_and_segments_durations(ctx).await;
    program_date_time_on_every_segment(ctx).await;
    independent_parts_start_with_keyframes(ctx).await;
    rendition_reports(ctx).await;
    http_caching_cors_and_404(ctx).await;
}

/// Waits (bounded) until the playlist lists `segments` complete segments.
async fn window_full(ctx: &mut Ctx, segments: usize) {
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, pl, _, _) = ctx.playlist("").await;
        let n = pl.segments.iter().filter(|s| s.uri.is_some()).count();
        if n >= segments || Instant::now() > end {
            ctx.check("the live window fills", n >= segments, n);
            return;
        }
        let (msn, part) = pl.next_part();
        // A blocking reload returns as soon as the stream advances: no guessing sleep.
        let _ = ctx
            .playlist(&format!("_HLS_msn={msn}&_HLS_part={part}"))
            .await;
    }
}

fn multivariant_attributes(ctx: &mut Ctx, master: &str) {
    let inf = master
        .lines()
        .find(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .unwrap_or_default();
    for (attr, ok) in [
        ("BANDWIDTH", inf.contains("BANDWIDTH=")),
        ("AVERAGE-BANDWIDTH", inf.contains("AVERAGE-BANDWIDTH=")),
        (
            "CODECS",
            inf.contains("CODECS=\"avc1.64") && inf.contains("mp4a.40.2"),
        ),
        (
            "RESOLUTION",
            inf.split(',')
                .find_map(|a| a.strip_prefix("RESOLUTION="))
                .and_then(|r| r.split_once('x'))
                .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                .is_some_and(|(w, h)| w > 0 && h > 0),
        ),
        ("FRAME-RATE", inf.contains("FRAME-RATE=30.000")),
    ] {
        ctx.check(&format!("multivariant {attr}"), ok, inf);
    }
    let bw: u64 = inf
        .split(',')
        .find_map(|a| a.strip_prefix("#EXT-X-STREAM-INF:BANDWIDTH="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // The test sources: 800 kb/s (360p) or 2.5 Mb/s (720p) video + 96 kb/s audio: the
    // measured peak must be in that region.
    ctx.check(
        "multivariant BANDWIDTH measured",
        (400_000..6_000_000).contains(&bw),
        bw,
    );
}

async fn server_control_and_part_inf(ctx: &mut Ctx) {
    let (_, pl, _, _) = ctx.playlist("").await;
    ctx.check(
        "EXT-X-PART-INF PART-TARGET",
        (pl.part_target - ctx.part_target).abs() < 1e-9,
        pl.part_target,
    );
    ctx.check("CAN-BLOCK-RELOAD=YES", pl.can_block_reload, &pl.text);
    ctx.check(
        "PART-HOLD-BACK = 3 × PART-TARGET",
        (pl.part_hold_back - 3.0 * ctx.part_target).abs() < 0.002,
        pl.part_hold_back,
    );
    ctx.check(
        "CAN-SKIP-UNTIL = 6 × TARGETDURATION",
        (pl.can_skip_until - 6.0 * ctx.td as f64).abs() < 1e-9,
        pl.can_skip_until,
    );
    ctx.check(
        "EXT-X-TARGETDURATION",
        pl.target_duration == ctx.td,
        pl.target_duration,
    );
    ctx.check("preload hint present", pl.preload_hint.is_some(), &pl.text);
}

/// A request for the next part is held until that part exists, and answered within 100 ms of
/// the part becoming available (measured against a concurrent download of the hinted part,
/// whose body completes when the part does).
async fn blocking_reload_waits_and_answers_promptly(ctx: &mut Ctx) {
    let mut worst = Duration::ZERO;
    let mut held = 0;
    for _ in 0..5 {
        let (_, pl, _, _) = ctx.playlist("").await;
        let (msn, part) = pl.next_part();
        let hint = pl.preload_hint.clone().unwrap_or_default();
        let part_url = ctx.part_url(&hint);
        let c = ctx.c.clone();
        let download = tokio::spawn(async move {
            let r = c.get(part_url).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.bytes().await;
            (status, body.is_ok(), Instant::now())
        });
        let (status, blocked, _, took) = ctx
            .playlist(&format!("_HLS_msn={msn}&_HLS_part={part}"))
            .await;
        let answered = Instant::now();
        let (pstatus, complete_ok, completed) = download.await.unwrap();
        ctx.check("blocking reload status", status == 200, status);
        ctx.check("hinted part status", pstatus == 200 && complete_ok, pstatus);
        let want = format!("{msn}.{part}.m4s");
        ctx.check(
            "blocking response contains the requested part",
            blocked.text.contains(&want) || blocked.text.contains(&format!("{}.0.m4s", msn + 1)),
            format!("{want} not in\n{}", blocked.text),
        );
        if took > Duration::from_millis(50) {
            held += 1;
        }
        let lag = answered.saturating_duration_since(completed);
        worst = worst.max(lag);
    }
    ctx.check(
        "blocking requests are held (not answered at once)",
        held >= 3,
        held,
    );
    ctx.check(
        "blocking request answered within 100 ms of the part",
        worst <= Duration::from_millis(100),
        format!("{worst:?}"),
    );
}

async fn part_past_segment_end_is_next_segment_part_zero(ctx: &mut Ctx) {
    let (_, pl, _, _) = ctx.playlist("").await;
    // A complete segment M with n parts: asking for part n of M means part 0 of M+1.
    let seg = pl
        .segments
        .iter()
        .rev()
        .find(|s| s.uri.is_some() && !s.parts.is_empty())
        .cloned()
        .unwrap_or_default();
    let (status, got, _, took) = ctx
        .playlist(&format!(
            "_HLS_msn={}&_HLS_part={}",
            seg.msn,
            seg.parts.len()
        ))
        .await;
    ctx.check(
        "part past a segment's end = next segment's part 0",
        status == 200
            && got.text.contains(&format!("{}.0.m4s", seg.msn + 1))
            && took < Duration::from_secs(2),
        format!("{status} after {took:?}"),
    );
    // For the open segment, a part index past its eventual end waits for the next segment.
    let open = pl.segments.last().cloned().unwrap_or_default();
    let (status, got, _, _) = ctx
        .playlist(&format!("_HLS_msn={}&_HLS_part=8", open.msn))
        .await;
    ctx.check(
        "blocking on a part past the open segment's end returns with the next segment",
        status == 200 && got.text.contains(&format!("{}.0.m4s", open.msn + 1)),
        format!("{status}\n{}", got.text),
    );
}

async fn advance_limits_give_400(ctx: &mut Ctx) {
    let (_, pl, _, _) = ctx.playlist("").await;
    let last = pl.last_complete_msn().unwrap_or(0);
    let (status, _, _, took) = ctx.playlist(&format!("_HLS_msn={}", last + 3)).await;
    ctx.check(
        "400 for _HLS_msn more than two segments ahead",
        status == 400 && took < Duration::from_millis(500),
        status,
    );
    let (msn, part) = pl.next_part();
    // The Advance Part Limit is 3 / PART-TARGET parts past the last one.
    let beyond = (3.0 / ctx.part_target).ceil() as usize + 2;
    let (status, _, _, _) = ctx
        .playlist(&format!("_HLS_msn={msn}&_HLS_part={}", part + beyond))
        .await;
    ctx.check(
        "400 for _HLS_part beyond the advance part limit",
        status == 400,
        status,
    );
    let (status, _, _, _) = ctx.playlist("_HLS_part=1").await;
    ctx.check("400 for _HLS_part without _HLS_msn", status == 400, status);
    let (status, _, _, _) = ctx.playlist("_HLS_msn=abc").await;
    ctx.check("400 for a malformed _HLS_msn", status == 400, status);
    let (status, _, _, _) = ctx
        .playlist("_HLS_msn=1&_HLS_part=0&CMCD=sid%3D%22x%22")
        .await;
    ctx.check(
        "unknown query parameters are ignored",
        status == 200,
        status,
    );
}

async fn delta_update(ctx: &mut Ctx) {
    let (_, full, _, _) = ctx.playlist("").await;
    let (status, delta, _, _) = ctx.playlist("_HLS_skip=YES").await;
    ctx.check("delta update status", status == 200, status);
    ctx.check(
        "delta update VERSION ≥ 9",
        delta.version >= 9,
        delta.version,
    );
    ctx.check("EXT-X-SKIP present", delta.skipped.is_some(), &delta.text);
    ctx.check(
        "EXT-X-SKIP skips old segments",
        delta.skipped.unwrap_or(0) >= 1,
        &delta.text,
    );
    let ms = delta.tags.iter().position(|t| t == "EXT-X-MEDIA-SEQUENCE");
    let sk = delta.tags.iter().position(|t| t == "EXT-X-SKIP");
    ctx.check(
        "MEDIA-SEQUENCE before SKIP",
        ms.is_some() && ms < sk,
        format!("{ms:?} {sk:?}"),
    );
    // What remains is the tail of the full playlist (the skip covers at most 6 × TD from end).
    let first_listed = delta.segments.first().map(|s| s.msn).unwrap_or(0);
    ctx.check(
        "delta keeps everything within CAN-SKIP-UNTIL of the end",
        full.segments.iter().any(|s| s.msn == first_listed)
            && delta.segments.iter().filter(|s| s.uri.is_some()).count() >= 6,
        &delta.text,
    );
}

/// The hinted part is answered at once and streamed: its first bytes arrive well before it is
/// complete, and the streamed bytes equal the finished part.
async fn preload_hint_is_streamed_while_written(ctx: &mut Ctx) {
    let mut early = 0;
    for _ in 0..3 {
        let (_, pl, _, _) = ctx.playlist("").await;
        let hint = pl.preload_hint.clone().unwrap_or_default();
        let url = ctx.part_url(&hint);
        let t = Instant::now();
        let mut r = ctx.c.get(&url).send().await.unwrap();
        let headers_at = t.elapsed();
        let mut first = None;
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.unwrap() {
            first.get_or_insert(t.elapsed());
            body.extend_from_slice(&chunk);
        }
        let done = t.elapsed();
        let first = first.unwrap_or(done);
        if done.saturating_sub(first) >= Duration::from_millis(100) {
            early += 1;
        }
        let (status, again) = hls::get_bytes(&ctx.c, &url).await;
        ctx.check(
            "streamed hinted part == the finished part",
            status == 200 && again == body,
            format!("{status}, {} vs {} bytes", again.len(), body.len()),
        );
        ctx.check(
            "hinted part request answered at once",
            headers_at < Duration::from_millis((ctx.part_target * 1000.0) as u64 + 500),
            format!("{headers_at:?}"),
        );
    }
    ctx.check(
        "hinted part's first bytes arrive before it is complete",
        early >= 2,
        early,
    );
}

async fn parts_and_segments_durations(ctx: &mut Ctx) {
    let (_, pl, _, _) = ctx.playlist("").await;
    for s in &pl.segments {
        let n = s.parts.len();
        for (i, p) in s.parts.iter().enumerate() {
            let last_in_segment = i + 1 == n && s.uri.is_some();
            ctx.check(
                "part duration ≤ PART-TARGET",
                p.duration <= ctx.part_target + 1e-6,
                format!("{} = {}", p.uri, p.duration),
            );
            if !last_in_segment && !p.independent {
                ctx.check(
                    "non-final, non-independent part ≥ 85 % of PART-TARGET",
                    p.duration >= 0.85 * ctx.part_target - 1e-6,
                    format!("{} = {}", p.uri, p.duration),
                );
            }
        }
        if let Some(d) = s.duration {
            ctx.check(
                "segment duration rounds to ≤ TARGETDURATION",
                d.round() as u64 <= pl.target_duration,
                d,
            );
            if n > 0 {
                let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
                ctx.check(
                    "EXTINF = sum of its parts",
                    (sum - d).abs() < 0.002,
                    format!("{sum} vs {d}"),
                );
            }
        }
    }
}

async fn program_date_time_on_every_segment(ctx: &mut Ctx) {
    let (_, pl, _, _) = ctx.playlist("").await;
    ctx.check(
        "EXT-X-PROGRAM-DATE-TIME on every segment",
        pl.segments.iter().all(|s| s.program_date_time.is_some()),
        &pl.text,
    );
    ctx.check(
        "PROGRAM-DATE-TIME is ISO 8601 with milliseconds",
        pl.segments
            .iter()
            .filter_map(|s| s.program_date_time.as_ref())
            .all(|t| t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T'),
        &pl.text,
    );
}

async fn independent_parts_start_with_keyframes(ctx: &mut Ctx) {
    let (_, pl, _, _) = ctx.playlist("").await;
    let (_, init) = hls::get_bytes(&ctx.c, &ctx.part_url("init.mp4")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for s in &pl.segments {
        for p in &s.parts {
            let (status, bytes) = hls::get_bytes(&ctx.c, &ctx.part_url(&p.uri)).await;
            if status != 200 {
                continue;
            }
            let path =
                super::write_media(dir.path(), &p.uri.replace(".m4s", ".mp4"), &init, &[&bytes]);
            let first = super::packets(&path).into_iter().find(|k| k.video);
            // A part without video (audio drove while video was away) is independent too.
            let key = first.is_none_or(|k| k.keyframe);
            ctx.check(
                "INDEPENDENT=YES exactly on parts that start with a keyframe",
                key == p.independent,
                format!("{} independent={} keyframe={key}", p.uri, p.independent),
            );
            checked += 1;
        }
    }
    ctx.check("parts were checked for INDEPENDENT", checked >= 6, checked);
}

/// Every other rendition has a report whose LAST-MSN/LAST-PART is within one part of that
/// rendition's own playlist (read just before and just after); none with one rendition.
async fn rendition_reports(ctx: &mut Ctx) {
    if ctx.others.is_empty() {
        let (_, pl, _, _) = ctx.playlist("").await;
        ctx.check(
            "no EXT-X-RENDITION-REPORT while there is only one rendition",
            pl.rendition_reports.is_empty(),
            &pl.text,
        );
        return;
    }
    for other in ctx.others.clone() {
        let other_url = format!("{}/live/cam/{other}/index.m3u8", ctx.base);
        let (_, before) = hls::get_text(&ctx.c, &other_url).await;
        let (_, pl, _, _) = ctx.playlist("").await;
        let (_, after) = hls::get_text(&ctx.c, &other_url).await;
        let (Ok(before), Ok(after)) = (MediaPlaylist::parse(&before), MediaPlaylist::parse(&after))
        else {
            ctx.check(&format!("{other} playlist parses"), false, "");
            continue;
        };
        let uri = format!("../{other}/index.m3u8");
        let report = pl.rendition_reports.iter().find(|r| r.uri == uri).cloned();
        ctx.check(
            &format!("rendition report for {other}"),
            report.is_some(),
            &pl.text,
        );
        let Some(report) = report else { continue };
        // Ordinal of (msn, part) among the parts the other playlist lists.
        let ordinal = |p: &MediaPlaylist, msn: u64, part: usize| -> Option<i64> {
            let mut i = 0i64;
            for s in &p.segments {
                for k in 0..s.parts.len() {
                    if s.msn == msn && k == part {
                        return Some(i);
                    }
                    i += 1;
                }
            }
            None
        };
        let last = |p: &MediaPlaylist| p.last_part().and_then(|(m, k)| ordinal(&after, m, k));
        let got = ordinal(&after, report.last_msn, report.last_part.unwrap_or(0));
        let ok = match (got, last(&before), last(&after)) {
            (Some(g), Some(lo), Some(hi)) => g >= lo - 1 && g <= hi + 1,
            _ => false,
        };
        ctx.check(
            &format!("rendition report for {other} within one part of its playlist"),
            ok,
            format!(
                "report {}.{:?}, {other} last {:?} → {:?}",
                report.last_msn,
                report.last_part,
                before.last_part(),
                after.last_part()
            ),
        );
    }
}

async fn http_caching_cors_and_404(ctx: &mut Ctx) {
    let cc = |h: &reqwest::header::HeaderMap| {
        h.get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (_, pl, h, _) = ctx.playlist("").await;
    ctx.check(
        "plain playlist Cache-Control: no-cache",
        cc(&h) == "no-cache",
        cc(&h),
    );
    ctx.check("playlist has an ETag", h.contains_key("etag"), "");
    let (msn, part) = pl.next_part();
    let (_, _, h, _) = ctx
        .playlist(&format!("_HLS_msn={msn}&_HLS_part={part}"))
        .await;
    ctx.check(
        "playlist with directives is short-lived but cacheable",
        cc(&h).starts_with("public, max-age="),
        cc(&h),
    );
    let seg = pl
        .segments
        .iter()
        .rev()
        .find(|s| s.uri.is_some())
        .cloned()
        .unwrap_or_default();
    for uri in [
        seg.uri.clone().unwrap_or_default(),
        seg.parts.first().map(|p| p.uri.clone()).unwrap_or_default(),
        "init.mp4".to_owned(),
    ] {
        let r = ctx
            .c
            .get(ctx.part_url(&uri))
            .header("origin", "https://player.example")
            .send()
            .await
            .unwrap();
        let h = r.headers().clone();
        ctx.check(&format!("{uri} is 200"), r.status() == 200, r.status());
        ctx.check(
            &format!("{uri} is immutable"),
            cc(&h).contains("immutable"),
            cc(&h),
        );
        ctx.check(&format!("{uri} has an ETag"), h.contains_key("etag"), "");
        ctx.check(
            &format!("{uri} has CORS"),
            h.get("access-control-allow-origin").is_some(),
            "",
        );
        let etag = h.get("etag").cloned();
        if let Some(etag) = etag {
            let r = ctx
                .c
                .get(ctx.part_url(&uri))
                .header("if-none-match", etag)
                .send()
                .await
                .unwrap();
            ctx.check(
                &format!("{uri} revalidates with 304"),
                r.status() == 304,
                r.status(),
            );
        }
    }
    let first = pl.media_sequence;
    for (what, uri) in [
        (
            "segment that left the window",
            format!("{}.m4s", first.saturating_sub(5)),
        ),
        (
            "part that left the window",
            format!("{}.0.m4s", first.saturating_sub(5)),
        ),
        ("part far in the future", format!("{}.0.m4s", first + 1000)),
        ("unknown file", "nope.txt".to_owned()),
    ] {
        let (status, _) = hls::get_bytes(&ctx.c, &ctx.part_url(&uri)).await;
        ctx.check(&format!("404 for a {what}"), status == 404, status);
    }
    let (status, _) = hls::get_text(&ctx.c, &format!("{}/live/nosuch/index.m3u8", ctx.base)).await;
    ctx.check("404 for an unknown stream", status == 404, status);
}

async fn blocked_request_times_out_with_503(ctx: &mut Ctx) {
    // The publisher is gone: the stream is in its grace period and does not advance.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, pl, _, _) = ctx.playlist("").await;
    ctx.check("no ENDLIST during the grace period", !pl.endlist, &pl.text);
    let (msn, part) = pl.next_part();
    let (status, _, _, took) = ctx
        .playlist(&format!("_HLS_msn={msn}&_HLS_part={part}"))
        .await;
    let limit = Duration::from_secs(3 * ctx.td);
    ctx.check(
        "503 after 3 × target duration",
        status == 503
            && took >= limit - Duration::from_millis(100)
            && took < limit + Duration::from_secs(3),
        format!("{status} after {took:?}"),
    );
}

async fn directives_ignored_after_endlist(ctx: &mut Ctx) {
    let end = Instant::now() + Duration::from_secs(20);
    let mut pl = MediaPlaylist::default();
    while Instant::now() < end {
        pl = ctx.playlist("").await.1;
        if pl.endlist {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ctx.check("ENDLIST after the grace period", pl.endlist, &pl.text);
    ctx.check(
        "no preload hint after ENDLIST",
        pl.preload_hint.is_none(),
        &pl.text,
    );
    let last = pl.last_complete_msn().unwrap_or(0);
    let (status, got, _, took) = ctx
        .playlist(&format!("_HLS_msn={}&_HLS_part=0", last + 2))
        .await;
    ctx.check(
        "directives ignored after ENDLIST",
        status == 200 && got.endlist && took < Duration::from_secs(1),
        format!("{status} after {took:?}"),
    );
}

fn fixed_values_never_change(ctx: &mut Ctx) {
    let firsts = ctx.playlists.first().cloned().unwrap_or_default();
    let mut changed = Vec::new();
    for p in &ctx.playlists {
        if p.target_duration != firsts.target_duration
            || p.part_target != firsts.part_target
            || p.part_hold_back != firsts.part_hold_back
        {
            changed.push(format!(
                "{} {} {}",
                p.target_duration, p.part_target, p.part_hold_back
            ));
        }
    }
    let n = ctx.playlists.len();
    ctx.check(
        "TARGETDURATION, PART-TARGET and PART-HOLD-BACK never change",
        changed.is_empty() && n > 20,
        format!("{n} playlists, changed: {changed:?}"),
    );
}
