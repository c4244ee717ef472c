#!/usr/bin/env bash
# One command to test Ferrocast: installs the system packages the suite needs (Debian's FFmpeg
# CLI and libraries, pkg-config and libclang for the FFmpeg bindings, libsrt, srt-tools, curl,
# openssl, docker-compose for validating deploy/compose.yaml, python3-venv for validating
# deploy/k8s (PyPI's kubernetes-validate),
# Chromium for the browser test, promtool (Debian's prometheus) for checking /metrics, Node.js
# if absent, a C toolchain) and the browser test's npm
# packages (hls.js, Shaka Player, playwright-core; no browser download), then checks formatting, lints, and
# runs the whole test suite (unit tests and the integration tests that drive the real binary
# with the real ffmpeg CLI, and hls.js in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
[ -e /usr/include/srt/srt.h ] || need+=(libsrt-openssl-dev)
[ -e /usr/include/x86_64-linux-gnu/libavcodec/avcodec.h ] || [ -e /usr/include/libavcodec/avcodec.h ] ||
  need+=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v srt-live-transmit >/dev/null 2>&1 || need+=(srt-tools)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-liberation)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# deploy/k8s/validate.sh makes a venv for PyPI's kubernetes-validate.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "warning: Node.js $(node --version) found; the browser test's playwright-core wants 20+" >&2
fi
npm ci --prefix player-test/browser --no-audit --no-fund

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The deployment file, checked by a real Compose parser (no Docker engine needed).
docker-compose -f deploy/compose.yaml config -q
docker-compose -f deploy/compose.yaml --profile gpu config -q
# The Kubernetes manifests, against the API schemas offline.
deploy/k8s/validate.sh
# The parsers that face the network under libFuzzer, 10 s a target, after replaying every
# input that once crashed one (bench/fuzz.sh with a longer time for real runs).
bench/fuzz.sh 10
# Unit and doc tests, then the integration tests in two lanes side by side, the transcode and
# browser tests alone (tests/lanes.py says why; `tests/lanes.py --serial`: one at a time).
python3 tests/lanes.py
