"""Driver for bench/nvenc.sh: the full ladder on NVENC, per-rung figures and IDR alignment."""

import argparse
import json
import os
import signal
import struct
import sys
import time
import urllib.request

from ladder_bench import RUNGS, source
from origin_bench import OUT, publish, start_server


def get(url):
    return urllib.request.urlopen(url, timeout=10).read()


def boxes(data, start=0, end=None):
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        if size < head:
            return
        yield kind.decode("latin1"), i + head, i + size
        i += size


def first_presented(seg):
    """(tfdt + first sample's composition offset, keyframes in the fragment's samples) of the
    first video traf (track 1 is video in Ferrocast's fMP4)."""
    for kind, s, e in boxes(seg):
        if kind != "moof":
            continue
        for k2, s2, e2 in boxes(seg, s, e):
            if k2 != "traf":
                continue
            tfdt, cto, keys, track, default_flags = 0, 0, 0, None, 0
            for k3, s3, e3 in boxes(seg, s2, e2):
                if k3 == "tfhd":
                    flags = int.from_bytes(seg[s3 + 1:s3 + 4], "big")
                    track = struct.unpack(">I", seg[s3 + 4:s3 + 8])[0]
                    off = s3 + 8 + (8 if flags & 1 else 0) + (4 if flags & 2 else 0) \
                        + (4 if flags & 8 else 0) + (4 if flags & 0x10 else 0)
                    if flags & 0x20:
                        default_flags = struct.unpack(">I", seg[off:off + 4])[0]
                elif k3 == "tfdt":
                    v = seg[s3]
                    tfdt = struct.unpack(">Q" if v == 1 else ">I", seg[s3 + 4:s3 + (12 if v == 1 else 8)])[0]
                elif k3 == "trun":
                    v, flags = seg[s3], int.from_bytes(seg[s3 + 1:s3 + 4], "big")
                    n = struct.unpack(">I", seg[s3 + 4:s3 + 8])[0]
                    p = s3 + 8 + (4 if flags & 1 else 0)
                    first_flags = None
                    if flags & 4:
                        first_flags = struct.unpack(">I", seg[p:p + 4])[0]
                        p += 4
                    for i in range(n):
                        if flags & 0x100:
                            p += 4
                        if flags & 0x200:
                            p += 4
                        sf = default_flags
                        if flags & 0x400:
                            sf = struct.unpack(">I", seg[p:p + 4])[0]
                            p += 4
                        elif i == 0 and first_flags is not None:
                            sf = first_flags
                        if flags & 0x800:
                            c = struct.unpack(">i" if v == 1 else ">I", seg[p:p + 4])[0]
                            p += 4
                            if i == 0:
                                cto = c
                        if not (sf >> 16) & 1:  # sample_is_non_sync_sample clear: a keyframe
                            keys += 1
            if track == 1:
                return tfdt + cto, keys
    return None, 0


def segments(http, stream, rendition, n):
    base = f"http://{http}/live/{stream}/{rendition}"
    text = get(f"{base}/index.m3u8").decode()
    out, msn, uri_msn = {}, None, None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":")[1])
        elif line and not line.startswith("#"):
            uri_msn = int(line.split(".")[0])
            out[uri_msn] = line
    wanted = sorted(out)[-n:]
    result = {}
    for m in wanted:
        seg = get(f"{base}/{out[m]}")
        # Keyframes per segment: every fragment of it; the start from the first.
        start, keys = None, 0
        for kind, s, e in boxes(seg):
            if kind == "moof":
                t, k = first_presented(seg[s - 8:])
                start = t if start is None else start
                keys += k
        result[m] = (start, keys)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--transcoder", default="nvenc", help="cpu: a dry run of this script without a GPU")
    args = ap.parse_args()
    rungs = "".join(f'[[transcode.rungs]]\nname = "{n}"\nheight = {h}\nbitrate_kbps = {k}\n'
                    for n, h, k in RUNGS)
    names = ", ".join(f'"{n}"' for n, _, _ in RUNGS)
    cfg = (f'target_duration = 1\n[transcode]\ntranscoder = "{args.transcoder}"\n{rungs}'
           f"[[transcode.tiers]]\nmin_viewers = 0\nrungs = [{names}]\n")
    server, addrs, _ = start_server(["nvenc-key-0000"], cfg)
    time.sleep(1.0)
    if server.poll() is not None:
        print("the origin did not start: NVENC does not open here (see its log)")
        sys.exit(1)
    src = source(args.height, int(args.duration + 20))
    pub = publish(src, f"rtmp://{addrs['rtmp']}/live/nvenc-key-0000")
    report = {}
    try:
        time.sleep(args.duration)
        ladder = json.loads(get(f"http://{addrs['http']}/api/streams"))["streams"][0]["ladder"]
        report["ladder"] = ladder
        renditions = ["source"] + [r["name"] for r in ladder["rungs"]]
        segs = {r: segments(addrs["http"], "s0", r, 5) for r in renditions}
    finally:
        pub.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
    ok = True
    print(f"{'rung':>7} {'encoder':>8} {'speed':>7} {'lag s':>6} {'cpu s':>7}")
    for r in ladder["rungs"]:
        print(f"{r['name']:>7} {str(r['encoder']):>8} {r['speed'] or 0:7.2f} {r['lag_seconds']:6.3f} "
              f"{r['cpu_seconds']:7.2f}")
    if args.transcoder == "nvenc" and not any(r["encoder"] == "nvenc" for r in ladder["rungs"]):
        print("no rung runs on NVENC")
        ok = False
    common = set.intersection(*(set(s) for s in segs.values()))
    aligned = 0
    for m in sorted(common):
        starts = {r: segs[r][m][0] for r in segs}
        keys = {r: segs[r][m][1] for r in segs}
        same = max(starts.values()) - min(starts.values()) <= 1
        one_idr = all(k == 1 for r, k in keys.items() if r != "source")
        aligned += same and one_idr
        print(f"segment {m}: starts {starts} keyframes {keys} → {'aligned' if same and one_idr else 'NOT ALIGNED'}")
        ok &= same and one_idr
    report["aligned_segments"] = aligned
    report["segments_compared"] = len(common)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "nvenc.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"NVENC ladder: {sum(r['encoder'] == 'nvenc' for r in ladder['rungs'])}/{len(ladder['rungs'])} "
          f"rungs on NVENC, {aligned}/{len(common)} segments aligned → {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok and common else 1)


if __name__ == "__main__":
    main()
