# Shared helpers of the benchmark scripts: free ports, the head of a
# scheduler bench's config, a Postfix smtp-sink, and a private Postfix
# instance that relays to it. Sourced, not run.
# Benchmarks need root (Postfix) and the build in build/bin.

bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_wait() { # bench_wait SECONDS CMD... : poll CMD until it succeeds
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# bench_sched_config BOOTSTRAP METRICS_PORT: the start of a scheduler
# bench's config: a 64-partition broker, the metrics listener and one
# source IP in the pool "default". The caller appends its sites and limits.
bench_sched_config() {
  cat <<EOC
kafka:
  bootstrap: $1
  partitions: 64
metrics: { listen: 127.0.0.1:$2 }
pools:
  default:
    - { ip: 127.0.0.2, ehlo: mta1.bench.example }
EOC
}

# bench_sink PORT: Postfix's smtp-sink, the fastest SMTP server we know.
bench_sink() {
  smtp-sink -u postfix -R "$WORK" 127.0.0.1:"$1" 1024 >/dev/null 2>&1 &
  SINK_PID=$!
  bench_wait 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# bench_postfix PORT SINKPORT: a private Postfix listening on PORT, relaying
# everything to the sink, with its queue and log under $WORK/postfix.
bench_postfix() {
  local port=$1 sink=$2 d="$WORK/postfix"
  mkdir -p "$d/conf" "$d/queue" "$d/data"
  chown postfix "$d/data"
  sed "s|@ROOT@|$d|g" tests/data/postfix/main.cf.head > "$d/conf/main.cf"
  cat >> "$d/conf/main.cf" <<EOC
myhostname = bench.localdomain
relayhost = [127.0.0.1]:$sink
smtpd_recipient_restrictions = permit_mynetworks, reject
relay_destination_concurrency_limit = 20
smtp_destination_concurrency_limit = 20
default_process_limit = 100
maillog_file_prefixes = $WORK
smtpd_tls_security_level = none
EOC
  # Our own listener port, and no chroot (the queue is not a chroot jail).
  sed -e "s/^smtp      inet/$port      inet/" -e 's/^\([a-z0-9]*  *[a-z]*  *[-yn]  *[-yn]  *\)[-yn]/\1n/' \
    /etc/postfix/master.cf > "$d/conf/master.cf"
  postfix -c "$d/conf" set-permissions >/dev/null 2>&1 || true
  postfix -c "$d/conf" start >/dev/null 2>&1
  bench_wait 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
}

bench_postfix_stop() {
  postfix -c "$WORK/postfix/conf" stop >/dev/null 2>&1 || true
}

bench_postfix_sent() { # number of messages Postfix relayed to the sink
  grep -c 'status=sent' "$WORK/postfix/maillog" 2>/dev/null || echo 0
}

# bench_devbroker: a dev broker for the run ($BIN's), its bootstrap in
# $WORK/port, its pid added to BENCH_PIDS.
bench_devbroker() {
  "$BIN/sluice-devbroker" --port-file "$WORK/port" > "$WORK/broker.out" 2> "$WORK/broker.err" &
  BENCH_PIDS="${BENCH_PIDS:-} $!"
  bench_wait 20 test -s "$WORK/port" \
    || { echo "devbroker did not start" >&2; cat "$WORK/broker.err" >&2; exit 1; }
}

# bench_daemon NAME PORT ARGS...: start $BIN/NAME ARGS (output in
# $WORK/NAME.out, pid added to BENCH_PIDS) and wait until PORT accepts.
bench_daemon() {
  local name=$1 port=$2; shift 2
  "$BIN/$name" "$@" > "$WORK/$name.out" 2>&1 &
  BENCH_PIDS="${BENCH_PIDS:-} $!"
  bench_wait 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null \
    || { echo "$name did not start" >&2; cat "$WORK/$name.out" >&2; exit 1; }
}

# bench_postfix_accepting: a sink and a private Postfix that only queues
# what it accepts (its smtp transport deferred, so that deliveries do not
# compete for the CPU); its port in PF.
bench_postfix_accepting() {
  local sink
  sink=$(bench_free_port)
  bench_sink "$sink"
  PF=$(bench_free_port)
  bench_postfix "$PF" "$sink"
  postconf -c "$WORK/postfix/conf" -e defer_transports=smtp,relay
  postfix -c "$WORK/postfix/conf" reload >/dev/null 2>&1
}

# bench_cleanup: on exit: the private Postfix stopped, the sink and every
# process in BENCH_PIDS killed, WORK removed.
bench_cleanup() {
  bench_postfix_stop
  for p in ${BENCH_PIDS:-} ${SINK_PID:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
