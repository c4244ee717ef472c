#!/usr/bin/env bash
# Edge benchmark (not a test), side by side on this machine:
#  (a) cached-part throughput: the Ferrocast edge vs nginx proxy_cache in front of the same
#      origin, same load tool (wrk, keep-alive), same objects → requests/s ratio;
#  (b) origin requests per 1000 viewers (the coalescing ratio), with 1000 LL-HLS viewers from
#      `ferrocast-player load` on one edge;
#  (c) edge memory per 1000 viewers, requests/s per viewer, edge CPU and viewers per edge core
#      at the origin's latency profile (`--profile lowest`: 0.2 s parts).
#
#   bench/edge.sh [--viewers N] [--duration SECONDS] [--profile default|lowest] [--load-only]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi
cargo build --release --locked -q --bin ferrocast
cargo build --release --locked -q -p player-test --bin ferrocast-player
exec python3 bench/edge_bench.py "$@"
