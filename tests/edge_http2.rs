//! The edge speaks HTTP/2: cleartext h2c (prior knowledge) and, with a certificate, TLS with
//! ALPN `h2` (what Apple's players need for LL-HLS). Checked with the real curl client.

#![allow(clippy::unwrap_used)]

mod common;

use common::{hls, Publisher, Server, Source};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct EdgeProc(Child, String);

impl Drop for EdgeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_edge(config: &str, dir: &std::path::Path) -> EdgeProc {
    let cfg = dir.join("edge.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrocast"))
        .args(["edge", "--config"])
        .arg(&cfg)
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .to_owned();
    EdgeProc(child, addr)
}

/// `curl` → (HTTP version, status, body).
fn curl(args: &[&str], url: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (v, code) = tail.split_once(' ').unwrap();
    (v.to_owned(), code.to_owned(), body.to_owned())
}

fn wait_ready(server: &Server) {
    let rt = common::runtime();
    rt.block_on(async {
        hls::wait_stream(&hls::client(), &server.base(), "cam").await;
    });
}

#[test]
fn h2c_with_prior_knowledge() {
    let server = Server::start(&common::config(""));
    let _p = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::small(15.0));
    wait_ready(&server);
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(&format!("origin = \"{}\"\n", server.base()), dir.path());
    let url = format!("http://{}/live/cam/source/index.m3u8", edge.1);
    let (v, code, body) = curl(&["--http2-prior-knowledge"], &url);
    assert_eq!((v.as_str(), code.as_str()), ("2", "200"), "{body}");
    assert!(body.contains("#EXT-X-PART-INF"));
    // Plain HTTP/1.1 still works on the same port.
    let (v, code, _) = curl(&["--http1.1"], &url);
    assert_eq!((v.as_str(), code.as_str()), ("1.1", "200"));
}

#[test]
fn tls_with_alpn_h2() {
    let server = Server::start(&common::config(""));
    let _p = Publisher::rtmp(&server.rtmp_url(common::KEY), &Source::small(15.0));
    wait_ready(&server);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("edge.crt"), dir.path().join("edge.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl could not make a test certificate");
    let edge = start_edge(
        &format!(
            "origin = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            server.base(),
            cert.display(),
            key.display()
        ),
        dir.path(),
    );
    let url = format!("https://{}/live/cam/source/index.m3u8", edge.1);
    let cacert = cert.display().to_string();
    let (v, code, body) = curl(&["--http2", "--cacert", &cacert], &url);
    assert_eq!((v.as_str(), code.as_str()), ("2", "200"), "{body}");
    assert!(body.contains("#EXT-X-PART-INF"));
    // A part over TLS + h2, streamed like over HTTP/1.1.
    let pl = hls::MediaPlaylist::parse(&body).unwrap();
    let hint = pl.preload_hint.unwrap();
    let (v, code, _) = curl(
        &["--http2", "--cacert", &cacert, "-o", "/dev/null"],
        &format!("https://{}/live/cam/source/{hint}", edge.1),
    );
    assert_eq!((v.as_str(), code.as_str()), ("2", "200"));
    // A client that offers only HTTP/1.1 gets it.
    let (v, code, _) = curl(&["--http1.1", "--cacert", &cacert], &url);
    assert_eq!((v.as_str(), code.as_str()), ("1.1", "200"));
}
