#!/usr/bin/env bash
# Regenerates the DANE unit-test certificates (tests/unit/test_dane.c): a
# CA, a server certificate it signs for mx.dane.test (served with the CA
# as its chain), and an unrelated self-signed certificate. They are valid
# for a century so that the checked-in copies do not expire under the
# tests. Run from anywhere; writes next to this script.
set -euo pipefail
cd "$(dirname "$0")"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -subj "/CN=sluice DANE test CA" -days 36500 \
  -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -new "${ec[@]}" -subj "/CN=mx.dane.test" -keyout server.key -out "$t/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:mx.dane.test\nextendedKeyUsage=serverAuth\n' >"$t/ext"
openssl x509 -req -in "$t/server.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 \
  -extfile "$t/ext" -out "$t/leaf.pem" 2>/dev/null
cat "$t/leaf.pem" ca.pem >server.pem
rm -f ca.srl
openssl req -x509 "${ec[@]}" -subj "/CN=other.test" -addext subjectAltName=DNS:other.test \
  -days 36500 -keyout other.key -out other.pem 2>/dev/null
