#!/usr/bin/env bash
# Scheduler memory after traffic to many sites, and after they went quiet
# (docs/benchmarks.md, "Scheduler: idle state").
#
# A fresh dev broker; sluice-scheduler --stages classify,shape with one
# source IP, no rate limit and scheduler.idle_state_timeout IDLE. Every
# recipient domain matches the route "*.bench.example", so it is its own
# site (as a domain with its own MX is) without DNS. Measured:
#   baseline  VmRSS once the scheduler is ready, before any job;
#   traffic   VmRSS and VmHWM once N jobs to N distinct domains are
#             dispatched (N sites and N (site, IP) pairs held);
#   idle      VmRSS once shape has freed every site (sluice_shape_sites 0)
#             and the allocator has had IDLE again to give pages back.
#
#   bash bench/scheduler_idle.sh [N] [IDLE] [BIN_DIR]   (defaults: 100000, 30s, build/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
IDLE=${2:-30s}
BIN=${3:-build/bin}
. bench/lib.sh
WORK=$(mktemp -d /tmp/sluice-bench-idle.XXXXXX)
BROKER_PID= SCHED_PID=
cleanup() {
  [ -n "$SCHED_PID" ] && { kill "$SCHED_PID" 2>/dev/null || true; wait "$SCHED_PID" 2>/dev/null || true; }
  [ -n "$BROKER_PID" ] && { kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
secs() { case "$1" in *ms) echo $(( ${1%ms} / 1000 ));; *s) echo "${1%s}";; *m) echo $(( ${1%m} * 60 ));; *) echo "$1";; esac; }

config() { # config BOOTSTRAP METRICS_PORT
  bench_sched_config "$1" "$2"
  cat <<EOC
routes:
  "*.bench.example": 127.0.0.1:2525
shaping:
  default: { max_message_rate: unlimited }
scheduler: { max_buffered: $((N + 1000)), idle_state_timeout: $IDLE }
EOC
}

metric() { # metric NAME: sum of every series of NAME (0 when absent)
  curl -s "http://127.0.0.1:$MP/metrics" 2>/dev/null |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}
status() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SCHED_PID/status"; }
mb() { echo "scale=1; $1 / 1024" | bc; }

MP=$(bench_free_port)
config 127.0.0.1:1 "$MP" > "$WORK/pre.yaml"
rm -f "$WORK/broker.port"
"$BIN/sluice-devbroker" -c "$WORK/pre.yaml" --port-file "$WORK/broker.port" > "$WORK/broker.out" 2>&1 &
BROKER_PID=$!
for _ in $(seq 400); do [ -s "$WORK/broker.port" ] && break; sleep 0.05; done
[ -s "$WORK/broker.port" ] || { echo "devbroker did not start" >&2; cat "$WORK/broker.out" >&2; exit 1; }
config "$(head -1 "$WORK/broker.port")" "$MP" > "$WORK/sluice.yaml"

"$BIN/sluice-scheduler" -c "$WORK/sluice.yaml" --stages classify,shape > "$WORK/sched.out" 2>&1 &
SCHED_PID=$!
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$MP/readyz" > /dev/null 2>&1 && break
  kill -0 "$SCHED_PID" 2>/dev/null || { echo "scheduler exited" >&2; tail "$WORK/sched.out" >&2; exit 1; }
  sleep 0.1
done
sleep 2
base=$(status VmRSS)
printf 'baseline            VmRSS %s MB\n' "$(mb "$base")"

t0=$(date +%s)
"$BIN/sched_tool" produce -c "$WORK/sluice.yaml" --to u@bench.example --domains "$N" --sites 1 \
  --tiny --count "$N" --id j --timeout 300000 > /dev/null
deadline=$(( $(date +%s) + 900 ))
while :; do
  kill -0 "$SCHED_PID" 2>/dev/null || { echo "scheduler exited" >&2; tail "$WORK/sched.out" >&2; exit 1; }
  d=$(metric sluice_shape_dispatched_total)
  [ "$d" -ge "$N" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { echo "timeout: $d of $N dispatched" >&2; exit 1; }
  sleep 1
done
t1=$(date +%s)
sites=$(metric sluice_shape_sites) pairs=$(metric sluice_shape_pairs)
busy=$(status VmRSS) hwm=$(status VmHWM)
printf 'traffic             %d jobs to %d domains in %ds: %d sites, %d pairs held; VmRSS %s MB, VmHWM %s MB\n' \
  "$N" "$N" $((t1 - t0)) "$sites" "$pairs" "$(mb "$busy")" "$(mb "$hwm")"

while [ "$(metric sluice_shape_sites)" -gt 0 ]; do
  kill -0 "$SCHED_PID" 2>/dev/null || { echo "scheduler exited" >&2; exit 1; }
  [ "$(date +%s)" -lt "$deadline" ] || { echo "timeout: sites not freed" >&2; exit 1; }
  sleep 1
done
t2=$(date +%s)
sleep "$(secs "$IDLE")"
idle=$(status VmRSS)
freed=$(metric sluice_shape_idle_freed_total)
printf 'idle                every site freed %ds after the last dispatch (%d sites and pairs); %ss later VmRSS %s MB (baseline + %s MB)\n' \
  $((t2 - t1)) "$freed" "$(secs "$IDLE")" "$(mb "$idle")" "$(mb $((idle - base)))"
