#!/usr/bin/env bash
# Glass-to-glass latency benchmark (not a test): publish → origin → edge → player, reading the
# visual clock code of every frame, in one run: the Rust player and plain hls.js at the default
# profile; the built-in player page (/live/NAME/) at the default and the lowest-latency profile,
# each with a zerolatency and an OBS-like (B-frames) source; then the same source through
# nginx-rtmp's classic HLS with the plain hls.js page, side by side on this machine. Reports
# p50/p95/max, capture → PDT vs PDT → shown, stalls and the page's targets (MET/MISSED);
# writes bench/out/latency.json and screenshots.
#
#   bench/latency.sh [--duration SECONDS] [--size WxH] [--no-peer] [--page-only]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-liberation)
command -v node >/dev/null || need+=(nodejs npm)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi
[ -d player-test/browser/node_modules/hls.js ] ||
  npm ci --prefix player-test/browser --no-audit --no-fund
cargo build --release --locked -q --bin ferrocast
cargo build --release --locked -q -p player-test --bin ferrocast-player
exec python3 bench/latency_bench.py "$@"
