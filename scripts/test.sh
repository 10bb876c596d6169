#!/usr/bin/env bash
# Installs whatever is missing, then runs every test with bun test. Extra arguments go to bun test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DBC_SKIP_BINARY=1 DBC_TEST_BROWSER=1 bash scripts/setup.sh
exec node_modules/.bin/bun test --timeout 120000 "$@"
