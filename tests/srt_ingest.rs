//! SRT ingest acceptance: the real ffmpeg CLI publishing MPEG-TS over SRT with each stream id
//! form, a second independent client (`srt-live-transmit`), packet loss and reordering through
//! a UDP relay, and the robustness cases. Media is checked with the same code as the RTMP test
//! (`common::check_followed_media`).

#![allow(clippy::unwrap_used)]

mod common;

use common::hls::{self, MediaPlaylist};
use common::{Publisher, Server, Source};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn follow_and_check(server: &Server, name: &str, secs: u64) -> hls::Followed {
    let rt = common::runtime();
    let followed = rt.block_on(async {
        let c = hls::client();
        let master = format!("{}/live/{name}/index.m3u8", server.base());
        let (status, text) = hls::wait_for(&c, &master).await;
        assert_eq!(status, 200, "{text}");
        let url = format!("{}/live/{name}/source/index.m3u8", server.base());
        hls::follow(&c, &url, Duration::from_secs(secs)).await
    });
    assert!(
        followed.segments.len() >= 4,
        "only {} segments",
        followed.segments.len()
    );
    // One continuous publish: both tracks from the first segment on, no discontinuity.
    assert!(
        followed
            .playlists
            .iter()
            .all(|p| !p.text.contains("DISCONTINUITY")),
        "{}",
        followed.playlists.last().unwrap().text
    );
    assert_eq!(followed.inits.len(), 1, "one init segment");
    common::check_followed_media(&followed, 3000);
    followed
}

fn publish_and_check(stream_id: &str) {
    let server = Server::start(&common::config("grace_period = 1.0"));
    let _p = Publisher::srt(&server.srt_url(stream_id), &Source::small(14.0));
    let f = follow_and_check(&server, "cam", 30);
    assert!(f.playlists.last().unwrap().endlist);
    let log = server.log();
    assert!(log.contains("protocol=\"srt\""), "{log}");
}

#[test]
fn access_control_stream_id() {
    publish_and_check(&format!("#!::r=live/{},m=publish,u=ignored", common::KEY));
}

#[test]
fn publish_prefix_stream_id() {
    publish_and_check(&format!("publish:live/{}", common::KEY));
}

#[test]
fn plain_stream_id() {
    publish_and_check(&format!("live/{}", common::KEY));
}

/// Makes a TS file with ffmpeg (the input of the non-ffmpeg clients).
fn ts_file(dir: &std::path::Path, secs: u32) -> std::path::PathBuf {
    let path = dir.join("source.ts");
    let src = Source {
        seconds: f64::from(secs),
        ..Source::small(0.0)
    };
    let args: Vec<String> = src
        .ffmpeg_args()
        .into_iter()
        .filter(|a| a != "-re")
        .collect();
    let ok = Command::new("ffmpeg")
        .args(args)
        .args(["-f", "mpegts", "-y"])
        .arg(&path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    path
}

/// `ffmpeg -re -c copy` paces a TS file in real time into srt-live-transmit's stdin.
fn srt_live_transmit(ts: &std::path::Path, url: &str) -> (Child, Child) {
    let mut pacer = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(ts)
        .args(["-c", "copy", "-f", "mpegts", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let slt = Command::new("srt-live-transmit")
        // It stays connected after its input ends, so give it an exit timer.
        .args(["-q", "-a:no", "-t:15", "file://con", url])
        .stdin(pacer.stdout.take().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("srt-live-transmit (Debian srt-tools) must be installed");
    (pacer, slt)
}

fn slt_url(server: &Server, stream_id: &str, extra: &str) -> String {
    format!("srt://{}?streamid={stream_id}{extra}", server.srt)
}

#[test]
fn srt_live_transmit_client() {
    let server = Server::start(&common::config("grace_period = 1.0"));
    let dir = tempfile::tempdir().unwrap();
    let ts = ts_file(dir.path(), 12);
    let (mut pacer, mut slt) =
        srt_live_transmit(&ts, &slt_url(&server, &format!("live/{}", common::KEY), ""));
    follow_and_check(&server, "cam", 25);
    let _ = pacer.kill();
    let _ = slt.kill();
    let _ = pacer.wait();
    let _ = slt.wait();
}

/// A UDP relay between caller and listener that drops ~3 % of datagrams each way and holds
/// back ~2 % for 15 ms (reordering them behind later ones). Bounded: it stops after `secs`.
fn lossy_relay(target: std::net::SocketAddr, secs: u64) -> std::net::SocketAddr {
    let front = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(target).unwrap();
    let addr = front.local_addr().unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let caller = std::sync::Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % 1000
    };
    let seeds = (next(), next());
    let pump =
        move |from: std::net::UdpSocket, to: std::net::UdpSocket, forward: bool, seed: u64| {
            let caller = std::sync::Arc::clone(&caller);
            std::thread::spawn(move || {
                let mut x = seed | 1;
                let mut held: Vec<(Instant, Vec<u8>)> = Vec::new();
                from.set_read_timeout(Some(Duration::from_millis(5)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                while Instant::now() < end {
                    let send = |data: &[u8]| {
                        if forward {
                            let _ = to.send(data);
                        } else if let Some(c) = *caller.lock().unwrap() {
                            let _ = to.send_to(data, c);
                        }
                    };
                    let now = Instant::now();
                    held.retain(|(t, d)| {
                        if *t <= now {
                            send(d);
                            false
                        } else {
                            true
                        }
                    });
                    let n = if forward {
                        match from.recv_from(&mut buf) {
                            Ok((n, src)) => {
                                *caller.lock().unwrap() = Some(src);
                                n
                            }
                            Err(_) => continue,
                        }
                    } else {
                        match from.recv(&mut buf) {
                            Ok(n) => n,
                            Err(_) => continue,
                        }
                    };
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 100 {
                        0..=2 => {}                                                               // drop
                        3..=4 => held.push((now + Duration::from_millis(15), buf[..n].to_vec())), // reorder
                        _ => send(&buf[..n]),
                    }
                }
            });
        };
    let front2 = front.try_clone().unwrap();
    let back2 = back.try_clone().unwrap();
    pump(front, back, true, seeds.0);
    pump(back2, front2, false, seeds.1);
    addr
}

#[test]
fn packet_loss_and_reordering_are_survived() {
    let server = Server::start(&common::config("grace_period = 1.0"));
    let relay = lossy_relay(server.srt, 40);
    let url = format!("srt://{relay}?streamid=live/{}&latency=120000", common::KEY);
    let _p = Publisher::srt(&url, &Source::small(16.0));
    let f = follow_and_check(&server, "cam", 35);
    assert!(
        f.playlists.last().unwrap().endlist,
        "the stream stayed up to its natural end"
    );
}

fn wait_log(server: &Server, needle: &str) -> bool {
    server.wait_log(needle, Duration::from_secs(10))
}

#[test]
fn file_transtype_caller_cannot_take_ingest_down() {
    let server = Server::start(&common::config("grace_period = 1.0"));
    // A caller in file mode (what panics srt-tokio 0.4.4's listener) is refused in the handshake.
    let url = format!(
        "srt://{}?streamid=live/{}&transtype=file",
        server.srt,
        common::KEY
    );
    let mut bad = Publisher::srt(&url, &Source::small(3.0));
    let t = Instant::now();
    while !bad.exited() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(bad.exited(), "the file-mode caller was not refused");
    // A normal publish on the same listener succeeds within 1 s (timed with srt-live-transmit,
    // which starts in milliseconds, so the bound measures the server, not ffmpeg's start-up).
    let dir = tempfile::tempdir().unwrap();
    let ts = ts_file(dir.path(), 4);
    let started = Instant::now();
    let (mut pacer, mut slt) =
        srt_live_transmit(&ts, &slt_url(&server, &format!("live/{}", common::KEY), ""));
    assert!(wait_log(&server, "protocol=\"srt\""), "{}", server.log());
    let accepted = started.elapsed();
    assert!(
        accepted < Duration::from_secs(1),
        "normal publish took {accepted:?}"
    );
    let _ = pacer.kill();
    let _ = slt.kill();
    let _ = pacer.wait();
    let _ = slt.wait();
}

#[test]
fn wrong_passphrase_is_refused_right_one_accepted() {
    let server = Server::start(&common::config(
        "grace_period = 1.0\nsrt_passphrase = \"server-wide-secret\"",
    ));
    let id = format!("live/{}", common::KEY);
    let mut wrong = Publisher::srt(
        &format!("{}&passphrase=not-the-secret", server.srt_url(&id)),
        &Source::small(3.0),
    );
    let mut none = Publisher::srt(&server.srt_url(&id), &Source::small(3.0));
    let t = Instant::now();
    while !(wrong.exited() && none.exited()) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        wrong.exited() && none.exited(),
        "unencrypted or wrongly keyed callers were not refused"
    );
    assert!(!server.log().contains("publish accepted"));
    let _right = Publisher::srt(
        &format!("{}&passphrase=server-wide-secret", server.srt_url(&id)),
        &Source::small(5.0),
    );
    assert!(wait_log(&server, "publish accepted"), "{}", server.log());
}

#[test]
fn per_stream_passphrase() {
    let cfg = format!(
        "grace_period = 1.0\n[[streams]]\nname = \"locked\"\nkey = \"locked-key-123456\"\nsrt_passphrase = \"per-stream-secret\"\n{}",
        common::config("")
    );
    let server = Server::start(&cfg);
    let id = "live/locked-key-123456";
    let mut wrong = Publisher::srt(
        &format!("{}&passphrase=server-wide-secret", server.srt_url(id)),
        &Source::small(3.0),
    );
    let t = Instant::now();
    while !wrong.exited() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(wrong.exited());
    // Streams without their own passphrase stay open.
    let _open = Publisher::srt(
        &server.srt_url(&format!("live/{}", common::KEY)),
        &Source::small(4.0),
    );
    let _right = Publisher::srt(
        &format!("{}&passphrase=per-stream-secret", server.srt_url(id)),
        &Source::small(4.0),
    );
    assert!(wait_log(&server, "stream=locked"), "{}", server.log());
    assert!(wait_log(&server, "stream=cam"), "{}", server.log());
}

#[test]
fn refused_stream_ids_never_log_the_key() {
    let server = Server::start(&common::config(""));
    for (id, why) in [
        ("live/not-a-real-key-77".to_owned(), "unknown stream key"),
        (
            format!("#!::r=live/{},m=request", common::KEY),
            "mode other than publish",
        ),
        ("garbage-without-prefix".to_owned(), "malformed stream id"),
    ] {
        let mut p = Publisher::srt(&server.srt_url(&id), &Source::small(3.0));
        let t = Instant::now();
        while !p.exited() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(p.exited(), "{id} was not refused");
        assert!(wait_log(&server, why), "{why}: {}", server.log());
    }
    let log = server.log();
    assert!(
        !log.contains("not-a-real-key-77") && !log.contains(common::KEY),
        "a key reached the log"
    );
    assert!(!log.contains("publish accepted"));
}

/// ffmpeg in real time with `args`, writing to `url`.
fn ffmpeg_to(args: &[&str], url: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(args)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn silent_caller_garbage_and_unservable_codecs_are_closed() {
    let server = Server::start(&common::config("srt_idle_timeout = 2.0"));
    let url = |key: &str| slt_url(&server, &format!("live/{key}"), "");
    // 1. A caller that connects and never sends anything.
    let mut silent = Command::new("srt-live-transmit")
        .args(["-q", "-a:no", "file://con", &url(common::KEY)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_log(&server, "no data for 2s"), "{}", server.log());
    let _ = silent.kill();
    // 2. Not TS at all: raw PCM noise from ffmpeg over SRT.
    let srt = |key: &str| format!("srt://{}?streamid=live/{key}", server.srt);
    let mut garbage = ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=r=48000",
            "-t",
            "8",
            "-ac",
            "2",
            "-f",
            "s16le",
        ],
        &srt(common::KEY2),
    );
    assert!(
        wait_log(&server, "not an MPEG-TS stream"),
        "{}",
        server.log()
    );
    let _ = garbage.kill();
    // 3. A PMT with neither H.264 nor AAC (MPEG-1 Layer II audio): refused with the reason.
    // (AAC alone is an audio-only stream and is served: tests/audio_only.rs.)
    let mut audio_only = ffmpeg_to(
        &[
            "-f", "lavfi", "-i", "sine", "-t", "4", "-c:a", "mp2", "-f", "mpegts",
        ],
        &srt(common::KEY),
    );
    assert!(
        wait_log(&server, "neither H.264 video nor AAC audio"),
        "{}",
        server.log()
    );
    let _ = audio_only.kill();
    let _ = silent.wait();
    let _ = garbage.wait();
    let _ = audio_only.wait();
}

#[test]
fn handshake_flood_is_limited_and_a_live_stream_keeps_flowing() {
    let server = Server::start(&common::config("grace_period = 1.0"));
    let _live = Publisher::srt(
        &server.srt_url(&format!("live/{}", common::KEY2)),
        &Source::small(25.0),
    );
    let rt = common::runtime();
    let url = format!("{}/live/other/source/index.m3u8", server.base());
    let before = rt.block_on(async {
        let c = hls::client();
        let (status, text) = hls::wait_for(&c, &url).await;
        assert_eq!(status, 200, "{text}");
        MediaPlaylist::parse(&hls::get_text(&c, &url).await.1).unwrap()
    });
    // 30 handshakes from one address within a second (unknown keys).
    let flood: Vec<Child> = (0..30)
        .map(|i| {
            Command::new("srt-live-transmit")
                .args(["-q", "-a:no", "-t:3", "file://con"])
                .arg(slt_url(&server, &format!("live/flood-key-{i}"), ""))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(
        wait_log(&server, "too many from this address"),
        "{}",
        server.log()
    );
    for mut c in flood {
        let _ = c.kill();
        let _ = c.wait();
    }
    let after = rt.block_on(async {
        let c = hls::client();
        let t = Instant::now();
        loop {
            let pl = MediaPlaylist::parse(&hls::get_text(&c, &url).await.1).unwrap();
            if pl.last_complete_msn() >= before.last_complete_msn().map(|m| m + 2)
                || t.elapsed() > Duration::from_secs(15)
            {
                break pl;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(
        after.last_complete_msn() >= before.last_complete_msn().map(|m| m + 2),
        "the live SRT stream stalled during the flood"
    );
    assert!(!after.text.contains("DISCONTINUITY"));
}
