#!/usr/bin/env bash
# Soak and chaos (not tests): each scenario runs the release binaries with real publishers
# (ffmpeg CLI, RTMP and SRT) and real viewers (ferrocast-player), prints a figure table and
# writes bench/out/chaos-SCENARIO.json; exit status 1 if a scenario's checks did not hold.
#
#   soak      30 min, one publish (360p + a transcoded 240p rung), 300 viewers over 2 edges:
#             RSS, open fds and threads of every process each 10 s, viewer errors and stalls
#   restart   kill -9 the origin behind 2 edges and start it again: stale playlists, then
#             the new session; one player per edge plays through it
#   flap      the publisher dropped and reconnected every 5 s for 5 min: one continuous
#             playlist, every splice marked, no leak
#   srt-loss  SRT through a link losing 5 % of packets each way for 10 min
#   netns     origin, two edges and viewers in network namespaces with 40 ms RTT and 1 % loss
#             on every link, beside loopback and the unimpaired namespaces
#
#   bench/chaos.sh [soak|restart|flap|srt-loss|netns|all …] [--duration S] [--viewers N]
#                  [--delay-ms MS] [--loss PCT] [--srt-loss PCT] [--netem user|kernel]
#
# srt-loss and netns need root (ip netns) and /dev/net/tun (bench/netem.py, a userspace netem:
# `--netem kernel` uses tc's netem where the kernel has sch_netem).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi
cargo build --release --locked -q --bin ferrocast
cargo build --release --locked -q -p player-test --bin ferrocast-player
exec python3 bench/chaos_bench.py "$@"
