#!/usr/bin/env python3
"""Runs the whole test suite in lanes (./test.sh calls it after the lints).

Most integration tests wait on real time (ffmpeg publishing with -re, players following live
playlists): a 2-core machine sits 70-90 % idle while `cargo test` runs their binaries one after
another. Here the unit and doc tests run first, then the integration test binaries of the root
package in two lanes side by side, balanced by their usual duration, and last, alone, the
transcode tests (the most CPU) and the browser tests (Chromium measures stalls to the
millisecond). Each binary's
output is printed whole when it finishes; the summary at the end lists every binary with its
time and result. Exit status 1 if anything failed (every binary still runs).

  tests/lanes.py            # what ./test.sh runs
  tests/lanes.py --serial   # one binary at a time, like plain `cargo test`
"""

import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Seconds each binary usually takes on a 2-core machine (for balancing; unknown ones: 60).
WEIGHTS = {
    "abr": 63, "audio_only": 17, "edge_cluster": 51, "edge_http2": 3, "hostile_rtmp": 19,
    "limits": 30, "ll_hls_conformance": 71, "metrics": 45, "pipeline": 27, "player": 71,
    "player_telemetry": 3, "publish_hook": 10, "reconnect": 25, "rtmp_to_llhls": 55, "srt_ingest": 65,
    "timeline": 280, "transcode": 145, "uplink": 29,
}
# Run alone, after the lanes: the browser tests (Chromium counts stalls to the millisecond)
# and the transcode tests (real-time encodes: the most CPU of the suite; beside them, SRT
# publishers in the lanes lost datagrams to a 120 ms latency).
ALONE = ["transcode", "browser"]
# Extra arguments for a binary's test harness.
ARGS = {}
LANES = 2

print_lock = threading.Lock()


def say(text):
    with print_lock:
        sys.stdout.write(text)
        sys.stdout.flush()


def cargo(args):
    """Runs cargo in the repository root; returns its exit status."""
    say(f"\n==> cargo {' '.join(args)}\n")
    return subprocess.call(["cargo", *args], cwd=ROOT)


def integration_binaries():
    """Builds every test target and returns {name: executable} of the root package's tests."""
    # Built once with cargo's own output (errors readable), then listed as JSON (no work).
    subprocess.run(["cargo", "test", "--workspace", "--locked", "--no-run"], cwd=ROOT, check=True)
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--locked", "--no-run", "--message-format=json"],
        cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue
        target = m.get("target") or {}
        if (m.get("reason") == "compiler-artifact" and m.get("executable")
                and target.get("kind") == ["test"]
                and os.path.dirname(target.get("src_path", "")) == os.path.join(ROOT, "tests")):
            found[target["name"]] = m["executable"]
    return found


def run_binary(name, exe, results):
    start = time.monotonic()
    proc = subprocess.run([exe, *ARGS.get(name, [])], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    took = time.monotonic() - start
    ok = proc.returncode == 0
    results[name] = (ok, took)
    verdict = "ok" if ok else f"FAILED (exit {proc.returncode})"
    say(f"\n==> tests/{name}.rs: {verdict} in {took:.0f} s\n{proc.stdout}")


def balance(names):
    """Longest first, each onto the lightest lane."""
    lanes = [[] for _ in range(LANES)]
    load = [0] * LANES
    for n in sorted(names, key=lambda n: -WEIGHTS.get(n, 60)):
        i = load.index(min(load))
        lanes[i].append(n)
        load[i] += WEIGHTS.get(n, 60)
    return lanes


def main():
    serial = "--serial" in sys.argv[1:]
    began = time.monotonic()
    failed = []
    # Unit tests of every crate, then doc tests (cheap; cargo prints their results).
    if cargo(["test", "--workspace", "--locked", "--lib", "--bins"]) != 0:
        failed.append("unit tests")
    if cargo(["test", "--workspace", "--locked", "--doc"]) != 0:
        failed.append("doc tests")
    binaries = integration_binaries()
    results = {}
    together = [n for n in binaries if n not in ALONE]
    lanes = [[n] for n in sorted(together)] if serial else balance(together)
    if serial:
        for lane in lanes:
            for n in lane:
                run_binary(n, binaries[n], results)
    else:
        say("\n==> integration tests in lanes: "
            + " | ".join(", ".join(lane) for lane in lanes) + "\n")

        def run_lane(lane):
            for n in lane:
                run_binary(n, binaries[n], results)

        threads = [threading.Thread(target=run_lane, args=(lane,)) for lane in lanes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for n in ALONE:
        if n in binaries:
            run_binary(n, binaries[n], results)
    failed += [f"tests/{n}.rs" for n, (ok, _) in sorted(results.items()) if not ok]
    say("\n==> summary\n")
    for n, (ok, took) in sorted(results.items(), key=lambda x: -x[1][1]):
        say(f"  {'ok    ' if ok else 'FAILED'} {took:6.0f} s  tests/{n}.rs\n")
    total = time.monotonic() - began
    if failed:
        say(f"FAILED: {', '.join(failed)} ({total / 60:.1f} min)\n")
        return 1
    say(f"all tests passed: {len(results)} integration binaries in {total / 60:.1f} min\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
