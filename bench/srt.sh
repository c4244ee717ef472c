#!/usr/bin/env bash
# SRT ingest benchmark (not a test): origin CPU per stream for SRT vs RTMP ingest of the same
# pre-encoded 720p30 ~3 Mb/s stream (ratio), and the latency SRT adds at the default 120 ms
# setting, measured by publishing one source to both protocols at once (ffmpeg tee) and
# comparing when the same first frame reached the origin (EXT-X-PROGRAM-DATE-TIME anchors).
#
#   bench/srt.sh [--duration SECONDS] [--streams N]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ffmpeg >/dev/null || { echo "needs ffmpeg (apt-get install ffmpeg)" >&2; exit 1; }
cargo build --release --locked -q
exec python3 bench/srt_bench.py "$@"
