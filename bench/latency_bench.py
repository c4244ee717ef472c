"""Driver for bench/latency.sh. Prints a report and writes bench/out/latency.json.

Glass-to-glass latency, publish → origin → edge → player, with the visual clock code: a
clock-stamped 720p30 source published by `ferrocast-player publish` (ffmpeg CLI, x264
zerolatency, RTMP), played through one edge at the default PART-TARGET by
  (1) the Rust player (`ferrocast-player watch`, ffmpeg decoder, buffer model), and
  (2) hls.js in headless Chromium (player-test/browser/run.mjs, lowLatencyMode),
then, side by side on the same machine, (3) the same source through nginx-rtmp's classic HLS
(Debian's libnginx-mod-rtmp, 2 s fragments) played by the same hls.js page.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from edge_bench import NGINX, PLAYER, free_port, nginx_dirs
from origin_bench import BIN, OUT, ROOT

BROWSER = os.path.join(ROOT, "player-test", "browser")
KEY = "latency-bench-key-0123456789"


def wait_ok(url, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} never answered 200")


def start_cluster(tmp):
    cfg = os.path.join(tmp, "origin.toml")
    with open(cfg, "w") as f:
        f.write(f'[[streams]]\nname = "bench"\nkey = "{KEY}"\n')
    p = subprocess.Popen(
        ["bash", os.path.join(ROOT, "deploy", "local-cluster.sh"), "--edges", "1", "--bin", BIN, "--config", cfg],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    info = {"proc": p}
    for line in p.stdout:
        w = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if line.startswith("origin pid="):
            info["rtmp"], info["origin"] = w["rtmp"], w["http"]
        elif line.startswith("edge pid="):
            info["edge"] = w["http"]
        elif line.strip() == "cluster ready":
            return info
    raise RuntimeError("cluster did not start")


def publisher(url, seconds):
    return subprocess.Popen([PLAYER, "publish", url, "--duration", str(seconds), "--size", "1280x720", "--fps", "30"],
                            stdout=subprocess.DEVNULL, start_new_session=True)


def rust_player(url, seconds):
    out = subprocess.run([PLAYER, "watch", url, "--duration", str(seconds), "--json"],
                         capture_output=True, text=True, timeout=seconds + 60)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "player": "ferrocast-player (Rust)",
        "p50_ms": r["latency_ms"]["p50"], "p95_ms": r["latency_ms"]["p95"], "max_ms": r["latency_ms"]["max"],
        "frames": r["latency_ms"]["samples"],
        "pdt_p50_ms": r["pdt_latency_ms"]["p50"],
        "capture_to_pdt_ms": r["visual_minus_pdt_ms"]["p50"],
        "stalls": r["stalls"]["count"], "stall_s": round(r["stalls"]["total_s"], 3),
        "ttff_ms": r["ttff_ms"], "errors": r["errors"], "raw": r,
    }


def hlsjs(url, seconds, shot):
    out = subprocess.run(["node", os.path.join(BROWSER, "run.mjs"), "--url", url, "--duration", str(seconds),
                          "--screenshot", shot], capture_output=True, text=True, timeout=seconds + 90)
    if out.returncode != 0:
        raise RuntimeError(f"run.mjs failed: {out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "player": f"hls.js {r.get('hlsVersion')} in Chromium {r.get('browser')}",
        "p50_ms": r["latencyMs"]["p50"], "p95_ms": r["latencyMs"]["p95"], "max_ms": r["latencyMs"]["max"],
        "frames": r["presentedWithCode"],
        "hlsjs_latency_p50_s": r["hlsLatencyS"]["p50"],
        "stalls": r["stalls"]["count"], "stall_s": round(r["stalls"]["totalS"], 3),
        "ttff_ms": r["ttffMs"], "errors": len(r["errors"]), "fatal_errors": r["fatalErrors"], "raw": r,
    }


NGINX_CONF = """
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp};
    application live {{
      live on;
      hls on;
      hls_path {tmp}/hls;
      hls_fragment 2s;
      hls_playlist_length 10s;
    }}
  }}
}}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_temp;
  proxy_temp_path {tmp}/proxy_temp;
  fastcgi_temp_path {tmp}/fastcgi_temp;
  uwsgi_temp_path {tmp}/uwsgi_temp;
  scgi_temp_path {tmp}/scgi_temp;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{
    listen 127.0.0.1:{http};
    location /hls/ {{
      alias {tmp}/hls/;
      add_header Access-Control-Allow-Origin * always;
      add_header Cache-Control no-cache;
    }}
  }}
}}
"""


def nginx_rtmp(seconds, warmup, shot):
    tmp = nginx_dirs("hls")
    rtmp, http = free_port(), free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, rtmp=rtmp, http=http))
    nginx = subprocess.Popen([NGINX, "-c", conf], start_new_session=True)
    pub = None
    try:
        time.sleep(1)
        pub = publisher(f"rtmp://127.0.0.1:{rtmp}/live/bench", seconds + warmup + 40)
        url = f"http://127.0.0.1:{http}/hls/bench.m3u8"
        wait_ok(url, 60)
        time.sleep(warmup)
        r = hlsjs(url, seconds, shot)
        r["player"] += " — nginx-rtmp HLS (2 s fragments)"
        return r
    finally:
        for p in (pub, nginx):
            if p:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--no-peer", action="store_true", help="skip the nginx-rtmp comparison")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp()
    warmup = 6
    results = []
    cluster = start_cluster(tmp)
    pub = None
    try:
        pub = publisher(f"rtmp://{cluster['rtmp']}/live/{KEY}", 2 * args.duration + warmup + 60)
        wait_ok(f"http://{cluster['origin']}/live/bench/index.m3u8", 60)
        time.sleep(warmup)
        playlist = urllib.request.urlopen(f"http://{cluster['edge']}/live/bench/source/index.m3u8").read().decode()
        part_target = float(playlist.split("PART-TARGET=")[1].split()[0].split(",")[0])
        url = f"http://{cluster['edge']}/live/bench/index.m3u8"
        results.append(rust_player(url, args.duration))
        results.append(hlsjs(url, args.duration, os.path.join(OUT, "latency-hlsjs.png")))
    finally:
        if pub:
            os.killpg(pub.pid, signal.SIGTERM)
            pub.wait()
        os.killpg(cluster["proc"].pid, signal.SIGTERM)
        cluster["proc"].wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_peer:
        results.append(nginx_rtmp(args.duration, 12, os.path.join(OUT, "latency-nginx-rtmp-hlsjs.png")))

    print(f"\nGlass-to-glass latency, {args.duration} s each, 720p30 clock-stamped source, one edge, "
          f"PART-TARGET {part_target:.3f} s (capture → presented frame, from the visual clock code)")
    print(f"{'player':70} {'p50':>7} {'p95':>7} {'max':>7} {'stalls':>7} {'TTFF':>7}")
    for r in results:
        print(f"{r['player'][:70]:70} {r['p50_ms']!s:>7} {r['p95_ms']!s:>7} {r['max_ms']!s:>7} "
              f"{r['stalls']:>3} {r['stall_s']:>4}s {r['ttff_ms']!s:>6}")
    rust, js = results[0], results[1]
    print(f"\nRust player: PDT latency p50 {rust['pdt_p50_ms']} ms; capture → server stamp (encoder + ingest) "
          f"{rust['capture_to_pdt_ms']} ms; p50 = {rust['p50_ms'] / 1000 / part_target:.1f} × PART-TARGET")
    print(f"hls.js: its own latency estimate p50 {js['hlsjs_latency_p50_s']:.2f} s; "
          f"p50 = {js['p50_ms'] / 1000 / part_target:.1f} × PART-TARGET")
    if len(results) > 2:
        print(f"nginx-rtmp classic HLS / Ferrocast LL-HLS (hls.js p50): {results[2]['p50_ms'] / js['p50_ms']:.1f}×")
    for r in results[:2]:
        ok = r["p50_ms"] <= 1500 and r["p95_ms"] <= 2000 and r["stalls"] == 0
        print(f"target p50 ≤ 1500 ms, p95 ≤ 2000 ms, 0 stalls — {r['player'][:40]}: {'MET' if ok else 'MISSED'}")
    with open(os.path.join(OUT, "latency.json"), "w") as f:
        json.dump({"part_target": part_target, "duration_s": args.duration,
                   "results": [{k: v for k, v in r.items() if k != "raw"} for r in results],
                   "raw": [r["raw"] for r in results]}, f, indent=1)


if __name__ == "__main__":
    main()
