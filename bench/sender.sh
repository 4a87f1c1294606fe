#!/usr/bin/env bash
# sluice-sender alone vs smtp-source on the same smtp-sink; see bench/sender.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/sender.py "$@"
