#!/usr/bin/env bash
# End-to-end throughput: N messages through devbroker -> scheduler -> sender
# -> Postfix's smtp-sink, and in the same run the same N messages through a
# local Postfix relaying to the same sink. Prints messages per second for
# both and the ratio sluice / Postfix. sluice runs twice, with the delivery
# ledger (the default) and without it (sender.ledger: false), to show what
# the ledger costs. Run as root from the project root after scripts/build.sh:
#   bash bench/e2e.sh [--kafka real] [N]
# --kafka real: the same N messages also through sluice on a real Apache
# Kafka (scripts/kafka.sh), a 1-node and a 3-node cluster (RF 3,
# min.insync.replicas 2), with `sluice dev --kafka`.
set -euo pipefail
cd "$(dirname "$0")/.."
REAL=
if [ "${1:-}" = --kafka ]; then
  case "${2:-}" in
    real) REAL=1 ;;
    dev) ;;
    *) echo "usage: bench/e2e.sh [--kafka dev|real] [N]" >&2; exit 2 ;;
  esac
  shift 2
fi
N=${1:-20000}
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$WORK"
. bench/lib.sh
cleanup() {
  bench_postfix_stop
  kill "${SINK_PID:-0}" 2>/dev/null || true
  for k in "$WORK"/kafka*; do
    [ -d "$k" ] && bash scripts/kafka.sh stop --dir "$k" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

SINK=$(bench_free_port)
bench_sink "$SINK"

# sluice: the whole pipeline, routed to the sink; the configuration is the
# one `sluice dev` writes, with and without the delivery ledger.
sluice_cfg() {
  cat > "$1" <<YAML
kafka:
  bootstrap: 127.0.0.1:1
  session_timeout_ms: 6000
  heartbeat_interval_ms: 1000
  commit_interval_ms: 500
routes:
  "*": 127.0.0.1:$SINK
pools:
  default:
    - { ip: 127.0.0.1, ehlo: localhost }
shaping:
  default: { max_message_rate: 100000/s, max_connections: 20, max_messages_per_connection: 1000 }
retry: { delays: [1s, 5s, 30s], expiry: 1h }
sender:
  drain_timeout: 3s
  max_inflight_per_destination: 5000
  ledger: $2
YAML
}
sluice_run() { # NAME LEDGER -> messages per second
  sluice_cfg "$WORK/$1.yaml" "$2"
  build/bin/sluice dev -c "$WORK/$1.yaml" --demo "$N" --json --dir "$WORK/$1" > "$WORK/$1.json"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["messages_per_second"]); assert d["delivered"]==d["messages"], d' "$WORK/$1.json"
}
SLUICE_RATE=$(sluice_run ledger true)
NOLEDGER_RATE=$(sluice_run noledger false)

# sluice on real Kafka, 1 node then 3 nodes, each its own cluster.
K1_RATE=0 K3_RATE=0
if [ -n "$REAL" ]; then
  for nodes in 1 3; do
    B=$(bash scripts/kafka.sh start --nodes "$nodes" --dir "$WORK/kafka$nodes" | tail -n 1)
    build/bin/sluice dev --kafka "$B" --demo "$N" --route 127.0.0.1:"$SINK" --json \
      --dir "$WORK/dev-kafka$nodes" > "$WORK/kafka$nodes.json"
    bash scripts/kafka.sh stop --dir "$WORK/kafka$nodes" >/dev/null
    r=$(rate "$WORK/kafka$nodes.json")
    if [ "$nodes" = 1 ]; then K1_RATE=$r; else K3_RATE=$r; fi
  done
fi

# Postfix: smtp-source injects N messages (20 sessions, 100 messages each
# connection), Postfix queues and relays them to the same sink.
PF=$(bench_free_port)
bench_postfix "$PF" "$SINK"
start=$(date +%s.%N)
smtp-source -s 20 -m "$N" -l 1024 -f demo@sluice.example -t user@example.com 127.0.0.1:"$PF"
bench_wait 3600 bash -c "[ \$(grep -c 'status=sent' '$WORK/postfix/maillog' 2>/dev/null || echo 0) -ge $N ]"
end=$(date +%s.%N)
PF_RATE=$(python3 -c "print(round($N/($end-$start),1))")

python3 - "$N" "$SLUICE_RATE" "$PF_RATE" "$K1_RATE" "$K3_RATE" "$NOLEDGER_RATE" <<'PY'
import sys
n, s, p, k1, k3, nl = int(sys.argv[1]), *(float(x) for x in sys.argv[2:7])
print(f"messages            {n}")
print(f"sluice end-to-end   {s:.0f} msg/s")
print(f"  without ledger    {nl:.0f} msg/s (the ledger costs {100 * (1 - s / nl):.1f}%)")
if k1:
    print(f"sluice, Kafka 1 node  {k1:.0f} msg/s")
    print(f"sluice, Kafka 3 nodes {k3:.0f} msg/s")
print(f"postfix relay       {p:.0f} msg/s")
print(f"ratio sluice/postfix {s/p:.2f}")
PY
