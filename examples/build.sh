#!/usr/bin/env bash
# Builds the example producers and the analytics consumer into OUT
# (default build/examples), generating the sluice.v1 code from proto/ on
# the way; nothing generated is kept in the source tree. Needs protoc
# (Debian protobuf-compiler), python3 with venv, Maven with Java 17, and
# Go 1.19 or later (scripts/deps.sh installs them). Downloads go to the
# usual caches: the Python venv to ~/.cache/sluice-examples, Maven's jars
# to ~/.m2, Go modules to Go's module cache.
#
#   examples/build.sh [OUT]
#
# Afterwards:
#   OUT/venv/bin/python examples/python/producer.py ...   (PYTHONPATH=OUT/python-gen)
#   java -cp "OUT/java/target/classes:$(cat OUT/java/target/classpath.txt)" net.example.sluice.Producer ...
#   OUT/go/producer ...
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PROTO="$HERE/../proto"
OUT="$(mkdir -p "${1:-$HERE/../build/examples}" && cd "${1:-$HERE/../build/examples}" && pwd)"
CACHE="${SLUICE_EXAMPLES_CACHE:-$HOME/.cache/sluice-examples}"
command -v protoc >/dev/null || { echo "examples/build.sh: protoc is needed: apt-get install protobuf-compiler" >&2; exit 1; }

# Python: a venv with confluent-kafka, protobuf and idna from PyPI, and the
# generated sluice.v1 modules.
VENV="$CACHE/venv"
REQ="$HERE/python/requirements.txt"
if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi
ln -sfn "$VENV" "$OUT/venv"
rm -rf "$OUT/python-gen"
mkdir -p "$OUT/python-gen"
protoc -I "$PROTO" --python_out="$OUT/python-gen" "$PROTO"/sluice/v1/*.proto
touch "$OUT/python-gen/sluice/__init__.py" "$OUT/python-gen/sluice/v1/__init__.py"

# Java: Maven generates the classes with protoc and compiles.
rm -rf "$OUT/java/src"
mkdir -p "$OUT/java"
cp -r "$HERE/java/pom.xml" "$HERE/java/src" "$OUT/java/"
mvn -q -B -f "$OUT/java/pom.xml" -Dsluice.proto="$PROTO" package

# Go: protoc-gen-go from the module proxy at the version go.mod names.
rm -rf "$OUT/go"
mkdir -p "$OUT/go"
cp "$HERE/go/go.mod" "$HERE/go/go.sum" "$HERE/go/main.go" "$OUT/go/"
PGV="$(sed -n 's:^\tgoogle.golang.org/protobuf \(v[^ ]*\).*:\1:p' "$HERE/go/go.mod")"
export GOTOOLCHAIN=local
if [ ! -x "$CACHE/bin/protoc-gen-go-$PGV" ]; then
  mkdir -p "$CACHE/bin"
  GOBIN="$CACHE/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PGV"
  mv "$CACHE/bin/protoc-gen-go" "$CACHE/bin/protoc-gen-go-$PGV"
fi
ln -sfn "protoc-gen-go-$PGV" "$CACHE/bin/protoc-gen-go"
MAPS=()
for f in "$PROTO"/sluice/v1/*.proto; do
  MAPS+=("--go_opt=M${f#"$PROTO"/}=sluiceexample/sluicepb")
done
PATH="$CACHE/bin:$PATH" protoc -I "$PROTO" --go_out="$OUT/go" --go_opt=module=sluiceexample \
  "${MAPS[@]}" "$PROTO"/sluice/v1/*.proto
(cd "$OUT/go" && go build -o producer .)
echo "examples built in $OUT"
