#!/usr/bin/env bash
# Origin benchmark (not a test): publishes real RTMP streams for 60 s and reports the part
# publish delay and ingest-to-servable delay (p50/p99, from the origin's own histograms), and
# the origin's CPU and RSS with 1 and with 10 concurrent 3 Mb/s publishes, beside ffmpeg's own
# RTMP→fMP4 HLS packager doing the same job for one stream (CPU ratio).
#
#   bench/origin.sh [--duration SECONDS] [--streams "1 10"]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ffmpeg >/dev/null || { echo "needs ffmpeg (apt-get install ffmpeg)" >&2; exit 1; }
cargo build --release --locked -q
exec python3 bench/origin_bench.py "$@"
