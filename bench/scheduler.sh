#!/usr/bin/env bash
# Scheduler throughput and memory (docs/benchmarks.md, "Scheduler").
#
# 1. Throughput: the jobs topic of a fresh dev broker is pre-filled with N
#    tiny jobs over 10,000 domains and 20 sites (sites found by `domains:`
#    patterns, so no DNS), then sluice-scheduler --stages classify,shape runs
#    pinned to one core (taskset -c 0) with no rate limit; timed until
#    sluice_shape_dispatched_total reaches N, both from the process start
#    (includes the consumer-group joins) and from the first dispatch. The
#    bench itself, its metric polling and the dev broker stay off that core
#    (taskset -c 1), so the core measured is the scheduler's alone.
# 2. Memory: M jobs (default 1,000,000) for one site shaped at 1/s, with
#    scheduler.max_buffered above M so that shape holds them all; peak RSS
#    (VmHWM) once every job is buffered (sluice_shape_buffered).
#
#   bash bench/scheduler.sh [N] [M] [BIN_DIR]   (defaults: 500000, 1000000, build/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500000}
M=${2:-1000000}
BIN=${3:-build/bin}
. bench/lib.sh
WORK=$(mktemp -d /tmp/sluice-bench-sched.XXXXXX)
BROKER_PID= SCHED_PID= PERF_PID=
stop() {
  if [ -n "$SCHED_PID" ]; then
    kill "$SCHED_PID" 2>/dev/null || true
    wait "${PERF_PID:-$SCHED_PID}" 2>/dev/null || true
  fi
  if [ -n "$BROKER_PID" ]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  SCHED_PID= BROKER_PID= PERF_PID=
}
cleanup() { stop; rm -rf "$WORK"; }
trap cleanup EXIT
# Everything this script starts runs on core 1 except the scheduler itself.
[ "$(nproc)" -ge 2 ] && taskset -p -c 1 $$ > /dev/null

# config SITES_YAML SHAPING_YAML MAX_BUFFERED BOOTSTRAP METRICS_PORT
config() {
  bench_sched_config "$4" "$5"
  cat <<EOF
sites:
$1
shaping:
$2
scheduler: { max_buffered: $3 }
EOF
}
sites20() { for s in $(seq 0 19); do printf '  s%d: { domains: ["*.s%d.bench.example"] }\n' "$s" "$s"; done; }

# start_broker CONFIG: a fresh dev broker; sets BOOT
start_broker() {
  rm -f "$WORK/broker.port"
  "$BIN/sluice-devbroker" -c "$1" --port-file "$WORK/broker.port" > "$WORK/broker.out" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 400); do [ -s "$WORK/broker.port" ] && break; sleep 0.05; done
  [ -s "$WORK/broker.port" ] || { echo "devbroker did not start" >&2; cat "$WORK/broker.out" >&2; exit 1; }
  BOOT=$(head -1 "$WORK/broker.port")
}

metric() { # metric PORT NAME: sum of every series of NAME (0 when absent)
  curl -s "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

# ---- 1. throughput -------------------------------------------------------
MP=$(bench_free_port)
config "$(sites20)" "  default: { max_message_rate: unlimited }" $((N + 1000)) 127.0.0.1:1 "$MP" > "$WORK/pre.yaml"
start_broker "$WORK/pre.yaml"
config "$(sites20)" "  default: { max_message_rate: unlimited }" $((N + 1000)) "$BOOT" "$MP" > "$WORK/sluice.yaml"
t0=$(date +%s.%N)
"$BIN/sched_tool" produce -c "$WORK/sluice.yaml" --to u@bench.example --domains 10000 --sites 20 \
  --tiny --count "$N" --id j --timeout 300000 > /dev/null
t1=$(date +%s.%N)
printf 'pre-fill            %d jobs in %.1fs\n' "$N" "$(echo "$t1 - $t0" | bc)"

# Wall time on a shared machine varies with its neighbours; the CPU's own
# counts of instructions and cycles per job (perf stat, every thread of the
# scheduler, when perf can count them here) do not, and show what a change
# saved.
start=$(date +%s.%N)
count=()
# Where the CPU's counters are not exposed (some virtual machines), perf
# runs but answers "<not supported>": count nothing then.
perf stat -x, -e instructions true 2>&1 > /dev/null | grep -q '^[0-9]' &&
  count=(perf stat -x, -I 100 -o "$WORK/perf.csv" -e instructions,cycles --)
"${count[@]}" taskset -c 0 "$BIN/sluice-scheduler" -c "$WORK/sluice.yaml" --stages classify,shape \
  > "$WORK/sched.out" 2>&1 &
SCHED_PID=$!
if [ ${#count[@]} -gt 0 ]; then # $! is perf's; the scheduler is its child
  PERF_PID=$SCHED_PID SCHED_PID=
  for _ in $(seq 200); do SCHED_PID=$(pgrep -P "$PERF_PID" || true); [ -n "$SCHED_PID" ] && break; sleep 0.01; done
fi
first= deadline=$(( $(date +%s) + 600 ))
while :; do
  kill -0 "$SCHED_PID" 2>/dev/null || { echo "scheduler exited" >&2; tail "$WORK/sched.out" >&2; exit 1; }
  d=$(metric "$MP" sluice_shape_dispatched_total)
  now=$(date +%s.%N)
  [ -z "$first" ] && [ "$d" -gt 0 ] && first=$now first_n=$d
  [ "$d" -ge "$N" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { echo "timeout: $d of $N dispatched" >&2; exit 1; }
  sleep 0.05
done
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$SCHED_PID/status")
cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$SCHED_PID/stat")
bcpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$BROKER_PID/stat")
dlq=$(curl -s "http://127.0.0.1:$MP/metrics" | awk '/^sluice_scheduler_jobs_total\{.*rejected/ { s += $2 } END { printf "%d\n", s }')
printf 'classify+shape      %d jobs: %.0f jobs/s from start (%.2fs), %.0f jobs/s from first dispatch (%.2fs); VmHWM %.1f MB; rejected %s; CPU s: scheduler %s, devbroker %s\n' \
  "$N" "$(echo "$N / ($now - $start)" | bc -l)" "$(echo "$now - $start" | bc)" \
  "$(echo "($N - $first_n) / ($now - $first)" | bc -l)" "$(echo "$now - $first" | bc)" \
  "$(echo "$rss / 1024" | bc -l)" "$dlq" "$cpu" "$bcpu"
stop
if [ -s "$WORK/perf.csv" ]; then
  # 100 ms intervals from the start; those from the first dispatch to the last.
  awk -F, -v a="$(echo "$first - $start" | bc)" -v b="$(echo "$now - $start + 0.1" | bc)" -v n="$((N - first_n))" '
    $1 + 0 >= a && $1 + 0 <= b && ($4 == "instructions" || $4 == "cycles") { c[$4] += $2 }
    END { if (n > 0) printf "                    %.0f instructions, %.0f cycles per job (all threads, first dispatch to last)\n",
                            c["instructions"] / n, c["cycles"] / n }' "$WORK/perf.csv"
fi

# ---- 2. memory behind a throttle ----------------------------------------
MP=$(bench_free_port)
one='  s0: { domains: ["*.s0.bench.example"] }'
shp='  default: { max_message_rate: 1/s, burst: 1 }'
config "$one" "$shp" $((M + 100000)) 127.0.0.1:1 "$MP" > "$WORK/pre.yaml"
start_broker "$WORK/pre.yaml"
config "$one" "$shp" $((M + 100000)) "$BOOT" "$MP" > "$WORK/sluice.yaml"
"$BIN/sched_tool" produce -c "$WORK/sluice.yaml" --to u@bench.example --domains 10000 --sites 1 \
  --tiny --count "$M" --id j --timeout 300000 > /dev/null
taskset -c 0 "$BIN/sluice-scheduler" -c "$WORK/sluice.yaml" --stages classify,shape \
  > "$WORK/sched.out" 2>&1 &
SCHED_PID=$!
deadline=$(( $(date +%s) + 900 ))
while :; do
  kill -0 "$SCHED_PID" 2>/dev/null || { echo "scheduler exited" >&2; tail "$WORK/sched.out" >&2; exit 1; }
  b=$(metric "$MP" sluice_shape_buffered)
  d=$(metric "$MP" sluice_shape_dispatched_total)
  [ $((b + d)) -ge "$M" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { echo "timeout: $b of $M buffered" >&2; break; }
  sleep 0.2
done
sleep 1
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$SCHED_PID/status")
now_rss=$(awk '/VmRSS/ { print $2 }' "/proc/$SCHED_PID/status")
lost=$(metric "$MP" sluice_kafka_offsets_lost_total)
parked=$(metric "$MP" sluice_shape_parked_total)
printf 'held behind 1/s     %d buffered, %d dispatched, %d parked, %d offsets lost; VmHWM %.1f MB (%.0f bytes/job), VmRSS once held %.1f MB\n' \
  "$b" "$d" "$parked" "$lost" "$(echo "$rss / 1024" | bc -l)" "$(echo "$rss * 1024 / $M" | bc -l)" \
  "$(echo "$now_rss / 1024" | bc -l)"
