"""Driver for bench/ladder.sh. Prints a report and writes bench/out/ladder.json.

(1) CPU per media second, paced at real time (-re), Ferrocast vs the ffmpeg CLI on the same
    file and the same rungs. Ferrocast's ladder CPU is the server's CPU with `[transcode]` minus
    the same run without it (ingest and packaging are not the ladder); the CLI's is its whole
    process (decode, split, scale, encode). ratio = CLI / Ferrocast (> 1: Ferrocast cheaper).
    Speed is what a machine of this many cores sustains on CPU alone (cores / CPU-s per media-s;
    both columns use the same estimate) and, for the CLI, also measured unpaced.
(2) Streams: k 720p publishes (priority normal, 0 viewers: source + 480p) for k = 1, 2, ...
    while every rung keeps up (lag < 1 s, the decoder never waiting on a full rung queue).
(3) Latency: `ferrocast-player publish` (visual clock code) → origin with the standard ladder;
    `ferrocast-player watch --variant 0` (source) then `--variant 1` (480p), p50 each.
"""

import argparse
import json
import os
import signal
import subprocess
import time
import urllib.request

from origin_bench import BIN, OUT, ROOT, proc_cpu_rss, publish, start_server

PLAYER = os.path.join(ROOT, "target", "release", "ferrocast-player")
CORES = os.cpu_count() or 2
# The standard ladder's rungs (name, height, kbit/s), as Ladder::standard has them.
RUNGS = [("1080p", 1080, 6000), ("720p", 720, 3000), ("480p", 480, 1500), ("360p", 360, 800),
         ("240p", 240, 400)]


def source(height, seconds):
    width = height * 16 // 9
    path = os.path.join(OUT, f"ladder-{height}p-{seconds}s.flv")
    if not os.path.exists(path):
        os.makedirs(OUT, exist_ok=True)
        print(f"encoding a {seconds}s {height}p source once ({path}) ...", flush=True)
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(seconds), "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast",
             "-bf", "2", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
             "-b:v", "4000k" if height > 720 else "2900k", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "96k", "-ac", "2", path],
            check=True)
    return path


def api(http):
    return json.loads(urllib.request.urlopen(f"http://{http}/api/streams", timeout=5).read())


def ferrocast_cpu(src, seconds, transcode, n=1, settle=6.0):
    """Server CPU cores over `seconds` with n paced publishes (the standard ladder at 0 viewers:
    source + 480p, or no [transcode]); the ladders seen at the end."""
    extra = "[transcode]\n" if transcode else ""
    server, addrs, _ = start_server([f"ladder-key-{i:04d}" for i in range(n)], extra)
    pubs = [publish(src, f"rtmp://{addrs['rtmp']}/live/ladder-key-{i:04d}") for i in range(n)]
    lags, waits = [], 0
    try:
        time.sleep(settle)
        c0, _ = proc_cpu_rss(server.pid)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            if transcode:
                for s in api(addrs["http"])["streams"]:
                    for r in (s.get("ladder") or {}).get("rungs", []):
                        lags.append(r["lag_seconds"])
        c1, _ = proc_cpu_rss(server.pid)
        wall = time.monotonic() - t0
        ladders = [s.get("ladder") for s in api(addrs["http"])["streams"]]
        waits = sum(r["decoder_waits"] for l in ladders if l for r in l["rungs"])
        metrics = urllib.request.urlopen(f"http://{addrs['http']}/metrics", timeout=5).read().decode()
        skipped = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
                      if l.startswith("ferrocast_consumer_frames_dropped_total")
                      and 'consumer="transcode:decoder"' in l)
    finally:
        for p in pubs:
            p.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
    return (c1 - c0) / wall, ladders, lags, waits, skipped


def cli_ladder(src, rungs, seconds, paced):
    """The ffmpeg CLI doing the ladder: one decode, split, scale, libx264 per rung."""
    n = len(rungs)
    graph = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";" + ";".join(
        f"[s{i}]scale=-2:{h}[o{i}]" for i, (_, h, _) in enumerate(rungs))
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error"] + (["-re"] if paced else []) + [
        "-i", src, "-filter_complex", graph]
    for i, (_, _, kbps) in enumerate(rungs):
        cmd += ["-map", f"[o{i}]", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
                "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k", "-bf", "0",
                "-g", "100000", "-sc_threshold", "0", "-threads", str(max(1, CORES // n)),
                "-f", "null", "-"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if paced:
        time.sleep(6.0)
        c0, _ = proc_cpu_rss(p.pid)
        t1 = time.monotonic()
        time.sleep(seconds)
        c1, _ = proc_cpu_rss(p.pid)
        cores = (c1 - c0) / (time.monotonic() - t1)
        p.kill()
        p.wait()
        return {"cpu_per_media_s": cores}
    # Unpaced: the whole file as fast as it goes; CPU from the child's rusage.
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    media = float(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", src],
        capture_output=True, text=True).stdout.strip() or 0)
    return {"speed": media / wall, "cpu_per_media_s": (ru.ru_utime + ru.ru_stime) / media}


def full_ladder_config():
    """The full ladder from the start: a ladder whose only tier is the standard full one (what
    a partner stream gets; origin_bench.start_server writes no priority)."""
    rungs = "".join(
        f'[[transcode.rungs]]\nname = "{n}"\nheight = {h}\nbitrate_kbps = {k}\n' for n, h, k in RUNGS)
    names = ", ".join(f'"{n}"' for n, _, _ in RUNGS)
    return f"[transcode]\n{rungs}[[transcode.tiers]]\nmin_viewers = 0\nrungs = [{names}]\n"


def full_ladder_cpu(src, seconds):
    server, addrs, _ = start_server(["ladder-key-0000"], full_ladder_config())
    pub = publish(src, f"rtmp://{addrs['rtmp']}/live/ladder-key-0000")
    lags = []
    try:
        time.sleep(6.0)
        c0, _ = proc_cpu_rss(server.pid)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            for s in api(addrs["http"])["streams"]:
                for r in (s.get("ladder") or {}).get("rungs", []):
                    lags.append(r["lag_seconds"])
        c1, _ = proc_cpu_rss(server.pid)
        wall = time.monotonic() - t0
        ladder = api(addrs["http"])["streams"][0].get("ladder")
    finally:
        pub.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
    return (c1 - c0) / wall, ladder, lags


def latency(seconds):
    server, addrs, _ = start_server(["ladder-key-0000"], "[transcode]\n")
    url = f"rtmp://{addrs['rtmp']}/live/ladder-key-0000"
    pub = subprocess.Popen([PLAYER, "publish", url, "--duration", str(2 * seconds + 30),
                            "--size", "1280x720", "--fps", "30"],
                           stdout=subprocess.DEVNULL, start_new_session=True)
    rows = {}
    try:
        time.sleep(8.0)
        for name, variant in (("source", 0), ("480p", 1)):
            out = subprocess.run([PLAYER, "watch", f"http://{addrs['http']}/live/s0/index.m3u8",
                                  "--duration", str(seconds), "--json", "--variant", str(variant)],
                                 capture_output=True, text=True, timeout=seconds + 60)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[name] = {"p50_ms": r["latency_ms"]["p50"], "p95_ms": r["latency_ms"]["p95"],
                          "frames": r["latency_ms"]["samples"], "stalls": r["stalls"]["count"]}
    finally:
        pub.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-streams", type=int, default=8)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--only-streams", action="store_true", help="just (2), the stream count")
    ap.add_argument("--heights", default="720,1080", help="sources for (1), e.g. 720")
    ap.add_argument("--skip-streams", action="store_true")
    args = ap.parse_args()
    d = args.duration
    report = {"cores": CORES, "duration_s": d, "sources": {}}
    print(f"ladder benchmark: {CORES} cores, {d:.0f} s windows, paced at real time\n")
    heights = [int(h) for h in args.heights.split(",") if h]
    for height in () if args.only_streams else heights:
        src = source(height, int(d + 20))
        rungs = [r for r in RUNGS if r[1] < height]
        base = ferrocast_cpu(src, d, transcode=False)[0]
        full, ladder, lags = full_ladder_cpu(src, d)
        ours = max(full - base, 1e-6)
        cli = cli_ladder(src, rungs, d, paced=True)
        fast = cli_ladder(src, rungs, d, paced=False)
        row = {
            "rungs": [r[0] for r in rungs],
            "ferrocast_cpu_per_media_s": ours,
            "ferrocast_packaging_cpu_per_media_s": base,
            "cli_cpu_per_media_s": cli["cpu_per_media_s"],
            "ratio_cli_over_ferrocast": cli["cpu_per_media_s"] / ours,
            "ferrocast_speed_est": CORES / ours,
            "cli_speed_est": CORES / cli["cpu_per_media_s"],
            "cli_speed_unpaced": fast["speed"],
            "cli_cpu_per_media_s_unpaced": fast["cpu_per_media_s"],
            "ferrocast_max_lag_s": max(lags) if lags else None,
            "ferrocast_rungs": [
                {k: r.get(k) for k in ("name", "encoder", "speed", "cpu_seconds", "media_seconds",
                                       "lag_seconds")} for r in (ladder or {}).get("rungs", [])],
            "ferrocast_decoder_cpu_s": (ladder or {}).get("decoder_cpu_seconds"),
        }
        report["sources"][f"{height}p30"] = row
        print(f"{height}p30 → {'/'.join(row['rungs'])}")
        print(f"  CPU-s per media-s   Ferrocast {ours:.3f} (packaging alone {base:.3f})   "
              f"ffmpeg CLI {cli['cpu_per_media_s']:.3f}   ratio CLI/Ferrocast "
              f"{row['ratio_cli_over_ferrocast']:.2f}")
        print(f"  speed (x real time) est. Ferrocast {row['ferrocast_speed_est']:.2f}   CLI "
              f"{row['cli_speed_est']:.2f}   CLI measured unpaced {fast['speed']:.2f}   "
              f"max rung lag {row['ferrocast_max_lag_s']}")
        for r in row["ferrocast_rungs"]:
            media = r.get("media_seconds") or 0
            per = (r.get("cpu_seconds") or 0) / media if media else 0
            print(f"    {r['name']:>6} {r.get('encoder')}  speed {r.get('speed')}  "
                  f"CPU-s/media-s {per:.3f}")
    # (2) streams per machine.
    src = source(720, int(d + 20))
    fits = 0
    report["streams"] = []
    for k in range(1, 0 if args.skip_streams else args.max_streams + 1):
        cores, ladders, lags, waits, skipped = ferrocast_cpu(src, d, transcode=True, n=k)
        worst = max(lags) if lags else 0.0
        rungs = sum(len(l["rungs"]) for l in ladders if l)
        # Behind: a rung's frames come out over a second late, or the decoder fell so far
        # behind its input that frames were skipped. (A decoder waiting a moment on a full
        # rung queue is back-pressure, counted, not a loss.)
        ok = worst < 1.0 and skipped == 0 and rungs >= k
        report["streams"].append({"streams": k, "cpu_cores": cores, "max_lag_s": worst,
                                  "decoder_waits": waits, "decoder_frames_skipped": skipped,
                                  "real_time": ok})
        print(f"  {k} x 720p30 source+480p: {cores:.2f} cores, max rung lag {worst:.2f} s, "
              f"decoder waits {waits}, frames skipped {skipped:.0f} → "
              f"{'real time' if ok else 'BEHIND'}")
        if not ok:
            break
        fits = k
    if not args.skip_streams:
        report["streams_in_real_time"] = fits
        print(f"source+480p streams this machine transcodes in real time: {fits}")
    if not args.skip_latency and not args.only_streams:
        rows = latency(d)
        report["latency"] = rows
        added = rows["480p"]["p50_ms"] - rows["source"]["p50_ms"]
        report["latency_added_ms"] = added
        print(f"glass-to-glass p50: source {rows['source']['p50_ms']} ms, 480p "
              f"{rows['480p']['p50_ms']} ms → added {added} ms (target ≤ 150)")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ladder.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
