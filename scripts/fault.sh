#!/usr/bin/env bash
# The reliability fault suite at full size: every scenario in tests/fault
# with 20,000 jobs (SLUICE_FAULT_JOBS overrides), one report line per
# scenario collected in build/fault-report.txt. CI runs the same suite at
# 2,000 jobs through `ctest -L fault`.
#
#   bash scripts/fault.sh            # build if needed, run, print the report
#   SLUICE_FAULT_JOBS=5000 bash scripts/fault.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/sluice-sender ] && [ -x build/bin/fault_publish ] || bash scripts/build.sh
export SLUICE_BIN="$PWD/build/bin"
export SLUICE_FAULT_JOBS="${SLUICE_FAULT_JOBS:-20000}"
export SLUICE_FAULT_REPORT="$PWD/build/fault-report.txt"
: > "$SLUICE_FAULT_REPORT"
rc=0
(cd tests/fault && python3 -m unittest -v test_kill test_smtp test_hostile test_kafka \
    test_rebalance test_retention test_bulk_faults) || rc=$?
echo "--- fault suite, $SLUICE_FAULT_JOBS jobs per scenario ---"
cat "$SLUICE_FAULT_REPORT"
exit $rc
