#!/usr/bin/env bash
# Submission throughput: sluice-submit (STARTTLS + AUTH PLAIN, every 250
# backed by a Kafka ack from the dev broker) against Postfix's smtpd
# (plain text, no AUTH, relaying for mynetworks), both accepting N 1 KB
# messages over 16 sessions in the same run, driven by the same client
# (bench/submit_load.py; smtp-source cannot do TLS or AUTH). Postfix is
# measured on acceptance only: its smtp transport is deferred so that the
# queue manager's deliveries do not compete for the CPU.
# Run as root from the project root after building:
#   bash bench/submit.sh [N] [BIN_DIR]      (defaults: 20000, build/bin)
# ROUNDS=R alternates R runs of each server (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
BIN=${2:-build/bin}
SESSIONS=16
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/sluice-bench-submit.XXXXXX)
chmod 755 "$WORK"
. bench/lib.sh
BROKER_PID= SUBMIT_PID=
cleanup() {
  bench_postfix_stop
  for p in $SUBMIT_PID $BROKER_PID ${SINK_PID:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/sluice-devbroker" --port-file "$WORK/port" > "$WORK/broker.out" 2> "$WORK/broker.err" &
BROKER_PID=$!
bench_wait 20 test -s "$WORK/port" || { echo "devbroker did not start" >&2; exit 1; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -days 2 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
echo "bench:$(printf 'bench-pw\n' | "$BIN/sluice-submit" --hash-password) domains=example.net" \
  > "$WORK/users"
SP=$(bench_free_port)
cat > "$WORK/sluice.yaml" <<EOC
kafka:
  bootstrap: $(head -1 "$WORK/port")
submit:
  listen: ["127.0.0.1:$SP starttls"]
  cert: $WORK/cert.pem
  key: $WORK/key.pem
  users: $WORK/users
EOC
"$BIN/sluice-submit" -c "$WORK/sluice.yaml" --hostname submit.bench > "$WORK/submit.out" 2>&1 &
SUBMIT_PID=$!
bench_wait 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SP" 2>/dev/null \
  || { echo "sluice-submit did not start" >&2; cat "$WORK/submit.out" >&2; exit 1; }

SINK=$(bench_free_port)
bench_sink "$SINK"
PF=$(bench_free_port)
bench_postfix "$PF" "$SINK"
postconf -c "$WORK/postfix/conf" -e defer_transports=smtp,relay
postfix -c "$WORK/postfix/conf" reload >/dev/null 2>&1

# Both servers stay up; the runs alternate, ROUNDS of each, so that a
# burst of load from a neighbour on a shared machine hits both alike.
# The figure is the median round of each and their ratio.
echo "messages            $N x 1 KB, $SESSIONS sessions, recipients over 1000 domains, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  python3 bench/submit_load.py --port "$SP" --starttls --user bench --password bench-pw \
    -n "$N" -s "$SESSIONS" --size 1024 --from bench@example.net --to 'user{n}@d{d}.example' \
    > "$WORK/sluice.$r.json"
  python3 bench/submit_load.py --port "$PF" -n "$N" -s "$SESSIONS" --size 1024 \
    --from bench@example.net --to 'user{n}@d{d}.example' > "$WORK/postfix.$r.json"
done
# Every recipient in one domain: every job then goes to one partition
# (the key is the domain), the worst case for the producer.
python3 bench/submit_load.py --port "$SP" --starttls --user bench --password bench-pw \
  -n "$N" -s "$SESSIONS" --size 1024 --from bench@example.net --to 'user{n}@example.com' \
  > "$WORK/sluice1.json"

python3 - "$N" "$ROUNDS" "$WORK" <<'PY'
import json, statistics, sys
n, rounds, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def load(f):
    d = json.load(open(f))
    assert d["accepted"] == n, (f, d)
    return d
s = [load(f"{work}/sluice.{r}.json") for r in range(1, rounds + 1)]
p = [load(f"{work}/postfix.{r}.json") for r in range(1, rounds + 1)]
s1 = load(f"{work}/sluice1.json")
for r in range(rounds):
    print(f"round {r + 1}: sluice-submit {s[r]['messages_per_second']:.0f} msg/s"
          f" (set-up {s[r]['setup_seconds']:.2f}s), postfix smtpd {p[r]['messages_per_second']:.0f} msg/s")
ms = statistics.median(d["messages_per_second"] for d in s)
mp = statistics.median(d["messages_per_second"] for d in p)
print(f"sluice-submit       {ms:.0f} msg/s (median)")
print(f"  one domain        {s1['messages_per_second']:.0f} msg/s")
print(f"postfix smtpd       {mp:.0f} msg/s (median)")
print(f"ratio submit/postfix {ms / mp:.2f}")
PY
