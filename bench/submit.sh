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
trap bench_cleanup EXIT

bench_devbroker
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
bench_daemon sluice-submit "$SP" -c "$WORK/sluice.yaml" --hostname submit.bench
bench_postfix_accepting

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

python3 bench/rounds.py "$N" "$ROUNDS" "$WORK" sluice sluice-submit postfix "postfix smtpd"
python3 - "$N" "$WORK/sluice1.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
assert d["accepted"] == int(sys.argv[1]), d
print("  one domain        %.0f msg/s" % d["messages_per_second"])
PY
