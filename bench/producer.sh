#!/usr/bin/env bash
# Producer throughput: `sluice bulk` publishing N template jobs (one
# recipient each, three variables) from a CSV to the dev broker, timed from
# the first row read to the last Kafka acknowledgement. Prints jobs/s, once
# with the per-recipient ACCEPTED events (the default) and once without.
#   bash bench/producer.sh [N] [BIN_DIR]     (defaults: 1000000, build/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
BIN=${2:-build/bin}
WORK=$(mktemp -d /tmp/sluice-bench-producer.XXXXXX)
BROKER_PID=
cleanup() { [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN/sluice-devbroker" --port-file "$WORK/port" > "$WORK/broker.out" 2> "$WORK/broker.err" &
BROKER_PID=$!
for _ in $(seq 200); do [ -s "$WORK/port" ] && break; sleep 0.05; done
[ -s "$WORK/port" ] || { echo "devbroker did not start" >&2; cat "$WORK/broker.err" >&2; exit 1; }
printf 'kafka:\n  bootstrap: %s\n' "$(head -1 "$WORK/port")" > "$WORK/sluice.yaml"

printf 'From: News <news@example.net>\nTo: {{email}}\nSubject: Hello {{first_name}}\n\nHi {{first_name}}, your code is {{code}}.\n' > "$WORK/t.txt"
"$BIN/sluice" template put -c "$WORK/sluice.yaml" bench "$WORK/t.txt" > /dev/null

# 1000 domains so that jobs spread over every partition as in real lists.
awk -v n="$N" 'BEGIN { print "email,first_name,code";
  for (i = 0; i < n; i++) printf "user%d@domain%d.example,Name%d,%d\n", i, i % 1000, i, i }' \
  > "$WORK/r.csv"
echo "rows                $N ($(du -h "$WORK/r.csv" | cut -f1) CSV)"

run() {
  "$BIN/sluice" bulk -c "$WORK/sluice.yaml" --template bench --recipients "$WORK/r.csv" \
    --from news@example.net --campaign bench --no-progress --json "$@" > "$WORK/out.json"
  python3 - "$WORK/out.json" "$N" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["published"] == int(sys.argv[2]) and d["rejected"] == 0 and d["failed"] == 0, d
print("%-19s %.0f jobs/s  (%.2fs, %d bytes of jobs)" % (
    sys.argv[3] if len(sys.argv) > 3 else "", d["jobs_per_sec"], d["seconds"], d["bytes"]))
PY
}
printf '%-19s ' "bulk, no events"; run --accepted-events off | sed 's/^ *//'
printf '%-19s ' "bulk + ACCEPTED"; run | sed 's/^ *//'
