#!/usr/bin/env bash
# Configures and builds sluice into build/ (binaries in build/bin/).
# SLUICE_SANITIZE=1 builds with ASan+UBSan into build-asan/ instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SLUICE_SANITIZE:-0}" = 1 ]; then
  dir=build-asan; extra=(-DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
else
  dir=build; extra=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
cmake -S . -B "$dir" -G Ninja "${extra[@]}" >/dev/null
ninja -C "$dir"
