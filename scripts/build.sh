#!/usr/bin/env bash
# Configures and builds sluice into build/ (binaries in build/bin/).
# SLUICE_SANITIZE=1 builds with ASan+UBSan into build-asan/ instead.
# Warnings are errors here (SLUICE_WERROR), as in CI; the default CMake build
# only warns.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SLUICE_SANITIZE:-0}" = 1 ]; then
  dir=build-asan; extra=(-DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_WERROR=ON)
else
  dir=build; extra=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_WERROR=ON)
fi
cmake -S . -B "$dir" -G Ninja "${extra[@]}" >/dev/null
ninja -C "$dir"
