#!/usr/bin/env bash
# The README's main command: installs whatever is missing, builds dist/dbcluster, then runs the main job.
# The main job is `dbcluster serve` (the demo model unless --model DIR is given); extra arguments go to it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec dist/dbcluster serve "$@"
