#!/usr/bin/env python3
"""A userspace `tc netem` for bench/chaos.sh's network-namespace topology.

Reads IP packets from a TUN device, drops each with probability LOSS and writes the rest back
after DELAY milliseconds (one way, in arrival order; optional uniform JITTER that never
reorders). The router namespace sends every packet of an impaired link through the TUN
device with `ip rule iif …`, so TCP and SRT at the hosts see a real longer round trip and
real lost packets (retransmits, congestion windows), as with netem.

Why not netem itself: the kernel of the machines this bench was written on has no sch_netem
(nor tbf, fq, nft queue); this program needs only TUN. Where `tc qdisc add … netem` works,
bench/chaos.sh uses it instead (`--netem kernel`).

  netem.py --dev NAME --delay-ms 20 --loss 1 [--jitter-ms 0] [--seed 1]

Prints "ready" once the device is up; on SIGTERM prints one JSON line of counts.
"""

import argparse
import collections
import fcntl
import json
import os
import random
import signal
import struct
import sys
import threading
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", required=True)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0, help="percent of packets dropped")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    fd = open_tun(args.dev)
    rng = random.Random(args.seed)
    queue = collections.deque()
    ready = threading.Condition()
    counts = {"packets": 0, "dropped": 0, "bytes": 0}
    delay, jitter, loss = args.delay_ms / 1e3, args.jitter_ms / 1e3, args.loss / 100.0

    def release():
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, pkt = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                continue
            with ready:
                queue.popleft()
            try:
                os.write(fd, pkt)
            except OSError:
                pass

    threading.Thread(target=release, daemon=True).start()

    def stop(*_):
        print(json.dumps(counts), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    last_due = 0.0
    while True:
        pkt = os.read(fd, 65535)
        counts["packets"] += 1
        counts["bytes"] += len(pkt)
        if loss and rng.random() < loss:
            counts["dropped"] += 1
            continue
        # Jitter never reorders: a packet is not due before the one ahead of it.
        due = max(time.monotonic() + delay + (rng.uniform(-jitter, jitter) if jitter else 0.0), last_due)
        last_due = due
        with ready:
            queue.append((due, pkt))
            ready.notify()


if __name__ == "__main__":
    sys.exit(main())
