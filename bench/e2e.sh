#!/usr/bin/env bash
# End-to-end throughput: N messages through devbroker -> scheduler -> sender
# -> Postfix's smtp-sink, and in the same run the same N messages through a
# local Postfix relaying to the same sink. Prints messages per second for
# both and the ratio sluice / Postfix. Run as root from the project root
# after scripts/build.sh:  bash bench/e2e.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$WORK"
. bench/lib.sh
cleanup() { bench_postfix_stop; kill "${SINK_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

SINK=$(bench_free_port)
bench_sink "$SINK"

# sluice: the whole pipeline, routed to the sink.
build/bin/sluice dev --demo "$N" --route 127.0.0.1:"$SINK" --json --dir "$WORK/dev" > "$WORK/sluice.json"
SLUICE_RATE=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["messages_per_second"]); assert d["delivered"]==d["messages"], d' "$WORK/sluice.json")

# Postfix: smtp-source injects N messages (20 sessions, 100 messages each
# connection), Postfix queues and relays them to the same sink.
PF=$(bench_free_port)
bench_postfix "$PF" "$SINK"
start=$(date +%s.%N)
smtp-source -s 20 -m "$N" -l 1024 -f demo@sluice.example -t user@example.com 127.0.0.1:"$PF"
bench_wait 3600 bash -c "[ \$(grep -c 'status=sent' '$WORK/postfix/maillog' 2>/dev/null || echo 0) -ge $N ]"
end=$(date +%s.%N)
PF_RATE=$(python3 -c "print(round($N/($end-$start),1))")

python3 - "$N" "$SLUICE_RATE" "$PF_RATE" <<'PY'
import sys
n, s, p = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"messages            {n}")
print(f"sluice end-to-end   {s:.0f} msg/s")
print(f"postfix relay       {p:.0f} msg/s")
print(f"ratio sluice/postfix {s/p:.2f}")
PY
