#!/usr/bin/env bash
# The reliability fault suite at full size: every scenario in tests/fault
# with 20,000 jobs (SLUICE_FAULT_JOBS overrides), one report line per
# scenario collected in build/fault-report.txt. CI runs the same suite at
# 2,000 jobs through `ctest -L fault`.
#
#   bash scripts/fault.sh            # build if needed, run, print the report
#   SLUICE_FAULT_JOBS=5000 bash scripts/fault.sh
#   bash scripts/fault.sh --kafka real   # the scenarios that run on real Kafka
#                                        # (a 3-node cluster of scripts/kafka.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
tests="test_kill test_ledger test_smtp test_hostile test_kafka test_rebalance test_retention test_bulk_faults"
if [ "${1:-}" = --kafka ]; then
  case "${2:-}" in
    real) export SLUICE_KAFKA=real
          tests="test_kill test_ledger test_kafka test_rebalance test_compaction test_pipeline test_bulk_faults" ;;
    dev) ;;
    *) echo "usage: scripts/fault.sh [--kafka dev|real]" >&2; exit 2 ;;
  esac
fi
[ -x build/bin/sluice-sender ] && [ -x build/bin/fault_publish ] || bash scripts/build.sh
export SLUICE_BIN="$PWD/build/bin"
export SLUICE_FAULT_JOBS="${SLUICE_FAULT_JOBS:-20000}"
export SLUICE_FAULT_REPORT="$PWD/build/fault-report.txt"
: > "$SLUICE_FAULT_REPORT"
rc=0
# shellcheck disable=SC2086
(cd tests/fault && python3 -m unittest -v $tests) || rc=$?
echo "--- fault suite on ${SLUICE_KAFKA:-dev} Kafka, $SLUICE_FAULT_JOBS jobs per scenario ---"
cat "$SLUICE_FAULT_REPORT"
exit $rc
