#!/usr/bin/env bash
# Builds dist/dbcluster: one executable with the Bun runtime, the TypeScript and the C shim embedded.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-dist/dbcluster}"
mkdir -p "$(dirname "$OUT")"
[ -f build/libdbc.so ] || bash scripts/build-shim.sh
echo "[build-binary] bun build --compile -> $OUT"
node_modules/.bin/bun scripts/compile-binary.ts --outfile "$OUT" --shim build/libdbc.so
