#!/usr/bin/env bash
# Full-size security checks of sluice-submit, too slow for ctest:
#   - testssl.sh against 587 (--starttls smtp) and 465 (protocols, server
#     preferences, vulnerabilities; offline): no MEDIUM/HIGH/CRITICAL or
#     VULNERABLE finding, only TLS 1.2 and 1.3 offered (about a minute);
#   - 10,000 idle connections to 587 while a legitimate STARTTLS+AUTH+send
#     session must complete in under 2 s.
# The fast checks (s_client versions, smuggling, STARTTLS injection, CR/LF
# in parameters, a 900-connection crowd) run in ctest from the same file,
# tests/integration/test_submit_security.py.
#
#   scripts/security.sh [BUILD_DIR]        (default build)
#
# SLUICE_SECURITY_IDLE=N changes the crowd size. The testssl JSON reports
# are kept in BUILD_DIR/security/. Needs testssl.sh and swaks
# (scripts/deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
[ -x "$BUILD/bin/sluice-submit" ] || { echo "security.sh: build $BUILD first (scripts/build.sh)" >&2; exit 2; }
command -v testssl >/dev/null || { echo "security.sh: testssl not found (apt-get install testssl.sh)" >&2; exit 2; }
OUT="$(pwd)/$BUILD/security"
mkdir -p "$OUT"
export SLUICE_BIN="$(pwd)/$BUILD/bin" SLUICE_SECURITY_FULL=1 SLUICE_SECURITY_OUT="$OUT"
# The crowd needs a file descriptor each, on both ends; sluice-submit
# inherits this limit (it does not raise its own).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd tests/integration
exec python3 -m unittest -v \
  test_submit_security.TestTestssl \
  test_submit_security.TestIdleCrowd
