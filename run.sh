#!/usr/bin/env bash
# One command to run Ferrocast on Debian 12: installs what is missing (Debian's FFmpeg CLI and
# libraries (libavcodec, libavformat, libavutil, libswscale: the transcoder links them), libsrt,
# pkg-config and libclang for the FFmpeg bindings, a C toolchain), builds the release binary
# and starts the origin (`ferrocast serve`).
#
#   ./run.sh                       # origin on rtmp://0.0.0.0:1935/live and http://0.0.0.0:8080
#   ./run.sh --demo                # ... and publish an ffmpeg test pattern to watch right away
#   ./run.sh --config deploy/origin.toml [--rtmp ADDR] [--http ADDR]
set -euo pipefail
cd "$(dirname "$0")"

demo=0
args=()
for a in "$@"; do
  if [ "$a" = "--demo" ]; then demo=1; else args+=("$a"); fi
done

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
[ -e /usr/include/srt/srt.h ] || need+=(libsrt-openssl-dev)
[ -e /usr/include/x86_64-linux-gnu/libavcodec/avcodec.h ] || [ -e /usr/include/libavcodec/avcodec.h ] ||
  need+=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi

cargo build --release --locked
bin=target/release/ferrocast

if [ "$demo" -eq 0 ]; then
  exec "$bin" serve "${args[@]}"
fi

for a in "${args[@]}"; do
  if [ "$a" = "--config" ]; then
    echo "--demo publishes with the development key, which only exists without --config" >&2
    exit 2
  fi
done
log=$(mktemp)
"$bin" serve "${args[@]}" >"$log" &
server=$!
trap 'kill $server ${pub:-} 2>/dev/null; rm -f "$log"' EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q "ferrocast listening" "$log" && break
  kill -0 $server 2>/dev/null || { echo "ferrocast failed to start" >&2; exit 1; }
  sleep 0.1
done
line=$(grep "ferrocast listening" "$log")
rtmp=${line#*rtmp=}; rtmp=${rtmp%% *}
http=${line#*http=}; http=${http%% *}
rtmp_port=${rtmp##*:}
http_port=${http##*:}
# The demo publisher: a 720p30 test pattern (its on-screen timer shows the glass-to-glass delay
# against a player's clock) with a tone, 2 s GOP, the way OBS would send it.
ffmpeg -hide_banner -loglevel error -re \
  -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
  -c:v libx264 -profile:v high -preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 \
  -b:v 3M -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 \
  -f flv "rtmp://127.0.0.1:${rtmp_port}/live/ferrocast-dev-key" &
pub=$!
cat <<MSG

  Ferrocast is running with a demo stream.
    Multivariant playlist:  http://localhost:${http_port}/live/demo/index.m3u8
    ffplay:  ffplay -fflags nobuffer http://localhost:${http_port}/live/demo/index.m3u8
    VLC:     vlc http://localhost:${http_port}/live/demo/index.m3u8
    Dashboard: http://localhost:${http_port}/
    Metrics: http://localhost:${http_port}/metrics    Streams: http://localhost:${http_port}/api/streams
  (the playlist appears after the first 2-second segment; Ctrl-C stops everything)

MSG
wait $server
