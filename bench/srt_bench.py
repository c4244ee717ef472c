"""Driver for bench/srt.sh. Prints a report and writes bench/out/srt.json."""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

from origin_bench import OUT, sample, source, start_server


def stop(server, tmp, procs):
    for p in procs:
        p.kill()
        p.wait()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


def ingest_cpu(protocol, n, seconds, src):
    keys = [f"bench-key-{i:04d}" for i in range(n)]
    server, a, tmp = start_server(keys)
    procs = []
    for k in keys:
        if protocol == "rtmp":
            out = ["-f", "flv", f"rtmp://{a['rtmp']}/live/{k}"]
        else:
            out = ["-f", "mpegts", f"srt://{a['srt']}?streamid=live/{k}"]
        procs.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", src, "-c", "copy"] + out,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        cpu, rss = sample(server.pid, seconds)
        streams = json.loads(urllib.request.urlopen(f"http://{a['http']}/api/streams").read())
        live = sum(1 for s in streams["streams"] if s["publishing"])
    finally:
        stop(server, tmp, procs)
    return {"protocol": protocol, "streams": n, "live": live, "cpu_cores": cpu,
            "cpu_per_stream": cpu / n, "rss_max_mib": max(rss) / 2**20 if rss else 0}


def pdt(playlist_text):
    m = re.search(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", playlist_text)
    return datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")) if m else None


def added_latency(src, latency_ms=120):
    keys = ["bench-key-rtmp", "bench-key-srt"]
    server, a, tmp = start_server(keys)
    tee = (f"[f=flv]rtmp://{a['rtmp']}/live/{keys[0]}|"
           f"[f=mpegts:bsfs/v=h264_mp4toannexb]srt://{a['srt']}?streamid=live/{keys[1]}"
           f"&latency={latency_ms * 1000}")
    pub = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", src, "-c", "copy",
         "-map", "0", "-f", "tee", tee],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(6)
        texts = [urllib.request.urlopen(f"http://{a['http']}/live/s{i}/source/index.m3u8").read().decode()
                 for i in range(2)]
    finally:
        stop(server, tmp, [pub])
    rtmp, srt = pdt(texts[0]), pdt(texts[1])
    return (srt - rtmp).total_seconds() * 1000 if rtmp and srt else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--streams", type=int, default=4)
    args = ap.parse_args()
    src = source(args.duration + 10)
    results = {"duration_s": args.duration}
    for proto in ("rtmp", "srt"):
        print(f"{proto}: {args.streams} publishers for {args.duration}s ...", flush=True)
        results[proto] = ingest_cpu(proto, args.streams, args.duration, src)
    print("added latency: one source tee'd to RTMP and SRT (3 runs) ...", flush=True)
    results["srt_added_latency_ms"] = [added_latency(src) for _ in range(3)]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "srt.json"), "w") as f:
        json.dump(results, f, indent=2)
    r, s = results["rtmp"], results["srt"]
    print()
    for x in (r, s):
        print(f"{x['protocol']:>5}: {x['live']}/{x['streams']} live, origin CPU {x['cpu_cores']:.3f} cores "
              f"({x['cpu_per_stream'] * 1000:.1f} millicores/stream), RSS max {x['rss_max_mib']:.1f} MiB")
    if r["cpu_per_stream"] > 0:
        print(f"SRT/RTMP ingest CPU per stream: {s['cpu_per_stream'] / r['cpu_per_stream']:.2f}")
    lat = results["srt_added_latency_ms"]
    print(f"SRT arrival after RTMP for the same first frame (latency=120 ms): "
          + ", ".join(f"{v:.0f} ms" for v in lat))


if __name__ == "__main__":
    main()
