#!/usr/bin/env bash
# Ladder benchmark (not a test), side by side on the same input in one run:
#  (1) Ferrocast's in-process ladder vs the ffmpeg CLI doing the same ladder (one decode,
#      split, scale, N x libx264 veryfast/zerolatency, same bitrates): CPU-seconds per
#      media-second, paced at real time, for a 720p30 and a 1080p30 source with the full
#      ladder (a partner stream); the CLI's unpaced speed too;
#  (2) how many source+480p streams one machine transcodes in real time (no rung behind);
#  (3) the added glass-to-glass latency of the 480p rung vs the source rendition.
# Writes bench/out/ladder.json.
#
#   bench/ladder.sh [--duration SECONDS] [--heights 720,1080] [--max-streams N] [--skip-streams]
#                   [--skip-latency] [--only-streams]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ffmpeg >/dev/null || { echo "needs ffmpeg (apt-get install ffmpeg)" >&2; exit 1; }
cargo build --release --locked -q --bin ferrocast
cargo build --release --locked -q -p player-test --bin ferrocast-player
exec python3 bench/ladder_bench.py "$@"
