#!/usr/bin/env bash
# Build the libFuzzer harnesses (tests/fuzz) and run each for SECONDS
# (default 30) on a copy of its seed corpus; fail on any crash, leak,
# sanitizer report or broken invariant.
#
#   scripts/fuzz.sh [SECONDS] [HARNESS...]
#
# The whole tree is configured with -fsanitize=fuzzer-no-link (so the
# modules report coverage to libFuzzer) plus ASan and UBSan, and
# SLUICE_FUZZ=ON (which adds the harnesses, linked with -fsanitize=fuzzer).
# clang is required. Warnings stay errors unless SLUICE_WERROR=OFF is set
# in the environment (clang warns about some things gcc does not).
# Crashing inputs are kept in build-fuzz/fuzz-runs/<harness>/; copy one
# into tests/fuzz/crashes/<harness>/ to keep it as a regression input.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-30}
shift || true
HARNESSES=("$@")
if [ ${#HARNESSES[@]} -eq 0 ]; then
  HARNESSES=(fuzz_smtp_server fuzz_smtp_reply fuzz_job_decode fuzz_config fuzz_template)
fi
BUILD=${SLUICE_FUZZ_BUILD:-build-fuzz}
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz.sh: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER="$CC" -DSLUICE_FUZZ=ON \
  -DSLUICE_WERROR="${SLUICE_WERROR:-ON}" \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
  >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
RUNS="$BUILD/fuzz-runs"
mkdir -p "$RUNS"
failed=()
for h in "${HARNESSES[@]}"; do
  work="$RUNS/$h"
  # One at a time, so a component that does not build fails only the
  # harnesses that link it.
  if ! ninja -C "$BUILD" "$h" >"$RUNS/$h.build.log" 2>&1; then
    echo "fuzz.sh: $h does not build (see $RUNS/$h.build.log)" >&2
    failed+=("$h")
    continue
  fi
  rm -rf "$work"
  mkdir -p "$work/corpus"
  cp tests/fuzz/corpus/"$h"/* "$work/corpus/"
  # Known crashers first: each must now pass.
  if [ -d "tests/fuzz/crashes/$h" ]; then
    if ! "$BUILD/bin/$h" -runs=0 "tests/fuzz/crashes/$h" >"$work/replay.log" 2>&1; then
      echo "fuzz.sh: $h: a reproducer in tests/fuzz/crashes/$h fails again (see $work/replay.log)" >&2
      failed+=("$h")
      continue
    fi
  fi
  echo "== $h: ${SECONDS_EACH}s"
  if "$BUILD/bin/$h" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
       -max_len=8192 -print_final_stats=1 -artifact_prefix="$work/" \
       "$work/corpus" >"$work/log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$work/log" | tail -n 1 || tail -n 3 "$work/log"
  else
    echo "fuzz.sh: $h FAILED; input and log in $work/" >&2
    grep -aE 'invariant|ERROR|SUMMARY' "$work/log" | head -n 5 >&2 || true
    failed+=("$h")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: all ${#HARNESSES[@]} harnesses ran ${SECONDS_EACH}s without a finding"
