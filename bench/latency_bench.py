"""Driver for bench/latency.sh. Prints a report and writes bench/out/latency.json.

Glass-to-glass latency, publish → origin → edge → player, with the visual clock code: a
clock-stamped 30 fps source published by `ferrocast-player publish` (ffmpeg CLI, RTMP), played
through one edge, in one run:
  (1) the Rust player (`ferrocast-player watch`, ffmpeg decoder, buffer model) and plain hls.js
      (player-test/browser/hlsjs.html, lowLatencyMode) at the default profile, zerolatency source;
  (2) the built-in player page (/live/NAME/, hls.js with the page's catch-up) at the default
      profile (PART-TARGET 0.333 s) and at the lowest-latency profile (0.2 s parts), each with a
      zerolatency source and with an OBS-like one (x264 veryfast, 2 B-frames, no zerolatency);
  (3) side by side on the same machine, the same source through nginx-rtmp's classic HLS
      (Debian's libnginx-mod-rtmp, 2 s fragments) played by the plain hls.js page.
Each row splits glass-to-glass into capture → PDT (encoder, uplink, ingest: the server stamps
PDT on arrival) and PDT → shown (packaging, delivery, the player's buffer), and the page's rows
are held to the targets: PDT → shown ≤ PART-HOLD-BACK + 0.25 s at p50; glass-to-glass p50 ≤
1.0 s with a zerolatency source at the lowest profile; 0 stalls.
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


def start_cluster(tmp, profile="default"):
    cfg = os.path.join(tmp, "origin.toml")
    with open(cfg, "w") as f:
        f.write(f'latency_profile = "{profile}"\n[[streams]]\nname = "bench"\nkey = "{KEY}"\n')
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


# 360p: on a 2-core machine a 720p encode beside Chromium's decode starves both, and the
# publisher then skips frames (the clock code jumps, which reads as latency falling in steps).
SIZE = "640x360"


def publisher(url, seconds, obs_like=False):
    cmd = [PLAYER, "publish", url, "--duration", str(seconds), "--size", SIZE, "--fps", "30"]
    if obs_like:
        cmd.append("--obs-like")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)


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


def browser(url, seconds, shot, player="hlsjs"):
    out = subprocess.run(["node", os.path.join(BROWSER, "run.mjs"), "--url", url, "--duration", str(seconds),
                          "--player", player, "--screenshot", shot],
                         capture_output=True, text=True, timeout=seconds + 90)
    if out.returncode != 0:
        raise RuntimeError(f"run.mjs failed: {out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "player": f"{r.get('player')} in Chromium {r.get('browser')}",
        "p50_ms": r["latencyMs"]["p50"], "p95_ms": r["latencyMs"]["p95"], "max_ms": r["latencyMs"]["max"],
        "frames": r["presentedWithCode"],
        "pdt_p50_ms": r["pdtToShownMs"]["p50"], "pdt_p95_ms": r["pdtToShownMs"]["p95"],
        "capture_to_pdt_ms": r["captureToPdtMs"]["p50"],
        "player_latency_p50_s": r["playerLatencyS"]["p50"], "seeks": r["seeks"],
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
        r = browser(url, seconds, shot)
        r["player"] += " — nginx-rtmp HLS (2 s fragments)"
        return r
    finally:
        for p in (pub, nginx):
            if p:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def part_info(edge):
    playlist = urllib.request.urlopen(f"http://{edge}/live/bench/source/index.m3u8").read().decode()
    target = float(playlist.split("PART-TARGET=")[1].split()[0].split(",")[0])
    hold = float(playlist.split("PART-HOLD-BACK=")[1].split()[0].split(",")[0])
    return target, hold


def run_cluster(profile, obs_like, seconds, players, warmup=6):
    """One cluster at `profile`, one publisher, then each of `players` (name, fn(url)) in turn."""
    tmp = tempfile.mkdtemp()
    cluster = start_cluster(tmp, profile)
    pub = None
    rows = []
    try:
        pub = publisher(f"rtmp://{cluster['rtmp']}/live/{KEY}", len(players) * (seconds + 30) + warmup + 30, obs_like)
        wait_ok(f"http://{cluster['origin']}/live/bench/index.m3u8", 60)
        time.sleep(warmup)
        target, hold = part_info(cluster["edge"])
        for name, play in players:
            r = play(cluster["edge"])
            r.update(row=name, profile=profile, source="OBS-like" if obs_like else "zerolatency",
                     part_target=target, part_hold_back=hold)
            rows.append(r)
            print(f"{name}, {profile} profile, {r['source']}: p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
                  f"stalls {r['stalls']}", flush=True)
    finally:
        if pub:
            os.killpg(pub.pid, signal.SIGTERM)
            pub.wait()
        os.killpg(cluster["proc"].pid, signal.SIGTERM)
        cluster["proc"].wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main():
    global SIZE
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--size", default=SIZE, help="source frame size WxH (default %(default)s)")
    ap.add_argument("--no-peer", action="store_true", help="skip the nginx-rtmp comparison")
    ap.add_argument("--page-only", action="store_true", help="only the built-in page's four rows")
    args = ap.parse_args()
    SIZE = args.size
    os.makedirs(OUT, exist_ok=True)
    d = args.duration
    shot = lambda tag: os.path.join(OUT, f"latency-{tag}.png")  # noqa: E731
    page = lambda tag: (lambda edge: browser(f"http://{edge}/live/bench/", d, shot(tag), "page"))  # noqa: E731
    results = []
    if not args.page_only:
        results += run_cluster("default", False, d, [
            ("Rust player", lambda edge: rust_player(f"http://{edge}/live/bench/index.m3u8", d)),
            ("hls.js", lambda edge: browser(f"http://{edge}/live/bench/index.m3u8", d, shot("hlsjs"))),
        ])
    for profile in ("default", "lowest"):
        for obs_like in (False, True):
            tag = f"page-{profile}-{'obs' if obs_like else 'zerolatency'}"
            results += run_cluster(profile, obs_like, d, [("built-in page", page(tag))])
    if not args.no_peer and not args.page_only:
        r = nginx_rtmp(d, 12, shot("nginx-rtmp-hlsjs"))
        r.update(row="nginx-rtmp HLS + hls.js", profile="2 s fragments", source="zerolatency",
                 part_target=None, part_hold_back=None)
        results.append(r)

    print(f"\nGlass-to-glass latency, {d} s each, {SIZE}@30 clock-stamped source, RTMP, one edge "
          f"(capture → presented frame, from the visual clock code; ms)")
    print(f"{'row':24} {'profile':14} {'source':12} {'p50':>6} {'p95':>6} {'max':>6} "
          f"{'cap→PDT':>8} {'PDT→shown':>10} {'stalls':>9} {'seeks':>5} {'TTFF':>6}")
    for r in results:
        print(f"{r['row']:24} {r['profile']:14} {r['source']:12} {r['p50_ms']!s:>6} {r['p95_ms']!s:>6} "
              f"{r['max_ms']!s:>6} {r['capture_to_pdt_ms']!s:>8} {r.get('pdt_p50_ms')!s:>10} "
              f"{r['stalls']:>3} {r['stall_s']:>4}s {r.get('seeks', '-')!s:>5} {r['ttff_ms']!s:>6}")
    print()
    for r in results:
        if r["row"] != "built-in page":
            continue
        what = f"page, {r['profile']} profile, {r['source']}"
        bound = r["part_hold_back"] + 0.25
        pdt_ok = r["pdt_p50_ms"] is not None and r["pdt_p50_ms"] <= bound * 1000
        print(f"target PDT → shown p50 ≤ PART-HOLD-BACK + 0.25 s = {bound * 1000:.0f} ms — {what}: "
              f"{r['pdt_p50_ms']} ms {'MET' if pdt_ok else 'MISSED'}")
        print(f"target 0 stalls — {what}: {r['stalls']} {'MET' if r['stalls'] == 0 else 'MISSED'}")
        if r["profile"] == "lowest" and r["source"] == "zerolatency":
            ok = r["p50_ms"] is not None and r["p50_ms"] <= 1000
            print(f"target glass-to-glass p50 ≤ 1000 ms — {what}: {r['p50_ms']} ms {'MET' if ok else 'MISSED'}")
    peer = [r for r in results if r["row"].startswith("nginx-rtmp")]
    ours = [r for r in results if r["row"] == "built-in page" and r["profile"] == "default" and r["source"] == "zerolatency"]
    if peer and ours and ours[0]["p50_ms"]:
        print(f"nginx-rtmp classic HLS / Ferrocast built-in page at defaults (p50): "
              f"{peer[0]['p50_ms'] / ours[0]['p50_ms']:.1f}×")
    with open(os.path.join(OUT, "latency.json"), "w") as f:
        json.dump({"duration_s": d, "size": SIZE,
                   "results": [{k: v for k, v in r.items() if k != "raw"} for r in results],
                   "raw": [r["raw"] for r in results]}, f, indent=1)


if __name__ == "__main__":
    main()
