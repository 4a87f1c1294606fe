#!/usr/bin/env bash
# From a fresh Debian bookworm machine: install, build, and send N messages
# (default 10,000) through the whole pipeline on the embedded dev broker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
exec build/bin/sluice dev --demo "${1:-10000}"
