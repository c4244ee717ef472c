#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that faces the network (fuzz/fuzz_targets/): builds
# the targets with libFuzzer (libfuzzer-sys) and SanitizerCoverage on stable Rust — what
# cargo-fuzz does, minus its nightly-only sanitizer flag — replays the regression inputs in
# fuzz/regressions/TARGET/ (every crash found is kept there), then fuzzes each target for
# SECONDS, seeded from the real captures in testdata/ and fuzz/seeds/. The corpus grows in
# target/fuzz/corpus/TARGET across runs; a crash's input lands in target/fuzz/artifacts/.
#
#   bench/fuzz.sh [SECONDS per target, default 300] [TARGET ...]
#
# Prints one row per target (executions, executions per second, corpus entries and bytes,
# coverage features, result) and exits non-zero when a target crashed. The test command runs
# it for a few seconds per target; run it for hours to look harder.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-300}"
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(rtmp_session flv mpegts avc_aac directives cmcd config)

triple=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
build_start=$(date +%s)
cargo build --manifest-path fuzz/Cargo.toml --release --locked --target "$triple" \
  --target-dir target/fuzz --bins -q
echo "fuzz targets built in $(( $(date +%s) - build_start )) s"
bin="target/fuzz/$triple/release"

# Seeds per target (a step byte first where the target reads it: reads of 1 and 97 bytes).
seeds() {
  local t="$1" dir="target/fuzz/seeds/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  case "$t" in
    rtmp_session)
      for s in 0 6; do
        { printf "\\x$(printf %02x "$s")"; cat ingest/testdata/ffmpeg_publish_after_handshake.rtmp; } > "$dir/ffmpeg_$s"
      done ;;
    flv) cp ingest/testdata/*.flv "$dir/" ;;
    mpegts)
      for s in 0 23; do
        { printf "\\x$(printf %02x "$s")"; cat ingest/testdata/ffmpeg_180p_h264_aac.ts; } > "$dir/ffmpeg_$s"
      done ;;
    avc_aac) cp media/testdata/* "$dir/"; printf '\x11\x90' > "$dir/asc_48k_stereo" ;;
    directives | cmcd) cp "fuzz/seeds/$t"/* "$dir/" ;;
    config)
      for f in deploy/*.toml deploy/k8s/*.toml; do cp "$f" "$dir/$(echo "$f" | tr / _)"; done ;;
  esac
  echo "$dir"
}

printf '%-13s %12s %9s %8s %10s %8s  %s\n' target execs exec/s corpus bytes features result
failed=0
for t in "${targets[@]}"; do
  corpus="target/fuzz/corpus/$t"
  artifacts="target/fuzz/artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  log="target/fuzz/$t.log"
  result=ok
  # Every input that once crashed a target must not crash it again.
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    if ! "$bin/$t" -runs=1 fuzz/regressions/"$t"/* >"$log.regressions" 2>&1; then
      result="REGRESSION (see $log.regressions)"
      failed=1
    fi
  fi
  seed_dir=$(seeds "$t")
  if ! "$bin/$t" "$corpus" "$seed_dir" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -max_len=131072 -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
    result="CRASH: $(ls -t "$artifacts" | head -1) (see $log)"
    failed=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  features=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  entries=$(find "$corpus" -type f | wc -l)
  bytes=$(du -sb "$corpus" | cut -f1)
  printf '%-13s %12s %9s %8s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$entries" "$bytes" \
    "${features:-?}" "$result"
done
exit "$failed"
