"""Driver for bench/edge.sh. Prints a report and writes bench/out/edge.json."""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from origin_bench import BIN, OUT, ROOT, proc_cpu_rss, publish, source, start_server

PLAYER = os.path.join(ROOT, "target", "release", "ferrocast-player")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def nginx_dirs(*extra):
    """A temp dir for an nginx run, with the dirs nginx writes (its workers drop privileges)."""
    tmp = tempfile.mkdtemp()
    os.chmod(tmp, 0o755)
    for d in ("proxy_temp", "client_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp", *extra):
        os.makedirs(os.path.join(tmp, d))
        os.chmod(os.path.join(tmp, d), 0o777)
    return tmp


def get(url):
    return urllib.request.urlopen(url, timeout=30).read().decode()


def http_total(metrics_text):
    return sum(int(m.group(1)) for m in re.finditer(r"^ferrocast_http_responses_total\{[^}]*\} (\d+)$", metrics_text, re.M))


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{seconds}s", url], capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        codes = [subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", url], capture_output=True, text=True).stdout
                 for _ in range(3)]
        raise RuntimeError(f"wrk saw errors from {url}:\n{out}\n{codes}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--profile", choices=["default", "lowest"], default="default",
                    help="the origin's latency_profile (lowest: 0.2 s parts, more requests per viewer)")
    ap.add_argument("--load-only", action="store_true", help="skip the wrk throughput comparison")
    args = ap.parse_args()
    src = source(80)
    tmp = nginx_dirs("cache")
    procs = []
    try:
        # A long window keeps the benchmarked objects at the origin for the whole run.
        origin, addrs, origin_tmp = start_server(["bench-key-0001"], extra=f'window_segments = 60\nlatency_profile = "{args.profile}"\n')
        procs.append(origin)
        rtmp, ohttp = addrs["rtmp"], addrs["http"]
        procs.append(publish(src, f"rtmp://{rtmp}/live/bench-key-0001"))
        edge = subprocess.Popen([BIN, "edge", "--origin", f"http://{ohttp}", "--http", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "RUST_LOG": "warn"})
        procs.append(edge)
        ehttp = re.search(r"http=(\S+)", edge.stdout.readline()).group(1)
        nport = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  proxy_temp_path {tmp}/proxy_temp;
  client_body_temp_path {tmp}/client_temp;
  fastcgi_temp_path {tmp}/fastcgi_temp;
  uwsgi_temp_path {tmp}/uwsgi_temp;
  scgi_temp_path {tmp}/scgi_temp;
  proxy_cache_path {tmp}/cache levels=1:2 keys_zone=hls:64m max_size=1g inactive=60s use_temp_path=off;
  upstream origin {{ server {ohttp}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{nport};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hls;
      proxy_cache_lock on;
      proxy_cache_key $uri$is_args$args;
      add_header X-Cache-Status $upstream_cache_status;
    }}
  }}
}}
""")
        nginx = subprocess.Popen([NGINX, "-c", conf, "-p", tmp], stderr=open(os.path.join(OUT, "nginx-error.log"), "w"))
        procs.append(nginx)
        # Wait for the stream, then pick a complete part of ~100 KB and a segment.
        media = f"http://{ohttp}/live/s0/source/index.m3u8"
        for _ in range(100):
            try:
                pl = get(media)
                break
            except Exception:
                time.sleep(0.2)
        time.sleep(6)
        pl = get(media)
        parts = re.findall(r'URI="([^"]+\.\d+\.m4s)"', pl)
        segs = [l for l in pl.splitlines() if l.endswith(".m4s") and not l.startswith("#")]
        part, seg = parts[len(parts) // 2], segs[-1]
        results = {"part": part, "segment": seg, "throughput": {}}
        sizes = {}
        for name, base in (("origin", f"http://{ohttp}"), ("edge", f"http://{ehttp}"), ("nginx", f"http://127.0.0.1:{nport}")):
            for obj in (part, seg):
                body = urllib.request.urlopen(f"{base}/live/s0/source/{obj}").read()  # warms the caches
                sizes.setdefault(obj, set()).add(len(body))
        for obj, lens in sizes.items():
            assert len(lens) == 1, f"{obj}: origin, edge and nginx disagree on the size: {lens}"
            r = urllib.request.urlopen(f"http://127.0.0.1:{nport}/live/s0/source/{obj}")
            r.read()
            assert r.headers.get("X-Cache-Status") == "HIT", f"nginx did not cache {obj}: {r.headers}"
            r = urllib.request.urlopen(f"http://{ehttp}/live/s0/source/{obj}")
            r.read()
            assert r.headers.get("x-cache") == "hit", f"the edge did not cache {obj}: {r.headers}"
        results["sizes"] = {obj: lens.pop() for obj, lens in sizes.items()}
        print("cached-object throughput, wrk -t1 -c64, 2 rounds each ...", flush=True)
        for obj, label in () if args.load_only else ((part, "part"), (seg, "segment")):
            rounds = {"edge": [], "nginx": []}
            for _ in range(2):
                rounds["edge"].append(wrk(f"http://{ehttp}/live/s0/source/{obj}", 8))
                rounds["nginx"].append(wrk(f"http://127.0.0.1:{nport}/live/s0/source/{obj}", 8))
            results["throughput"][label] = {k: max(v) for k, v in rounds.items()}
        # Coalescing and memory under LL-HLS viewers.
        m0 = http_total(get(f"http://{ohttp}/metrics"))
        cpu0, rss0 = proc_cpu_rss(edge.pid)
        t0 = time.time()
        print(f"{args.viewers} LL-HLS viewers on the edge for {args.duration}s ...", flush=True)
        load = subprocess.Popen([PLAYER, "load", f"http://{ehttp}/live/s0/source/index.m3u8",
                                 "--viewers", str(args.viewers), "--duration", str(args.duration), "--json"],
                                stdout=subprocess.PIPE, text=True)
        rss_max = rss0
        while load.poll() is None:
            time.sleep(0.5)
            rss_max = max(rss_max, proc_cpu_rss(edge.pid)[1])
        report = json.loads(load.stdout.read())
        cpu1, _ = proc_cpu_rss(edge.pid)
        edge_cores = (cpu1 - cpu0) / (time.time() - t0)
        m1 = http_total(get(f"http://{ohttp}/metrics"))
        origin_requests = m1 - m0 - 1  # minus our own /metrics scrape
        results["load"] = report
        results["origin_requests"] = origin_requests
        results["origin_requests_per_1000_viewers"] = origin_requests * 1000 / args.viewers
        results["edge_rss_before_mib"] = rss0 / 2**20
        results["edge_rss_max_mib"] = rss_max / 2**20
        results["edge_mib_per_1000_viewers"] = (rss_max - rss0) / 2**20 * 1000 / args.viewers
        results["profile"] = args.profile
        results["edge_cpu_cores"] = edge_cores
        results["viewers_per_edge_core"] = args.viewers / edge_cores if edge_cores > 0 else None
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except Exception:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        if "origin_tmp" in locals():
            shutil.rmtree(origin_tmp, ignore_errors=True)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "edge.json"), "w") as f:
        json.dump(results, f, indent=2)
    print()
    for label, t in results["throughput"].items():
        ratio = t["edge"] / t["nginx"] if t["nginx"] else float("nan")
        size = results["sizes"][results["part"] if label == "part" else results["segment"]]
        print(f"cached {label:<8} ({size / 1024:.0f} KiB) edge {t['edge']:>8.0f} req/s   "
              f"nginx proxy_cache {t['nginx']:>8.0f} req/s   ratio {ratio:.2f}")
    r = results["load"]
    print(f"{r['viewers']} viewers: {r['requests_per_second']:.0f} req/s at the edge, {r['errors']} errors; "
          f"origin saw {results['origin_requests']} requests "
          f"({results['origin_requests_per_1000_viewers']:.0f} per 1000 viewers over {args.duration}s)")
    print(f"latency profile {results['profile']}: {r['requests_per_second'] / r['viewers']:.1f} requests/s per viewer; "
          f"edge CPU {results['edge_cpu_cores']:.2f} cores → {results['viewers_per_edge_core'] or 0:.0f} viewers per edge core "
          f"(the load tool shares the machine)")
    print(f"edge RSS {results['edge_rss_before_mib']:.1f} → {results['edge_rss_max_mib']:.1f} MiB "
          f"({results['edge_mib_per_1000_viewers']:.1f} MiB per 1000 viewers); load tool CPU {r['cpu_cores']:.2f} cores")
    print("targets: throughput ratio ≥ 1.0 vs nginx; one origin fetch per object per edge regardless of viewers")


if __name__ == "__main__":
    main()
