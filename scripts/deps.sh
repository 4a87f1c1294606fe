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
# The CA bundle as the machine has it before ca-certificates is (re)installed:
# a machine may trust a local CA (an egress proxy's, a company's) that is
# not among Debian's; keep_local_cas puts those back afterwards, so that
# curl, pip, Go and Java (Maven) keep reaching the registries.
bundle=/etc/ssl/certs/ca-certificates.crt
before=""
if [ -s "$bundle" ]; then before=$(mktemp); cp "$bundle" "$before"; fi
keep_local_cas() {
  [ -n "$before" ] || return 0
  local d n=0 fp
  d=$(mktemp -d)
  awk -v d="$d" '/BEGIN CERTIFICATE/{i++; f=sprintf("%s/c%04d.pem", d, i)} f{print > f} /END CERTIFICATE/{close(f); f=""}' "$before"
  local have
  have=$(awk '/BEGIN CERTIFICATE/{c=""} {c=c $0 "\n"} /END CERTIFICATE/{print c | "openssl x509 -noout -fingerprint -sha256 2>/dev/null"; close("openssl x509 -noout -fingerprint -sha256 2>/dev/null")}' "$bundle")
  for c in "$d"/*.pem; do
    fp=$(openssl x509 -noout -fingerprint -sha256 -in "$c" 2>/dev/null) || continue
    if ! grep -qxF "$fp" <<<"$have"; then
      $SUDO mkdir -p /usr/local/share/ca-certificates
      $SUDO cp "$c" "/usr/local/share/ca-certificates/kept-$(basename "$c" .pem).crt"
      n=$((n + 1))
    fi
  done
  rm -rf "$d" "$before"
  before=""
  if [ "$n" -gt 0 ]; then
    echo "deps.sh: keeping $n CA certificate(s) the machine trusted before ca-certificates was installed"
    $SUDO update-ca-certificates >/dev/null
  fi
}
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends ca-certificates openssl >/dev/null
keep_local_cas
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git ca-certificates \
  librdkafka-dev libuv1-dev libc-ares-dev libssl-dev openssl \
  protobuf-c-compiler libprotobuf-c-dev libyaml-dev libcmocka-dev \
  libidn2-dev libcsv-dev libargon2-dev libhttp-parser-dev libjansson-dev libjemalloc-dev \
  libmicrohttpd-dev libunbound-dev dns-root-data unbound ldnsutils libgmime-3.0-dev \
  python3 python3-dkim python3-yaml libcurl4-openssl-dev postfix swaks libnet-ssleay-perl libio-socket-ssl-perl dnsmasq-base procps \
  clang libclang-rt-14-dev testssl.sh >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends tmux >/dev/null  # sluice top's terminal test
# unbound is here for the DANE test, which runs a private one on its own
# port; the package's system resolver service is not wanted on a build
# machine (where there is no systemd, nothing was started).
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now unbound >/dev/null 2>&1 || true
fi
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
# The OpenAPI test (tests/integration/test_api_openapi.py) runs schemathesis
# from PyPI against a live sluice-api, from a venv of its own with the
# versions pinned in tests/integration/requirements-openapi.txt.
REQ="$(cd "$(dirname "$0")/.." && pwd)/tests/integration/requirements-openapi.txt"
VENV="$HOME/.cache/sluice-schemathesis/venv"
if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi
