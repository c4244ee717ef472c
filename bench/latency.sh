#!/usr/bin/env bash
# Glass-to-glass latency benchmark (not a test): publish → origin → edge → player for 60 s at
# the default PART-TARGET, with the Rust player and with hls.js in headless Chromium, reading
# the visual clock code of every frame; then the same source through nginx-rtmp's classic HLS
# with the same hls.js page, side by side on this machine. Reports p50/p95/max and stalls;
# writes bench/out/latency.json and screenshots.
#
#   bench/latency.sh [--duration SECONDS] [--no-peer]
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
