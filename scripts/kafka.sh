#!/usr/bin/env bash
# A local Apache Kafka cluster (4.x, KRaft mode, OpenJDK 17) for the
# real-Kafka test tier and for development. See docs/kafka.md.
#
#   scripts/kafka.sh start [--nodes 1|3] [--dir DIR]   # prints the bootstrap list
#   scripts/kafka.sh status [--dir DIR]
#   scripts/kafka.sh stop [--dir DIR]
#   scripts/kafka.sh start-node ID [--dir DIR]         # bring a stopped node back
#   scripts/kafka.sh tool NAME [ARGS...]               # a Kafka tool, see below
#   scripts/kafka.sh fetch                             # only fetch the jars
#
# The broker and its runtime dependencies come from Maven Central through
# Maven (scripts/kafka/pom.xml pins the version) and are copied once into
# ~/.cache/sluice-kafka/VERSION/libs. Each node is a combined broker and
# controller on loopback, with its configuration, data, log (server.log)
# and pid file under DIR/nodeID. With 3 nodes topics default to
# replication factor 3 and min.insync.replicas 2. DIR defaults to
# $SLUICE_KAFKA_DIR, else $TMPDIR/sluice-kafka. Heaps are small (256 MB)
# and the JIT is limited to C1, so that three nodes start in seconds on
# two cores; KAFKA_HEAP_OPTS / KAFKA_JVM_OPTS override.
#
# tool NAME runs a class of the Kafka distribution with the same classpath:
# topics, configs, leader-election, reassign, metadata-quorum, cluster,
# storage, or a fully qualified class name.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
POM="$HERE/kafka/pom.xml"
META="$HERE/kafka/kafka_meta.py"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${SLUICE_KAFKA_CACHE:-$HOME/.cache/sluice-kafka}/$VERSION"
LIBS="$CACHE/libs"
DIR="${SLUICE_KAFKA_DIR:-${TMPDIR:-/tmp}/sluice-kafka}"
NODES=1
HEAP="${KAFKA_HEAP_OPTS:--Xms64m -Xmx256m}"
JVM="${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Djava.awt.headless=true}"

die() { echo "kafka.sh: $*" >&2; exit 1; }
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka $VERSION: apt-get install maven"
  echo "kafka.sh: fetching Apache Kafka $VERSION and its dependencies with Maven" >&2
  rm -rf "$LIBS.tmp"
  mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS.tmp" >&2 || die "Maven could not fetch Kafka $VERSION"
  rm -rf "$LIBS"
  mv "$LIBS.tmp" "$LIBS"
  touch "$LIBS/.complete"
}

java_run() {  # java_run CLASS ARGS... (foreground)
  java $HEAP $JVM -Dlog4j2.configurationFile="$DIR/log4j2-tools.properties" \
       -cp "$LIBS/*" "$@"
}

free_ports() {  # free_ports N: N distinct free loopback ports
  # Below the kernel's ephemeral range, so that no outgoing connection (the
  # nodes' own, or anything else on the machine) takes a port between now
  # and the moment the node binds it; a clash is still retried by start.
  python3 - "$1" <<'EOF'
import random, socket, sys
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_lo = int(f.read().split()[0])
except OSError:
    eph_lo = 32768
lo, hi = (10000, eph_lo) if eph_lo > 12000 else (eph_lo, 65535)
ports = []
while len(ports) < int(sys.argv[1]):
    p = random.randrange(lo, hi)
    if p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        ports.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(" ".join(map(str, ports)))
EOF
}

pid_of() { cat "$DIR/node$1/pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

write_logging() {
  # Brokers log to DIR/nodeID/server.log (kafka.logs.dir); tools only warn.
  cat > "$DIR/log4j2.properties" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = org.apache.kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
  cat > "$DIR/log4j2-tools.properties" <<'EOF'
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
EOF
}

write_config() {  # write_config ID: DIR/nodeID/server.properties from DIR/cluster.env
  local id=$1 i rf isr voters=""
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
  for i in $(seq 1 "$NODES"); do
    local cp="CONTROLLER_PORT_$i"
    voters="${voters:+$voters,}$i@127.0.0.1:${!cp}"
  done
  rf=$(( NODES < 3 ? NODES : 3 ))
  isr=$(( NODES < 3 ? 1 : 2 ))
  local bp="BROKER_PORT_$id" cp="CONTROLLER_PORT_$id"
  mkdir -p "$DIR/node$id/data"
  cat > "$DIR/node$id/server.properties" <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${!bp},CONTROLLER://127.0.0.1:${!cp}
advertised.listeners=PLAINTEXT://127.0.0.1:${!bp}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/node$id/data
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
# Two cores: few threads, a small cleaner buffer.
num.network.threads=2
num.io.threads=2
background.threads=2
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
# A killed node is fenced (its leaders move) within a few seconds.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
EOF
}

start_node() {  # start_node ID: launch one node in the background
  local id=$1
  alive "$id" && return 0
  [ -f "$DIR/node$id/server.properties" ] || die "node $id is not part of the cluster in $DIR"
  # setsid: the node outlives this script and gets no terminal signals.
  setsid java $HEAP $JVM -Dkafka.logs.dir="$DIR/node$id" \
       -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
       -cp "$LIBS/*" kafka.Kafka "$DIR/node$id/server.properties" \
       > "$DIR/node$id/stdout.log" 2>&1 < /dev/null &
  echo $! > "$DIR/node$id/pid"
}

wait_ready() {  # wait_ready SECONDS: every node alive and in the metadata
  local deadline=$(( $(date +%s) + $1 )) want have i
  want="$(seq -s ' ' 1 "$NODES")"
  while :; do
    for i in $(seq 1 "$NODES"); do
      alive "$i" || die "node $i exited; see $DIR/node$i/server.log and stdout.log:
$(tail -n 20 "$DIR/node$i/stdout.log" 2>/dev/null)"
    done
    have="$(python3 "$META" brokers "$BOOTSTRAP" 2>/dev/null || true)"
    [ "$have" = "$want" ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || die "not ready after $1 s (brokers in the metadata: '${have}')"
    sleep 0.2
  done
}

start_once() {  # start_once: one attempt; on failure its nodes are stopped
  local ports i uuid
  rm -rf "$DIR"
  mkdir -p "$DIR"
  write_logging
  ports=($(free_ports $(( 2 * NODES ))))
  {
    echo "NODES=$NODES"
    echo "VERSION=$VERSION"
    local bs=""
    for i in $(seq 1 "$NODES"); do
      echo "BROKER_PORT_$i=${ports[$(( 2 * i - 2 ))]}"
      echo "CONTROLLER_PORT_$i=${ports[$(( 2 * i - 1 ))]}"
      bs="${bs:+$bs,}127.0.0.1:${ports[$(( 2 * i - 2 ))]}"
    done
    echo "BOOTSTRAP=$bs"
  } > "$DIR/cluster.env"
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
  uuid="$(java_run kafka.tools.StorageTool random-uuid)"
  for i in $(seq 1 "$NODES"); do
    write_config "$i"
    java_run kafka.tools.StorageTool format -t "$uuid" -c "$DIR/node$i/server.properties" \
      > "$DIR/node$i/format.log" 2>&1 &
  done
  wait || die "formatting the storage failed: $(cat "$DIR"/node*/format.log)"
  for i in $(seq 1 "$NODES"); do start_node "$i"; done
  ( wait_ready "${SLUICE_KAFKA_START_TIMEOUT:-120}" ) && return 0
  SLUICE_KAFKA_STOP_TIMEOUT=0 cmd_stop >/dev/null
  return 1
}

cmd_start() {
  fetch
  command -v java >/dev/null || die "java is needed: apt-get install openjdk-17-jre-headless"
  case "$NODES" in 1|3) ;; *) die "--nodes must be 1 or 3" ;; esac
  if [ -f "$DIR/cluster.env" ]; then
    local i
    for i in 1 2 3; do alive "$i" && die "a cluster already runs in $DIR (scripts/kafka.sh stop --dir $DIR)"; done
  elif [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
    # start wipes DIR: never a directory it did not make.
    die "$DIR is not empty and holds no cluster of kafka.sh; choose another --dir"
  fi
  local attempt
  for attempt in 1 2 3; do
    if start_once; then
      echo "$BOOTSTRAP" > "$DIR/bootstrap"
      echo "$BOOTSTRAP"
      return 0
    fi
    # A port taken between choosing it and binding it is worth another
    # try on other ports; anything else is reported as it is.
    grep -qs "Address already in use" "$DIR"/node*/server.log "$DIR"/node*/stdout.log || break
    echo "kafka.sh: a port was taken meanwhile (attempt $attempt); starting again on other ports" >&2
  done
  die "the cluster did not start; logs in $DIR/node*/server.log"
}

load_env() {
  [ -f "$DIR/cluster.env" ] || die "no cluster in $DIR (scripts/kafka.sh start)"
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
}

cmd_status() {
  load_env
  local i up=0
  echo "bootstrap $BOOTSTRAP (Kafka $VERSION, $NODES nodes, $DIR)"
  for i in $(seq 1 "$NODES"); do
    local bp="BROKER_PORT_$i"
    if alive "$i"; then up=$((up + 1)); echo "node $i pid $(pid_of "$i") port ${!bp} running"
    else echo "node $i port ${!bp} stopped"; fi
  done
  echo "brokers in the metadata: $(python3 "$META" brokers "$BOOTSTRAP" 2>/dev/null || echo none)"
  [ "$up" = "$NODES" ]
}

cmd_stop() {
  [ -f "$DIR/cluster.env" ] || return 0
  load_env
  local i p deadline
  for i in $(seq 1 "$NODES"); do
    p="$(pid_of "$i")"
    if [ -n "$p" ]; then
      kill -CONT "$p" 2>/dev/null || true
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  # A node shutting down cleanly hands its leaders over; the last ones wait
  # for a quorum that is gone, so give them a while and then kill them.
  deadline=$(( $(date +%s) + ${SLUICE_KAFKA_STOP_TIMEOUT:-20} ))
  for i in $(seq 1 "$NODES"); do
    while alive "$i" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    alive "$i" && kill -KILL "$(pid_of "$i")" 2>/dev/null || true
    rm -f "$DIR/node$i/pid"
  done
  echo "stopped the cluster in $DIR"
}

cmd_tool() {
  [ $# -ge 1 ] || usage
  local cls
  case "$1" in
    topics) cls=org.apache.kafka.tools.TopicCommand ;;
    configs) cls=kafka.admin.ConfigCommand ;;
    leader-election) cls=org.apache.kafka.tools.LeaderElectionCommand ;;
    reassign) cls=org.apache.kafka.tools.reassign.ReassignPartitionsCommand ;;
    metadata-quorum) cls=org.apache.kafka.tools.MetadataQuorumCommand ;;
    cluster) cls=org.apache.kafka.tools.ClusterTool ;;
    storage) cls=kafka.tools.StorageTool ;;
    *.*) cls=$1 ;;
    *) die "unknown tool '$1'" ;;
  esac
  shift
  fetch
  mkdir -p "$DIR"
  [ -f "$DIR/log4j2-tools.properties" ] || write_logging
  java_run "$cls" "$@"
}

[ $# -ge 1 ] || usage
cmd=$1; shift
node=""
if [ "$cmd" = start-node ]; then
  [ $# -ge 1 ] || usage
  node=$1; shift
fi
if [ "$cmd" != tool ]; then
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) NODES=${2:?}; shift 2 ;;
      --dir) DIR=${2:?}; shift 2 ;;
      -h|--help) usage ;;
      *) die "unknown argument '$1'" ;;
    esac
  done
fi
case "$cmd" in
  start) cmd_start ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  start-node) load_env; start_node "$node"; wait_ready 60; echo "node $node up" ;;
  tool) cmd_tool "$@" ;;
  fetch) fetch ;;
  -h|--help|help) usage ;;
  *) die "unknown command '$cmd'" ;;
esac
