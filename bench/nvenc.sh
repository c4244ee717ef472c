#!/usr/bin/env bash
# NVENC check (not a test; for a machine with an NVIDIA GPU and driver): builds, runs the origin
# with `[transcode] transcoder = "nvenc"` and the full ladder, publishes a 1080p30 B-frame
# source for --duration seconds, and reports per rung the encoder in use (nvenc, or x264 where
# a session would not open), its speed, CPU and lag, and IDR alignment: for each of the last
# segments, every rendition starts at the same presentation time with a keyframe and holds no
# other. Exits non-zero when a rung is not aligned or NVENC did not open at all.
#
#   bench/nvenc.sh [--duration SECONDS] [--height 1080] [--transcoder cpu (a dry run without a GPU)]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
pkg-config --exists libavcodec 2>/dev/null || need+=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev pkg-config libclang-dev)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,encoder.stats.sessionCount --format=csv || echo "nvidia-smi not found"
cargo build --release --locked -q --bin ferrocast
exec python3 bench/nvenc_bench.py "$@"
