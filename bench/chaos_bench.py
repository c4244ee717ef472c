"""Driver for bench/chaos.sh: soak, origin restart, publisher flapping, SRT under loss, and the
whole chain on a real network of namespaces. Prints a table per scenario and writes
bench/out/chaos-SCENARIO.json.

  soak      one publish (360p, transcoded to one 240p rung), 2 edges, 300 light viewers split
            over both edges and both renditions, one decoding player; RSS, open fds and threads
            of every process each 10 s; growth after warm-up; viewer errors, underruns, stalls
  restart   2 edges in front of the origin; kill -9 the origin, start it again on the same
            ports; the publisher reconnects as OBS does; edge playlists polled (stale copies,
            then the new session); one player per edge plays through it without a restart
  flap      the publisher dropped (kill -9) and reconnected every 5 s: the playlist stays one
            continuous playlist (media sequence never goes back, no ENDLIST, one
            EXT-X-DISCONTINUITY per splice), and the origin's RSS, fds and threads do not grow
  srt-loss  an SRT publish through a link that loses 5 % of packets each way (userspace netem,
            namespaces): the session never drops, parts keep coming, every segment decodes
  netns     origin, two edges and a viewer host in their own network namespaces behind a
            router namespace; origin↔edge and edge↔viewer links with 20 ms each way (40 ms RTT)
            and 1 % loss; the same LL-HLS checks and glass-to-glass figures as on loopback and
            on the unimpaired namespaces, side by side

The link impairment is bench/netem.py (a userspace netem on a TUN device: this machine's kernel
has no sch_netem); `--netem kernel` uses `tc qdisc … netem` where the kernel has it.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from edge_bench import PLAYER
from origin_bench import BIN, OUT, ROOT, source

KEY = "chaos-bench-key-0123456789"
NAME = "chaos"
TOKEN = "chaos-bench-edge-token-0123456789"
NETEM = os.path.join(ROOT, "bench", "netem.py")
LADDER = """
[transcode]
threads_per_rung = 1
[[transcode.rungs]]
name = "240p"
height = 240
bitrate_kbps = 300
[[transcode.tiers]]
min_viewers = 0
rungs = ["240p"]
"""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def in_ns(ns, cmd):
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd


class Node:
    """One ferrocast process (origin or edge), optionally inside a network namespace."""

    def __init__(self, name, argv, tmp, ns=None):
        self.name, self.tmp = name, tmp
        self.err_path = os.path.join(tmp, f"{name}.err")
        self.proc = subprocess.Popen(
            in_ns(ns, argv), stdout=subprocess.PIPE, stderr=open(self.err_path, "ab"), text=True,
            env={**os.environ, "RUST_LOG": "info"})
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"{name} did not start: {self.log_tail()}")
        self.addr = dict(re.findall(r"(\w+)=(\S+)", line))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, n=5):
        try:
            with open(self.err_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_text(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def kill(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_origin(tmp, http="127.0.0.1:0", rtmp="127.0.0.1:0", srt="127.0.0.1:0", ns=None,
                 extra="", name="origin"):
    cfg = os.path.join(tmp, "origin.toml")
    if not os.path.exists(cfg):
        with open(cfg, "w") as f:
            f.write(f'edge_token = "{TOKEN}"\n{extra}\n[[streams]]\nname = "{NAME}"\nkey = "{KEY}"\n')
    return Node(name, [BIN, "serve", "--config", cfg, "--rtmp", rtmp, "--http", http, "--srt", srt],
                tmp, ns)


def start_edge(tmp, i, origin_http, http="127.0.0.1:0", ns=None):
    cfg = os.path.join(tmp, f"edge{i}.toml")
    with open(cfg, "w") as f:
        # Every bench viewer comes from one address: the per-address request rate is off.
        f.write(f'origin = "http://{origin_http}"\nid = "edge-{i}"\ntoken = "{TOKEN}"\n'
                f"viewer_window = 15\n[http_limits]\nrequests_per_ip = 0\n")
    return Node(f"edge{i}", [BIN, "edge", "--config", cfg, "--http", http], tmp, ns)


def proc_stats(pid):
    """RSS bytes, open fds, threads, CPU seconds of a live process (None once it is gone)."""
    try:
        rss = threads = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                    return None  # exited, not yet reaped
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return {"rss": rss, "fds": fds, "threads": threads, "cpu": cpu}
    except (OSError, IndexError, ValueError):
        return None


def get(url, timeout=10):
    """(status, headers, body bytes); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except (OSError, urllib.error.URLError):
        return 0, {}, b""


def wait_ok(url, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if get(url, timeout=5)[0] == 200:
            return
        time.sleep(0.3)
    raise RuntimeError(f"{url} never answered 200")


def clock_publisher(url, seconds, ns=None):
    """ferrocast-player publish: a clock-stamped 640x360@30 live encode (ffmpeg CLI)."""
    return subprocess.Popen(
        in_ns(ns, [PLAYER, "publish", url, "--duration", str(seconds), "--size", "640x360",
                   "--fps", "30"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def ffmpeg_publisher(src, url, fmt="flv", ns=None, loop=True):
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re"]
    if loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-i", src, "-c", "copy"]
    if fmt == "mpegts":
        cmd += ["-bsf:v", "h264_mp4toannexb"]
    cmd += ["-f", fmt, url]
    return subprocess.Popen(in_ns(ns, cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_group(p):
    if p and p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def player_watch(url, seconds, ns=None, decode=True):
    cmd = [PLAYER, "watch", url, "--duration", str(seconds), "--json"]
    if not decode:
        cmd.append("--no-decode")
    return subprocess.Popen(in_ns(ns, cmd), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)


def player_load(url, viewers, seconds, ns=None):
    return subprocess.Popen(
        in_ns(ns, [PLAYER, "load", url, "--viewers", str(viewers), "--duration", str(seconds),
                   "--json", "--allow-remote"]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def result(p, timeout):
    """The last JSON line a player process printed."""
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    for line in reversed((out or "").strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {"fatal": f"no report (exit {p.returncode})"}


def watch_summary(r):
    lat = r.get("latency_ms") or {}
    stalls = r.get("stalls") or {}
    return {
        "ttff_ms": r.get("ttff_ms"), "glass_p50_ms": lat.get("p50"), "glass_p95_ms": lat.get("p95"),
        "frames": lat.get("samples"), "pdt_p50_ms": (r.get("pdt_latency_ms") or {}).get("p50"),
        "stalls": stalls.get("count"), "stall_s": round(stalls.get("total_s") or 0.0, 3),
        "discontinuities": r.get("discontinuities"), "errors": r.get("errors"),
        "fatal": r.get("fatal"), "ended": r.get("ended"),
    }


def metric(http, series):
    status, _, body = get(f"http://{http}/metrics")
    if status != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def metric_sum(http, name, **labels):
    """The sum of every series of metric `name` whose labels include `labels`."""
    status, _, body = get(f"http://{http}/metrics")
    if status != 200:
        return None
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r"(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def refusals(http):
    """Every non-zero `ferrocast_limit_refusals_total{limit}` series of a process."""
    status, _, body = get(f"http://{http}/metrics")
    if status != 200:
        return None
    out = {}
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r'ferrocast_limit_refusals_total\{limit="([^"]+)"\} (\S+)$', line)
        if m and float(m.group(2)) > 0:
            out[m.group(1)] = float(m.group(2))
    return out


def media_playlist(base):
    return f"http://{base}/live/{NAME}/source/index.m3u8"


def parse_playlist(text):
    msn = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    dsn = re.search(r"#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)", text)
    return {
        "msn": int(msn.group(1)) if msn else None,
        "dsn": int(dsn.group(1)) if dsn else 0,
        "discontinuities": text.count("#EXT-X-DISCONTINUITY\n"),
        "segments": len(re.findall(r"^#EXTINF:", text, re.M)),
        "endlist": "#EXT-X-ENDLIST" in text,
    }


def fmt(v, spec=""):
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


# ---------------------------------------------------------------------------------------- soak


def soak(args):
    tmp = tempfile.mkdtemp()
    secs = args.duration or 1800
    warmup = min(300, secs // 4)
    viewers = args.viewers
    origin = start_origin(tmp, extra=LADDER)
    edges = [start_edge(tmp, i, origin.addr["http"]) for i in (1, 2)]
    pub = clock_publisher(f"rtmp://{origin.addr['rtmp']}/live/{KEY}", secs + 60)
    procs = {"origin": origin.pid, "edge1": edges[0].pid, "edge2": edges[1].pid, "publisher": pub.pid}
    loads, watcher = [], None
    try:
        for e in edges:
            wait_ok(media_playlist(e.addr["http"]))
        wait_ok(f"http://{edges[0].addr['http']}/live/{NAME}/240p/index.m3u8", timeout=60)
        log(f"soak: {viewers} viewers over 2 edges × 2 renditions for {secs}s "
            f"(warm-up {warmup}s), sampling every 10 s")
        per = viewers // 4
        for i, e in enumerate(edges):
            for rendition in ("source", "240p"):
                url = f"http://{e.addr['http']}/live/{NAME}/{rendition}/index.m3u8"
                p = player_load(url, per, secs)
                loads.append((f"edge{i + 1}/{rendition}", p))
                procs[f"load edge{i + 1}/{rendition}"] = p.pid
        watcher = player_watch(f"http://{edges[0].addr['http']}/live/{NAME}/index.m3u8", secs - 10)
        procs["watch (decoding)"] = watcher.pid
        samples = []
        t0 = time.monotonic()
        next_print = 0
        while time.monotonic() - t0 < secs:
            time.sleep(10)
            t = round(time.monotonic() - t0)
            row = {"t": t, **{k: proc_stats(pid) for k, pid in procs.items()},
                   "origin_viewers": metric_sum(origin.addr["http"], "ferrocast_viewers", stream=NAME),
                   "edges_reporting": metric(origin.addr["http"], "ferrocast_edges_reporting")}
            samples.append(row)
            if t >= next_print:
                next_print += max(60, secs // 15)
                o, e1, e2 = row["origin"] or {}, row["edge1"] or {}, row["edge2"] or {}
                log(f"t={t:>5}s origin rss={o.get('rss', 0) / 2**20:.1f}MiB fds={o.get('fds')} "
                    f"edge1 rss={e1.get('rss', 0) / 2**20:.1f}MiB fds={e1.get('fds')} "
                    f"edge2 rss={e2.get('rss', 0) / 2**20:.1f}MiB fds={e2.get('fds')}")
        load_results = {name: result(p, 120) for name, p in loads}
        watch = result(watcher, 120)
        # Refusals at a limit (a viewer cut off as a slow reader, a rate limit) name the cause
        # of a viewer error.
        refused = {"origin": refusals(origin.addr["http"]),
                   **{f"edge{i + 1}": refusals(e.addr["http"]) for i, e in enumerate(edges)}}
        # What the origin counted while everyone watched (the edges' reports), after warm-up.
        counts = [s["origin_viewers"] for s in samples[warmup // 10:] if s["origin_viewers"] is not None]
        counted = (min(counts), max(counts)) if counts else None
        edges_reporting = min((s["edges_reporting"] for s in samples[warmup // 10:]
                               if s["edges_reporting"] is not None), default=None)
    finally:
        for _, p in loads:
            p.kill()
        if watcher:
            watcher.kill()
        kill_group(pub)
        for n in [*edges, origin]:
            n.kill()
    table = []
    for name in procs:
        series = [s[name] for s in samples if s.get(name)]
        after = [s for s in series[warmup // 10:]] or series
        if not series:
            continue
        head, tail = after[: max(1, len(after) // 6)], after[-max(1, len(after) // 6):]
        avg = lambda xs, k: sum(x[k] for x in xs) / len(xs)  # noqa: E731
        table.append({
            "process": name, "samples": len(series),
            "rss_start_mib": avg(head, "rss") / 2**20, "rss_end_mib": avg(tail, "rss") / 2**20,
            "rss_max_mib": max(x["rss"] for x in after) / 2**20,
            "rss_growth_mib": (avg(tail, "rss") - avg(head, "rss")) / 2**20,
            "fds_min": min(x["fds"] for x in after), "fds_max": max(x["fds"] for x in after),
            "threads_min": min(x["threads"] for x in after), "threads_max": max(x["threads"] for x in after),
            "cpu_cores": (series[-1]["cpu"] - series[0]["cpu"]) / max(10 * (len(series) - 1), 1),
        })
    errors = sum(r.get("errors", 0) or 0 for r in load_results.values())
    underruns = sum(r.get("underruns", 0) or 0 for r in load_results.values())
    out = {"scenario": "soak", "duration_s": secs, "warmup_s": warmup, "viewers": viewers,
           "processes": table, "loads": load_results, "watch": watch_summary(watch),
           "origin_viewers_counted_min_max": counted, "edges_reporting": edges_reporting, "viewer_errors": errors,
           "viewer_underruns": underruns, "limit_refusals": refused, "samples": samples}
    save("soak", out)
    print(f"\nsoak: {secs}s, {viewers} load viewers + 1 decoding player over 2 edges; figures after "
          f"{warmup}s warm-up (start/end = mean of the first/last sixth)")
    print(f"{'process':<20} {'RSS start':>9} {'RSS end':>8} {'growth':>7} {'RSS max':>8} "
          f"{'fds':>9} {'threads':>9} {'CPU':>6}")
    for r in table:
        print(f"{r['process']:<20} {r['rss_start_mib']:>8.1f}M {r['rss_end_mib']:>7.1f}M "
              f"{r['rss_growth_mib']:>+6.1f}M {r['rss_max_mib']:>7.1f}M "
              f"{r['fds_min']:>4}-{r['fds_max']:<4} {r['threads_min']:>4}-{r['threads_max']:<4} "
              f"{r['cpu_cores']:>6.2f}")
    print(f"{'load':<16} {'viewers':>7} {'playlists':>9} {'parts':>8} {'part p50/p99 ms':>16} "
          f"{'underruns':>9} {'errors':>6}")
    for name, r in load_results.items():
        pf = r.get("part_fetch_ms") or {}
        print(f"{name:<16} {fmt(r.get('viewers')):>7} {fmt(r.get('playlist_requests')):>9} "
              f"{fmt(r.get('part_requests')):>8} {fmt(pf.get('p50'), '.1f'):>7} / "
              f"{fmt(pf.get('p99'), '.1f'):<6} {fmt(r.get('underruns')):>9} {fmt(r.get('errors')):>6}")
    w = watch_summary(watch)
    print(f"decoding player: glass p50 {fmt(w['glass_p50_ms'], '.0f')} ms, p95 "
          f"{fmt(w['glass_p95_ms'], '.0f')} ms, stalls {w['stalls']} ({w['stall_s']} s), "
          f"errors {w['errors']}, fatal {w['fatal']}")
    print(f"viewer errors {errors}, underruns {underruns}; the origin counted "
          f"{fmt(counted and counted[0])}-{fmt(counted and counted[1])} viewers (from at least "
          f"{fmt(edges_reporting)} edges) after warm-up, for {viewers} + 1 watching")
    print(f"refusals at a limit: {refused}")
    shutil.rmtree(tmp, ignore_errors=True)
    return errors == 0 and underruns == 0 and not w["fatal"] and not w["stalls"]


# ------------------------------------------------------------------------------------- restart


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Supervisor(threading.Thread):
    """Keeps a publisher running as OBS does: restarts it 1 s after it exits."""

    def __init__(self, start):
        super().__init__(daemon=True)
        self.start_fn, self.proc, self.starts, self.stopped = start, None, 0, False

    def run(self):
        while not self.stopped:
            self.proc = self.start_fn()
            self.starts += 1
            while self.proc.poll() is None and not self.stopped:
                time.sleep(0.2)
            if not self.stopped:
                time.sleep(1.0)

    def stop(self):
        self.stopped = True
        kill_group(self.proc)


def restart(args):
    tmp = tempfile.mkdtemp()
    secs = args.duration or 120
    kill_at, down_for = secs // 3, 5.0
    http, rtmp = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    src = source(30)
    origin = start_origin(tmp, http=http, rtmp=rtmp)
    edges = [start_edge(tmp, i, http) for i in (1, 2)]
    sup = Supervisor(lambda: ffmpeg_publisher(src, f"rtmp://{rtmp}/live/{KEY}"))
    sup.start()
    polls, players = [], []
    try:
        for e in edges:
            wait_ok(media_playlist(e.addr["http"]))
        log(f"restart: {secs}s, two players (one per edge), origin kill -9 at {kill_at}s, "
            f"down {down_for}s")
        players = [player_watch(f"http://{e.addr['http']}/live/{NAME}/index.m3u8", secs, decode=False)
                   for e in edges]
        t0 = time.monotonic()
        killed_at = restarted_at = None
        while time.monotonic() - t0 < secs:
            t = time.monotonic() - t0
            if killed_at is None and t >= kill_at:
                origin.kill(signal.SIGKILL)
                killed_at = t
                log(f"origin killed at {t:.1f}s")
            if killed_at is not None and restarted_at is None and t >= killed_at + down_for:
                origin = start_origin(tmp, http=http, rtmp=rtmp, name="origin2")
                restarted_at = time.monotonic() - t0
                log(f"origin started again at {restarted_at:.1f}s")
            for i, e in enumerate(edges):
                status, h, body = get(media_playlist(e.addr["http"]), timeout=3)
                pl = parse_playlist(body.decode(errors="replace")) if status == 200 else {}
                polls.append({"t": round(t, 2), "edge": i + 1, "status": status,
                              "stale": h.get("x-ferrocast-stale") == "1",
                              "session": h.get("x-ferrocast-session"), "msn": pl.get("msn"),
                              "endlist": pl.get("endlist")})
            time.sleep(0.25)
        watched = [result(p, 60) for p in players]
    finally:
        for p in players:
            p.kill()
        sup.stop()
        for n in [*edges, origin]:
            n.kill()
    rows = []
    for i in (1, 2):
        mine = [p for p in polls if p["edge"] == i]
        before = [p for p in mine if killed_at is not None and p["t"] < killed_at]
        old = before[-1]["session"] if before else None
        down = [p for p in mine if killed_at is not None and p["t"] >= killed_at and p["session"] == old]
        stale = [p for p in down if p["stale"]]
        new = [p for p in mine if p["session"] not in (None, old) and p["status"] == 200]
        bad = [p for p in mine if p["status"] != 200]
        rows.append({
            "edge": i, "old_session": old, "new_session": new[0]["session"] if new else None,
            "stale_answers": len(stale), "stale_from_s": stale[0]["t"] if stale else None,
            "new_session_at_s": new[0]["t"] if new else None,
            "new_session_after_restart_s": round(new[0]["t"] - restarted_at, 2) if new and restarted_at else None,
            "non_200_answers": len(bad), "statuses": sorted({p["status"] for p in bad}),
            "endlist_seen": any(p["endlist"] for p in mine),
        })
    out = {"scenario": "restart", "duration_s": secs, "killed_at_s": killed_at,
           "restarted_at_s": restarted_at, "publisher_starts": sup.starts, "edges": rows,
           "players": [watch_summary(w) for w in watched], "raw_players": watched, "polls": polls}
    save("restart", out)
    print(f"\norigin restart: kill -9 at {fmt(killed_at, '.1f')} s, started again at "
          f"{fmt(restarted_at, '.1f')} s; publisher (re)started {sup.starts}×")
    print(f"{'edge':>4} {'stale answers':>13} {'new session at':>14} {'after restart':>13} "
          f"{'non-200':>8} {'ENDLIST':>7}")
    for r in rows:
        print(f"{r['edge']:>4} {r['stale_answers']:>13} {fmt(r['new_session_at_s'], '.2f'):>13}s "
              f"{fmt(r['new_session_after_restart_s'], '.2f'):>12}s {r['non_200_answers']:>8} "
              f"{str(r['endlist_seen']):>7}")
    print(f"{'player':>6} {'stalls':>6} {'stall s':>7} {'discont.':>8} {'errors':>6} {'fatal':>6} {'ended':>6}")
    for i, w in enumerate(out["players"]):
        print(f"{'edge' + str(i + 1):>6} {fmt(w['stalls']):>6} {fmt(w['stall_s']):>7} "
              f"{fmt(w['discontinuities']):>8} {fmt(w['errors']):>6} {str(bool(w['fatal'])):>6} "
              f"{str(w['ended']):>6}")
    shutil.rmtree(tmp, ignore_errors=True)
    return all(r["new_session"] for r in rows) and not any(w["fatal"] for w in out["players"])


# ---------------------------------------------------------------------------------------- flap


def flap(args):
    tmp = tempfile.mkdtemp()
    secs = args.duration or 300
    every = 5.0
    src = source(30)
    origin = start_origin(tmp, extra="grace_period = 10.0\n")
    url = f"rtmp://{origin.addr['rtmp']}/live/{KEY}"
    http = origin.addr["http"]
    pub = ffmpeg_publisher(src, url)
    polls, watcher = [], None
    try:
        wait_ok(media_playlist(http))
        time.sleep(every)
        first = proc_stats(origin.pid)
        log(f"flap: publisher dropped and reconnected every {every:.0f}s for {secs}s")
        watcher = player_watch(f"http://{http}/live/{NAME}/index.m3u8", secs, decode=False)
        t0 = time.monotonic()
        drops, next_drop = 0, every
        stats = []
        while time.monotonic() - t0 < secs:
            t = time.monotonic() - t0
            if t >= next_drop:
                kill_group(pub)
                pub = ffmpeg_publisher(src, url)
                drops += 1
                next_drop += every
            status, h, body = get(media_playlist(http), timeout=3)
            pl = parse_playlist(body.decode(errors="replace")) if status == 200 else {}
            polls.append({"t": round(t, 2), "status": status, "session": h.get("x-ferrocast-session"),
                          **pl})
            if len(polls) % 40 == 0:
                stats.append({"t": round(t), **(proc_stats(origin.pid) or {})})
            time.sleep(0.25)
        time.sleep(every)
        last = proc_stats(origin.pid)
        watched = result(watcher, 60)
        reconnects = metric(http, f'ferrocast_ingest_reconnects_total{{stream="{NAME}"}}')
    finally:
        if watcher:
            watcher.kill()
        kill_group(pub)
        origin.kill()
    ok = [p for p in polls if p["status"] == 200 and p.get("msn") is not None]
    msn_back = sum(1 for a, b in zip(ok, ok[1:]) if b["msn"] < a["msn"])
    sessions = sorted({p["session"] for p in ok})
    splices = (ok[-1]["dsn"] + ok[-1]["discontinuities"]) - (ok[0]["dsn"] + ok[0]["discontinuities"]) if ok else 0
    out = {"scenario": "flap", "duration_s": secs, "every_s": every, "drops": drops,
           "reconnects_counted": reconnects, "playlist_polls": len(polls),
           "non_200": len(polls) - len(ok), "media_sequence_went_back": msn_back,
           "endlist_seen": any(p.get("endlist") for p in ok), "sessions": sessions,
           "discontinuities_added": splices, "origin_before": first, "origin_after": last,
           "origin_series": stats, "player": watch_summary(watched), "raw_player": watched}
    save("flap", out)
    w = out["player"]
    print(f"\npublisher flapping: {drops} drops in {secs}s (every {every:.0f}s)")
    print(f"  playlist polls {len(polls)}, non-200 {out['non_200']}, media sequence went back "
          f"{msn_back}×, ENDLIST seen {out['endlist_seen']}, sessions {len(sessions)}")
    print(f"  discontinuities added {splices} for {drops} reconnects (origin counted "
          f"{fmt(reconnects)} reconnects)")
    if first and last:
        print(f"  origin RSS {first['rss'] / 2**20:.1f} → {last['rss'] / 2**20:.1f} MiB, fds "
              f"{first['fds']} → {last['fds']}, threads {first['threads']} → {last['threads']}")
    print(f"  player through it: stalls {w['stalls']} ({w['stall_s']} s), discontinuities "
          f"{w['discontinuities']}, errors {w['errors']}, fatal {w['fatal']}")
    return msn_back == 0 and len(sessions) == 1 and not out["endlist_seen"] and not w["fatal"]


# ------------------------------------------------------------------------------ network spaces


class Topology:
    """Hosts in their own network namespaces, each with one veth to a router namespace; the
    router forwards between them, sending impaired links' packets through netem."""

    def __init__(self, hosts, impaired, delay_ms, loss, mode="user"):
        self.tag = f"fc{os.getpid() % 10000}"
        self.hosts = {h: f"{self.tag}-{h}" for h in hosts}
        self.router = f"{self.tag}-r"
        self.ip = {h: f"10.{77}.{i}.2" for i, h in enumerate(hosts)}
        self.netem = None
        self.counts = None
        sh = lambda *c: subprocess.run(c, check=True, capture_output=True)  # noqa: E731
        sh("ip", "netns", "add", self.router)
        self.up = True
        r = ["ip", "-n", self.router]
        sh(*r, "link", "set", "lo", "up")
        for k in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                  "net.ipv4.conf.default.rp_filter=0"):
            sh("ip", "netns", "exec", self.router, "sysctl", "-qw", k)
        for i, h in enumerate(hosts):
            ns = self.hosts[h]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", f"r{i}", "netns", self.router, "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh(*r, "addr", "add", f"10.77.{i}.1/24", "dev", f"r{i}")
            sh(*r, "link", "set", f"r{i}", "up")
            sh("ip", "-n", ns, "addr", "add", f"10.77.{i}.2/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"10.77.{i}.1")
        if not impaired or (delay_ms == 0 and loss == 0):
            return
        index = {h: i for i, h in enumerate(hosts)}
        if mode == "kernel":
            # Every packet between hosts leaves the router once: netem on each router port.
            for i, _ in enumerate(hosts):
                sh(*["ip", "netns", "exec", self.router, "tc", "qdisc", "add", "dev", f"r{i}", "root",
                     "netem", "delay", f"{delay_ms}ms", "loss", f"{loss}%"])
            return
        sh("ip", "netns", "exec", self.router, "ip", "tuntap", "add", "dev", "imp", "mode", "tun")
        sh(*r, "link", "set", "imp", "up")
        sh("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.conf.imp.rp_filter=0")
        sh(*r, "route", "add", "default", "dev", "imp", "table", "100")
        for a, b in impaired:
            for x, y in ((a, b), (b, a)):
                sh(*r, "rule", "add", "iif", f"r{index[x]}", "to", f"10.77.{index[y]}.0/24",
                   "table", "100")
        self.netem = subprocess.Popen(
            ["ip", "netns", "exec", self.router, sys.executable, NETEM, "--dev", "imp",
             "--delay-ms", str(delay_ms), "--loss", str(loss)],
            stdout=subprocess.PIPE, text=True)
        if self.netem.stdout.readline().strip() != "ready":
            raise RuntimeError("netem.py did not start")

    def close(self):
        if self.netem and self.netem.poll() is None:
            self.netem.send_signal(signal.SIGTERM)
            try:
                self.counts = json.loads(self.netem.stdout.readline())
            except ValueError:
                pass
            self.netem.wait()
        for ns in [*self.hosts.values(), self.router]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def tcp_rtt_ms(topo, src, dst_ip, port):
    """Median time of 10 TCP connects from host `src` to dst_ip:port (one round trip each)."""
    code = (f"import socket,time\nr=[]\nfor _ in range(10):\n t=time.monotonic()\n"
            f" s=socket.create_connection(('{dst_ip}',{port}),timeout=5)\n"
            f" r.append((time.monotonic()-t)*1e3)\n s.close()\nr.sort()\nprint(r[5])")
    out = subprocess.run(in_ns(topo.hosts[src], [sys.executable, "-c", code]) if topo else
                         [sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return float(out.stdout.strip())
    except ValueError:
        return None


LLHLS_CHECK = r"""
import json, re, sys, time, urllib.request
a, b, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
def get(u):
    t = time.monotonic()
    with urllib.request.urlopen(u, timeout=20) as r:
        return r.status, r.read(), time.monotonic() - t
out = {"blocking": [], "identical_parts": 0, "different_parts": 0, "errors": []}
st, body, _ = get(a + "/index.m3u8")
text = body.decode()
for tag in ("#EXT-X-PART-INF", "CAN-BLOCK-RELOAD=YES", "#EXT-X-PRELOAD-HINT", "#EXT-X-PROGRAM-DATE-TIME"):
    if tag not in text:
        out["errors"].append("missing " + tag)
end = time.monotonic() + seconds
while time.monotonic() < end:
    msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    segs = len(re.findall(r"^#EXTINF", text, re.M))
    parts_last = []
    for line in reversed(text.splitlines()):
        if line.startswith("#EXTINF"):
            break
        if line.startswith("#EXT-X-PART:"):
            parts_last.append(line)
    nxt = (msn + segs, len(parts_last))
    st, body, took = get(f"{a}/index.m3u8?_HLS_msn={nxt[0]}&_HLS_part={nxt[1]}")
    text = body.decode()
    uris = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', text)
    out["blocking"].append(round(took * 1e3, 1))
    if st != 200:
        out["errors"].append(f"blocking {nxt} -> {st}")
        continue
    if uris:
        pa = get(a + "/" + uris[-1])[1]
        pb = get(b + "/" + uris[-1])[1]
        if pa == pb and pa:
            out["identical_parts"] += 1
        else:
            out["different_parts"] += 1
b_ = sorted(out["blocking"])
out["blocking_p50_ms"] = b_[len(b_) // 2] if b_ else None
out["blocking_max_ms"] = b_[-1] if b_ else None
del out["blocking"]
print(json.dumps(out))
"""


def llhls_check(ns, edge_a, edge_b, seconds):
    a = f"http://{edge_a}/live/{NAME}/source"
    b = f"http://{edge_b}/live/{NAME}/source"
    out = subprocess.run(in_ns(ns, [sys.executable, "-c", LLHLS_CHECK, a, b, str(seconds)]),
                         capture_output=True, text=True, timeout=seconds + 120)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"errors": [f"check failed: {out.stderr.strip()[-300:]}"]}


def chain_run(label, secs, topo=None):
    """Origin, two edges and viewers (in `topo`'s namespaces, or on loopback): LL-HLS checks
    from the viewer host, then two decoding players (one per edge) side by side."""
    tmp = tempfile.mkdtemp()
    h = (lambda host: f"{topo.ip[host]}") if topo else (lambda host: "127.0.0.1")
    ns = (lambda host: topo.hosts[host]) if topo else (lambda host: None)
    origin = start_origin(tmp, http=f"{h('origin')}:0", rtmp=f"{h('origin')}:0",
                          srt=f"{h('origin')}:0", ns=ns("origin"))
    edges = [start_edge(tmp, i, origin.addr["http"], http=f"{h(f'edge{i}')}:0", ns=ns(f"edge{i}"))
             for i in (1, 2)]
    pub = clock_publisher(f"rtmp://{origin.addr['rtmp']}/live/{KEY}", secs + 90, ns=ns("origin"))
    try:
        for e in edges:
            wait_ok_in(ns("viewer"), media_playlist(e.addr["http"]))
        time.sleep(4)
        port = lambda n: int(n.addr["http"].rsplit(":", 1)[1])  # noqa: E731
        rtt_ve = tcp_rtt_ms(topo, "viewer", h("edge1"), port(edges[0])) if topo else \
            tcp_rtt_ms(None, None, "127.0.0.1", port(edges[0]))
        rtt_eo = tcp_rtt_ms(topo, "edge1", h("origin"), port(origin)) if topo else None
        check = llhls_check(ns("viewer"), edges[0].addr["http"], edges[1].addr["http"], 15)
        players = [player_watch(f"http://{e.addr['http']}/live/{NAME}/index.m3u8", secs, ns=ns("viewer"))
                   for e in edges]
        watched = [result(p, secs + 90) for p in players]
    finally:
        kill_group(pub)
        for n in [*edges, origin]:
            n.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"label": label, "rtt_viewer_edge_ms": rtt_ve, "rtt_edge_origin_ms": rtt_eo,
            "llhls": check, "players": [watch_summary(w) for w in watched], "raw_players": watched}


def wait_ok_in(ns, url, timeout=60):
    if not ns:
        return wait_ok(url, timeout)
    code = ("import sys,time,urllib.request\nend=time.time()+%d\nwhile time.time()<end:\n"
            " try:\n  urllib.request.urlopen(sys.argv[1],timeout=5); sys.exit(0)\n"
            " except Exception: time.sleep(0.3)\nsys.exit(1)" % timeout)
    if subprocess.run(in_ns(ns, [sys.executable, "-c", code, url])).returncode != 0:
        raise RuntimeError(f"{url} never answered 200 from {ns}")


def netns(args):
    if os.geteuid() != 0:
        print("netns: needs root (ip netns); skipped")
        return True
    secs = args.duration or 60
    hosts = ["origin", "edge1", "edge2", "viewer"]
    links = [("origin", "edge1"), ("origin", "edge2"), ("edge1", "viewer"), ("edge2", "viewer")]
    runs = [chain_run("loopback", secs)]
    for label, delay, loss in (("namespaces, no impairment", 0, 0),
                               (f"namespaces, {2 * args.delay_ms:.0f} ms RTT, {args.loss}% loss",
                                args.delay_ms, args.loss)):
        topo = Topology(hosts, links, delay, loss, args.netem)
        try:
            log(f"netns: {label}")
            runs.append(chain_run(label, secs, topo))
        finally:
            topo.close()
        runs[-1]["netem_counts"] = topo.counts
    out = {"scenario": "netns", "duration_s": secs, "netem": args.netem, "runs": runs}
    save("netns", out)
    print(f"\nthe chain on loopback and on namespaces (origin, edge1, edge2, viewer hosts), "
          f"{secs}s, two decoding players (one per edge)")
    print(f"{'run':<36} {'RTT v-e':>7} {'RTT e-o':>7} {'block p50':>9} {'identical':>9} "
          f"{'glass p50':>9} {'p95':>6} {'PDT p50':>7} {'TTFF':>6} {'stalls':>6} {'errors':>6}")
    ok = True
    for r in runs:
        c = r["llhls"]
        for i, w in enumerate(r["players"]):
            print(f"{(r['label'] if i == 0 else ''):<36} {fmt(r['rtt_viewer_edge_ms'], '.1f') if i == 0 else '':>7} "
                  f"{fmt(r['rtt_edge_origin_ms'], '.1f') if i == 0 else '':>7} "
                  f"{fmt(c.get('blocking_p50_ms'), '.0f') if i == 0 else '':>9} "
                  f"{(str(c.get('identical_parts')) + '/' + str(c.get('identical_parts', 0) + c.get('different_parts', 0))) if i == 0 else '':>9} "
                  f"{fmt(w['glass_p50_ms'], '.0f'):>9} {fmt(w['glass_p95_ms'], '.0f'):>6} "
                  f"{fmt(w['pdt_p50_ms'], '.0f'):>7} {fmt(w['ttff_ms'], '.0f'):>6} {fmt(w['stalls']):>6} "
                  f"{fmt(w['errors']):>6}")
            ok = ok and not w["fatal"]
        if c.get("errors"):
            print(f"  LL-HLS check errors: {c['errors']}")
            ok = False
        if r.get("netem_counts"):
            n = r["netem_counts"]
            print(f"  netem: {n['packets']} packets, {n['dropped']} dropped "
                  f"({100 * n['dropped'] / max(n['packets'], 1):.2f} %)")
    return ok


# ------------------------------------------------------------------------------------ srt-loss


def srt_loss(args):
    if os.geteuid() != 0:
        print("srt-loss: needs root (ip netns); skipped")
        return True
    secs = args.duration or 600
    tmp = tempfile.mkdtemp()
    topo = Topology(["origin", "publisher"], [("origin", "publisher")], 10, args.srt_loss, args.netem)
    src = source(60)
    origin = start_origin(tmp, http=f"{topo.ip['origin']}:0", rtmp=f"{topo.ip['origin']}:0",
                          srt=f"{topo.ip['origin']}:0", ns=topo.hosts["origin"])
    srt = origin.addr["srt"]
    pub = ffmpeg_publisher(src, f"srt://{srt}?streamid=live/{KEY}&latency=200000", fmt="mpegts",
                           ns=topo.hosts["publisher"])
    base = f"http://{origin.addr['http']}/live/{NAME}/source"
    polls, decode_checks = [], []
    try:
        wait_ok_in(topo.hosts["origin"], base + "/index.m3u8", timeout=60)
        log(f"srt-loss: {secs}s at {args.srt_loss}% loss each way, 20 ms RTT")
        t0 = time.monotonic()
        next_decode = 30
        while time.monotonic() - t0 < secs:
            t = time.monotonic() - t0
            status, h, body = get_in(topo.hosts["origin"], base + "/index.m3u8")
            text = body.decode(errors="replace")
            pl = parse_playlist(text) if status == 200 else {}
            polls.append({"t": round(t, 1), "status": status, "session": h.get("x-ferrocast-session"),
                          **pl})
            if t >= next_decode and status == 200:
                next_decode += 60
                decode_checks.append(decode_check(topo.hosts["origin"], base, text))
            time.sleep(2)
        series = {k: metric_in(topo.hosts["origin"], origin.addr["http"],
                               f'ferrocast_srt_{k}{{stream="{NAME}"}}')
                  for k in ("packets_received_total", "packets_lost_total",
                            "packets_retransmitted_total", "packets_dropped_total", "rtt_seconds")}
        series["ingest_dropped_frames_total"] = metric_in(
            topo.hosts["origin"], origin.addr["http"],
            f'ferrocast_ingest_dropped_frames_total{{stream="{NAME}"}}')
    finally:
        kill_group(pub)
        origin.kill()
        topo.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ok_polls = [p for p in polls if p["status"] == 200 and p.get("msn") is not None]
    sessions = sorted({p["session"] for p in ok_polls})
    stuck = max((b["t"] - a["t"] for a, b in zip(ok_polls, ok_polls[1:])
                 if (b["msn"] + b["segments"]) == (a["msn"] + a["segments"])), default=0)
    segs = (ok_polls[-1]["msn"] + ok_polls[-1]["segments"]) - (ok_polls[0]["msn"] + ok_polls[0]["segments"]) \
        if ok_polls else 0
    span = ok_polls[-1]["t"] - ok_polls[0]["t"] if ok_polls else 0
    decoded = sum(d["ok"] for d in decode_checks)
    out = {"scenario": "srt-loss", "duration_s": secs, "loss_percent": args.srt_loss,
           "netem": args.netem, "netem_counts": topo.counts, "polls": len(polls),
           "non_200": len(polls) - len(ok_polls), "sessions": sessions,
           "segments_added": segs, "segments_per_minute": 60 * segs / span if span else None,
           "longest_no_new_segment_s": stuck, "decode_checks": decode_checks, "srt": series}
    save("srt-loss", out)
    n = topo.counts or {}
    print(f"\nSRT at {args.srt_loss}% loss each way for {secs}s (netem: {n.get('packets')} packets, "
          f"{n.get('dropped')} dropped)")
    print(f"  playlist polls {len(polls)}, non-200 {out['non_200']}, sessions {len(sessions)}, "
          f"segments added {segs} ({fmt(out['segments_per_minute'], '.1f')}/min), longest without a "
          f"new segment {stuck:.1f}s")
    print(f"  decode checks (init + last segment through ffmpeg): {decoded}/{len(decode_checks)} clean")
    print("  origin SRT counters: " + ", ".join(f"{k} {fmt(v)}" for k, v in series.items()))
    return len(sessions) == 1 and decoded == len(decode_checks) and out["non_200"] == 0


def get_in(ns, url):
    code = ("import json,sys,urllib.request,urllib.error,base64\ntry:\n"
            " r=urllib.request.urlopen(sys.argv[1],timeout=10); s,h,b=r.status,dict(r.headers),r.read()\n"
            "except urllib.error.HTTPError as e: s,h,b=e.code,dict(e.headers),e.read()\n"
            "except Exception: s,h,b=0,{},b''\n"
            "print(json.dumps([s,{k.lower():v for k,v in h.items()},base64.b64encode(b).decode()]))")
    out = subprocess.run(in_ns(ns, [sys.executable, "-c", code, url]), capture_output=True, text=True)
    try:
        import base64
        s, h, b = json.loads(out.stdout)
        return s, h, base64.b64decode(b)
    except ValueError:
        return 0, {}, b""


def metric_in(ns, http, series):
    status, _, body = get_in(ns, f"http://{http}/metrics")
    if status != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def decode_check(ns, base, text):
    """Decodes the init segment + the newest whole segment with the ffmpeg CLI."""
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
    segs = [l for l in text.splitlines() if l and not l.startswith("#")]
    if not init or not segs:
        return {"ok": False, "why": "no init or segment"}
    _, _, a = get_in(ns, f"{base}/{init.group(1)}")
    _, _, b = get_in(ns, f"{base}/{segs[-1]}")
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(a + b)
        f.flush()
        # Every frame decoded and kept at its own timestamp, in the stream's own time base: a
        # frame-rate conversion or a 1/fps encoder time base makes the null muxer complain of
        # duplicate timestamps when millisecond timestamps (FLV's) meet a half-frame start
        # offset, which says nothing about the media.
        p = subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-i", f.name,
                            "-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"],
                           capture_output=True, text=True)
        ok = p.returncode == 0 and not p.stderr.strip()
        if not ok:
            os.makedirs(OUT, exist_ok=True)
            shutil.copy(f.name, os.path.join(OUT, f"chaos-undecodable-{segs[-1]}.mp4"))
    return {"ok": ok, "segment": segs[-1],
            "bytes": len(b), "errors": p.stderr.strip()[-300:]}


def save(name, out):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"chaos-{name}.json"), "w") as f:
        json.dump(out, f, indent=2, default=str)


SCENARIOS = {"soak": soak, "restart": restart, "flap": flap, "srt-loss": srt_loss, "netns": netns}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", nargs="*", default=["all"],
                    help="soak, restart, flap, srt-loss, netns or all")
    ap.add_argument("--duration", type=int, default=0,
                    help="seconds per scenario (defaults: soak 1800, restart 120, flap 300, "
                         "srt-loss 600, netns 60 a run)")
    ap.add_argument("--viewers", type=int, default=300, help="soak viewers (split over 4 loads)")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="netns: one-way delay per link")
    ap.add_argument("--loss", type=float, default=1.0, help="netns: percent lost per link, each way")
    ap.add_argument("--srt-loss", type=float, default=5.0, help="srt-loss: percent lost each way")
    ap.add_argument("--netem", choices=["user", "kernel"], default="user",
                    help="link impairment: bench/netem.py on a TUN device, or tc netem")
    args = ap.parse_args()
    names = list(SCENARIOS) if "all" in args.scenario else args.scenario
    failed = []
    for n in names:
        if n not in SCENARIOS:
            sys.exit(f"unknown scenario {n}; one of {', '.join(SCENARIOS)}")
        log(f"=== {n}")
        if not SCENARIOS[n](args):
            failed.append(n)
    print(f"\nchaos: {len(names) - len(failed)}/{len(names)} scenarios held"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
