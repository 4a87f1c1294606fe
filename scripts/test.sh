#!/usr/bin/env bash
# From a fresh Debian bookworm machine: install, build, run every test
# (unit, integration, fault, and the real-Kafka tier on a 3-node Apache Kafka
# that scripts/kafka.sh fetches and starts), then the unit and integration tests again
# under AddressSanitizer and UndefinedBehaviorSanitizer. Before the tests,
# the Release and Debug builds with GCC and with clang must compile without
# a warning (compile only, each in its own build-<type>-<cc>/ directory).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
for cc in gcc clang; do
  for type in Release Debug; do
    dir=build-$(echo "$type" | tr A-Z a-z)-$cc
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=$type -DCMAKE_C_COMPILER=$cc -DSLUICE_WERROR=ON >/dev/null
    ninja -C "$dir"
  done
done
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j3
SLUICE_SANITIZE=1 bash scripts/build.sh
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j3 --timeout 1200 -L 'unit|integration'
