"""Driver for bench/origin.sh. Prints a report and writes bench/out/origin.json."""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
BIN = os.path.join(ROOT, "target", "release", "ferrocast")
TICK = os.sysconf("SC_CLK_TCK")


def source(seconds):
    """A 1280x720@30 H.264 High (B-frames, 2 s GOP) + AAC FLV at ~3 Mb/s, encoded once."""
    path = os.path.join(OUT, f"source-{seconds}s.flv")
    if not os.path.exists(path):
        os.makedirs(OUT, exist_ok=True)
        print(f"encoding a {seconds}s 720p source once ({path}) ...", flush=True)
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(seconds), "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast",
             "-bf", "2", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
             "-b:v", "2900k", "-maxrate", "3000k", "-bufsize", "3000k", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "96k", "-ac", "2", path],
            check=True)
    return path


def publish(path, url):
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", path, "-c", "copy",
         "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def sample(pid, seconds, settle=4.0):
    """CPU seconds used and RSS samples over `seconds`, after `settle` seconds of warm-up."""
    time.sleep(settle)
    c0, _ = proc_cpu_rss(pid)
    t0 = time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        try:
            rss.append(proc_cpu_rss(pid)[1])
        except FileNotFoundError:
            break
    c1, _ = proc_cpu_rss(pid)
    wall = time.monotonic() - t0
    return (c1 - c0) / wall, rss


def histogram(text, name):
    buckets = []
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\d+)$', text, re.M):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets.append((le, int(m.group(2))))
    return buckets


def quantile(buckets, q):
    """Prometheus-style histogram_quantile (linear within a bucket)."""
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1)
        prev_le, prev_c = le, c
    return prev_le


def start_server(keys, extra=""):
    """Starts the release origin on ephemeral ports with these stream keys (names s0, s1, …).
    Returns (process, {"rtmp", "http", "srt"} addresses, temp dir)."""
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "bench.toml")
    with open(cfg, "w") as f:
        f.write("grace_period = 2.0\n" + extra)
        for i, k in enumerate(keys):
            f.write(f'[[streams]]\nname = "s{i}"\nkey = "{k}"\n')
    server = subprocess.Popen(
        [BIN, "serve", "--config", cfg, "--rtmp", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--srt", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RUST_LOG": "warn"})
    line = server.stdout.readline()
    addrs = {k: re.search(rf"{k}=(\S+)", line).group(1) for k in ("rtmp", "http", "srt")}
    return server, addrs, tmp


def run_origin(n, seconds, src):
    server, addrs, tmp = start_server([f"bench-key-{i:04d}" for i in range(n)])
    rtmp, http = addrs["rtmp"], addrs["http"]
    pubs = [publish(src, f"rtmp://{rtmp}/live/bench-key-{i:04d}") for i in range(n)]
    try:
        cpu, rss = sample(server.pid, seconds)
        metrics = urllib.request.urlopen(f"http://{http}/metrics").read().decode()
        streams = json.loads(urllib.request.urlopen(f"http://{http}/api/streams").read())
    finally:
        for p in pubs:
            p.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    ppd = histogram(metrics, "ferrocast_part_publish_delay_seconds")
    its = histogram(metrics, "ferrocast_ingest_to_servable_seconds")
    window = sum(r["bytes_held"] for s in streams["streams"] for r in s["renditions"])
    return {
        "streams": n,
        "cpu_cores": cpu,
        "rss_max_mib": max(rss) / 2**20 if rss else 0,
        "rss_avg_mib": sum(rss) / len(rss) / 2**20 if rss else 0,
        "window_bytes_mib": window / 2**20,
        "part_publish_delay_ms": {"p50": quantile(ppd, 0.5) * 1e3, "p99": quantile(ppd, 0.99) * 1e3,
                                  "count": ppd[-1][1] if ppd else 0},
        "ingest_to_servable_ms": {"p50": quantile(its, 0.5) * 1e3, "p99": quantile(its, 0.99) * 1e3,
                                  "count": its[-1][1] if its else 0},
    }


def run_ffmpeg_peer(seconds, src):
    """ffmpeg as the peer doing the same job: RTMP in, fMP4 HLS (2 s segments) out, to tmpfs."""
    out = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    port = 19350 + os.getpid() % 500
    peer = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-listen", "1", "-f", "flv",
         "-i", f"rtmp://127.0.0.1:{port}/live/x", "-c", "copy", "-f", "hls",
         "-hls_segment_type", "fmp4", "-hls_time", "2", "-hls_list_size", "6",
         "-hls_flags", "delete_segments+independent_segments", os.path.join(out, "index.m3u8")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    pub = publish(src, f"rtmp://127.0.0.1:{port}/live/x")
    try:
        cpu, rss = sample(peer.pid, seconds)
    finally:
        pub.kill()
        peer.kill()
        peer.wait()
        shutil.rmtree(out, ignore_errors=True)
    return {"cpu_cores": cpu, "rss_max_mib": max(rss) / 2**20 if rss else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--streams", default="1 10")
    args = ap.parse_args()
    src = source(args.duration + 10)
    results = {"duration_s": args.duration, "runs": []}
    for n in [int(x) for x in args.streams.split()]:
        print(f"origin with {n} publisher(s) for {args.duration}s ...", flush=True)
        results["runs"].append(run_origin(n, args.duration, src))
    print(f"ffmpeg RTMP→fMP4-HLS peer with 1 publisher for {args.duration}s ...", flush=True)
    results["ffmpeg_peer"] = run_ffmpeg_peer(args.duration, src)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "origin.json"), "w") as f:
        json.dump(results, f, indent=2)
    print()
    print(f"{'streams':>7} {'CPU cores':>9} {'RSS max MiB':>11} {'window MiB':>10} "
          f"{'part delay p50/p99 ms':>22} {'ingest→servable p50/p99 ms':>27}")
    for r in results["runs"]:
        p, i = r["part_publish_delay_ms"], r["ingest_to_servable_ms"]
        print(f"{r['streams']:>7} {r['cpu_cores']:>9.3f} {r['rss_max_mib']:>11.1f} "
              f"{r['window_bytes_mib']:>10.1f} {p['p50']:>10.2f} / {p['p99']:<9.2f} "
              f"{i['p50']:>12.1f} / {i['p99']:<10.1f}")
    one = next((r for r in results["runs"] if r["streams"] == 1), None)
    peer = results["ffmpeg_peer"]
    if one and peer["cpu_cores"] > 0:
        print(f"\nCPU for one stream: ferrocast {one['cpu_cores']:.3f} cores vs ffmpeg RTMP→fMP4 HLS "
              f"{peer['cpu_cores']:.3f} cores (ratio {one['cpu_cores'] / peer['cpu_cores']:.2f}; "
              f"ffmpeg writes 2 s segments only, no parts, no HTTP)")
    print("targets: part publish delay p99 ≤ 20 ms; ingest→servable p99 ≤ PART-TARGET + 50 ms (383 ms)")


if __name__ == "__main__":
    main()
