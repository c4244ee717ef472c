//! Acceptance 1: the real ffmpeg CLI publishes 1280x720@30 H.264 High (B-frames) + AAC over
//! RTMP for 20+ s; a client follows the LL-HLS playlist with blocking reloads and every part
//! and segment is checked with ffprobe/ffmpeg.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Publisher, Server, Source};
use std::time::Duration;

#[test]
fn rtmp_publish_plays_as_ll_hls() {
    let server = Server::start(&common::config("grace_period = 2.0"));
    let _publisher = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::hd(24.0));
    let rt = common::runtime();
    let followed = rt.block_on(async {
        let c = hls::client();
        let (status, master) =
            hls::wait_for(&c, &format!("{}/live/cam/index.m3u8", server.base())).await;
        assert_eq!(status, 200, "{master}");
        assert!(master.contains("RESOLUTION=1280x720"), "{master}");
        let uri = master.lines().find(|l| !l.starts_with('#')).unwrap();
        let url = format!("{}/live/cam/{uri}", server.base());
        hls::follow(&c, &url, Duration::from_secs(45)).await
    });
    // 24 s of media at 2 s GOP: about a dozen segments were complete while we followed.
    assert!(
        followed.segments.len() >= 8,
        "only {} segments",
        followed.segments.len()
    );
    assert!(
        followed.parts.len() >= 50,
        "only {} parts",
        followed.parts.len()
    );
    // The client used blocking reloads: most reloads waited for the next part (no polling).
    let waited = followed
        .blocking_times
        .iter()
        .filter(|d| **d > Duration::from_millis(50))
        .count();
    assert!(
        waited * 2 > followed.blocking_times.len(),
        "blocking reloads did not block: {:?}",
        followed.blocking_times
    );
    assert!(
        followed.playlists.last().unwrap().endlist,
        "stream should end after the publisher"
    );
    common::check_followed_media(&followed, 3000);
}

/// RTMPS: ffmpeg publishes `rtmps://` (a self-signed certificate made here, verification off on
/// the client, as with a private CA); the stream plays and every part and segment passes the
/// media checks. A plain RTMP client on the TLS port is refused cleanly (the TLS handshake
/// fails, said in the log) while the RTMPS publish goes on; the key is not in the log.
#[test]
fn rtmps_publish_plays_and_plain_rtmp_on_the_tls_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (./test.sh installs it)");
    assert!(made.status.success(), "{made:?}");
    let server = Server::start(&common::config(&format!(
        "grace_period = 2.0\nrtmps_cert = \"{}\"\nrtmps_key = \"{}\"",
        cert.display(),
        key.display()
    )));
    let rtmps = server.rtmps.expect("RTMPS is on when cert and key are set");
    let _publisher = Publisher::rtmp(
        &format!("rtmps://{rtmps}/live/{}", common::KEY),
        &Source::small(16.0),
    );
    let rt = common::runtime();
    let c = hls::client();
    let media = rt.block_on(async {
        let (status, master) =
            hls::wait_for(&c, &format!("{}/live/cam/index.m3u8", server.base())).await;
        assert_eq!(status, 200, "{master}");
        let uri = master.lines().find(|l| !l.starts_with('#')).unwrap();
        format!("{}/live/cam/{uri}", server.base())
    });
    // Plain RTMP on the TLS port, while the RTMPS publish runs.
    let plain = Publisher::rtmp(
        &format!("rtmp://{rtmps}/live/{}", common::KEY2),
        &Source::small(5.0),
    );
    let (ok, said) = plain.wait();
    assert!(!ok, "plain RTMP on the RTMPS port must fail: {said}");
    assert!(
        server.wait_log("TLS handshake failed", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let followed = rt.block_on(hls::follow(&c, &media, Duration::from_secs(30)));
    assert!(followed.playlists.last().unwrap().endlist);
    assert!(
        followed.segments.len() >= 4,
        "{} segments",
        followed.segments.len()
    );
    common::check_followed_media(&followed, 3000);
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("rtmps{") && l.contains("publish accepted")),
        "{log}"
    );
    assert!(
        !log.contains(common::KEY) && !log.contains(common::KEY2),
        "a key in the log: {log}"
    );
}
