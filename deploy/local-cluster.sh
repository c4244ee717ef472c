#!/usr/bin/env bash
# Starts the same topology as deploy/compose.yaml — origin + N edges + the front (the origin's
# director, /watch/NAME, which redirects each viewer to one of the least-loaded edges) — as
# local processes on loopback ports. The integration tests use it; it needs no Docker.
#
#   deploy/local-cluster.sh [--edges N] [--config origin.toml] [--bin PATH] [--token TOKEN]
#                           [--origin-http ADDR] [--edge-base-port PORT] [--viewer-window S]
#                           [--edge-config edge.toml]
#
# Every viewer here comes from 127.0.0.1, so the edges' per-address request rate limit is off
# unless --edge-config (TOML appended to each edge's config) sets its own [http_limits].
#
# Prints one line per node, then "cluster ready":
#   origin pid=… rtmp=… http=… srt=…
#   edge pid=… http=… id=…
#   edge log=…
#   front url=http://…/watch/{name}
# Runs until interrupted (SIGINT/SIGTERM), then stops every node it started.
set -euo pipefail
cd "$(dirname "$0")/.."

edges=2
config=""
bin="${FERROCAST_BIN:-target/release/ferrocast}"
token="local-cluster-token"
origin_http="127.0.0.1:0"
edge_base=0
viewer_window=15
edge_config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --edges) edges="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --origin-http) origin_http="$2"; shift 2 ;;
    --edge-base-port) edge_base="$2"; shift 2 ;;
    --viewer-window) viewer_window="$2"; shift 2 ;;
    --edge-config) edge_config="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ ! -x "$bin" ]; then
  cargo build --release --locked -q
  bin=target/release/ferrocast
fi

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Waits for a node's "listening" line in its stdout file.
listening() {
  local file="$1" pid="$2"
  for _ in $(seq 1 200); do
    if grep -q "listening" "$file" 2>/dev/null; then grep "listening" "$file"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "node exited: $(cat "$dir"/*.err 2>/dev/null | tail -5)" >&2; return 1; }
    sleep 0.05
  done
  echo "node did not start" >&2
  return 1
}

# The origin; its config gets the edge token appended unless it sets one.
ocfg="$dir/origin.toml"
if [ -n "$config" ]; then cp "$config" "$ocfg"; else : > "$ocfg"; fi
grep -q '^edge_token' "$ocfg" || { printf 'edge_token = "%s"\n' "$token" | cat - "$ocfg" > "$ocfg.new" && mv "$ocfg.new" "$ocfg"; }
"$bin" serve --config "$ocfg" --rtmp 127.0.0.1:0 --http "$origin_http" --srt 127.0.0.1:0 \
  >"$dir/origin.out" 2>"$dir/origin.err" &
opid=$!
pids+=("$opid")
line=$(listening "$dir/origin.out" "$opid")
ohttp=${line#*http=}; ohttp=${ohttp%% *}
echo "origin pid=$opid ${line#ferrocast listening }"
echo "origin log=$dir/origin.err"

for i in $(seq 1 "$edges"); do
  port=0
  [ "$edge_base" -gt 0 ] && port=$((edge_base + i - 1))
  ecfg="$dir/edge$i.toml"
  printf 'origin = "http://%s"\nid = "edge-%s"\ntoken = "%s"\nviewer_window = %s\n' \
    "$ohttp" "$i" "$token" "$viewer_window" > "$ecfg"
  if [ -n "$edge_config" ]; then cat "$edge_config" >> "$ecfg"
  else printf '[http_limits]\nrequests_per_ip = 0\n' >> "$ecfg"; fi
  "$bin" edge --config "$ecfg" --http "127.0.0.1:$port" >"$dir/edge$i.out" 2>"$dir/edge$i.err" &
  epid=$!
  pids+=("$epid")
  line=$(listening "$dir/edge$i.out" "$epid")
  echo "edge pid=$epid ${line#ferrocast edge listening }"
  echo "edge log=$dir/edge$i.err"
done
echo "front url=http://$ohttp/watch/{name}"
echo "cluster ready"
wait
