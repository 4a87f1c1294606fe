#!/usr/bin/env bash
# Installs every Debian bookworm package sluice needs to build, test and
# benchmark. Run as root (or with sudo available). Idempotent.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks where it is when installed; sluice only needs its smtp-sink,
# smtp-source and a local relay for benchmarks.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string sluice.localdomain" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git ca-certificates \
  librdkafka-dev libuv1-dev libc-ares-dev libssl-dev openssl \
  protobuf-c-compiler libprotobuf-c-dev libyaml-dev libcmocka-dev \
  libidn2-dev libcsv-dev libargon2-dev libhttp-parser-dev libjansson-dev libjemalloc-dev \
  libmicrohttpd-dev \
  python3 python3-dkim python3-yaml libcurl4-openssl-dev postfix swaks libnet-ssleay-perl libio-socket-ssl-perl dnsmasq-base procps \
  clang libclang-rt-14-dev testssl.sh >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends tmux >/dev/null  # sluice top's terminal test
# The real-Kafka test tier (scripts/kafka.sh): Apache Kafka runs on Java 17
# and is fetched from Maven Central with Maven.
$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null
# The example producers and analytics consumer (examples/build.sh, the
# kafka/test_examples test): protoc generates their sluice.v1 code, a
# Python venv takes confluent-kafka and protobuf from PyPI, Maven compiles
# the Java one (a JDK, not only the JRE), and Go builds the Go one (bookworm's
# Go 1.19 suffices; a newer Go on the PATH is used first).
$SUDO apt-get install -y -qq --no-install-recommends protobuf-compiler python3-venv \
  openjdk-17-jdk-headless golang-go >/dev/null
