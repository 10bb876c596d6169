#!/usr/bin/env bash
# Installs whatever this machine lacks to build and run dbcluster, then builds the C shim and the single binary.
#   bash scripts/setup.sh            # everything (system packages, JS deps, native shim, dist/dbcluster)
#   DBC_SKIP_BINARY=1 ...            # skip `bun build --compile` (tests build it themselves when needed)
#   DBC_SHIM_MODE=portable ...       # portable shim (release) instead of -march=native
#   DBC_SKIP_BROWSER=1 ...           # skip the optional Chromium install (used only by the dashboard's browser test)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '\033[36m[setup]\033[0m %s\n' "$*"; }

need_cmd() { command -v "$1" >/dev/null 2>&1; }

install_system_packages() {
  case "$(uname -s)" in
    Linux)
      local missing=()
      need_cmd cc || missing+=(gcc)
      need_cmd make || missing+=(make)
      [ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || [ -e /usr/include/aarch64-linux-gnu/cblas.h ] \
        || [ -e /usr/include/openblas/cblas.h ] || missing+=(libopenblas-dev)
      need_cmd ip || missing+=(iproute2)
      if [ ${#missing[@]} -gt 0 ]; then
        if ! need_cmd apt-get; then
          echo "[setup] missing: ${missing[*]} — install them with your package manager and rerun" >&2
          exit 1
        fi
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        say "installing Debian packages: ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
      fi
      ;;
    Darwin)
      need_cmd cc || { echo "[setup] no C compiler: run 'xcode-select --install' and rerun" >&2; exit 1; }
      # Accelerate ships with macOS; mlx-c (optional, for the mlx backend) comes from Homebrew where present.
      if need_cmd brew && ! brew list mlx-c >/dev/null 2>&1; then
        say "optional: 'brew install mlx-c' enables the mlx backend (not installed; the cpu backend will be used)"
      fi
      ;;
  esac
  if ! need_cmd npm; then
    echo "[setup] npm not found: install Node.js 20+ (it brings npm) and rerun" >&2
    exit 1
  fi
}

install_js_dependencies() {
  if [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "installing JS dependencies (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

# Optional: headless Chromium for test/api/dashboard-browser.test.ts (driven by playwright-core, which downloads no
# browser of its own). Installed only where apt-get exists and we are root; elsewhere that test says why it skipped.
install_test_browser() {
  # only for the tests (scripts/test.sh sets DBC_TEST_BROWSER=1): serving needs no browser
  [ "${DBC_TEST_BROWSER:-0}" = 1 ] || return 0
  [ "${DBC_SKIP_BROWSER:-0}" = 1 ] && return 0
  [ "$(uname -s)" = Linux ] || return 0
  if need_cmd chromium || need_cmd chromium-browser; then return 0; fi
  if ! need_cmd apt-get || [ "$(id -u)" != 0 ]; then
    say "optional: Chromium not installed (needs root and apt-get: apt-get install chromium); the dashboard browser test will be skipped"
    return 0
  fi
  say "optional: installing Debian's chromium for the dashboard browser test (DBC_SKIP_BROWSER=1 skips this)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    say "optional: installing chromium failed; the dashboard browser test will be skipped"
  fi
}

install_system_packages
install_js_dependencies
install_test_browser
bash scripts/build-shim.sh
bash scripts/build-mlx-shim.sh # only where mlx-c is installed; says so otherwise
bash scripts/build-macos-bridge.sh # macOS only (Secure Enclave, Keychain); says it skipped elsewhere
if [ "${DBC_SKIP_BINARY:-0}" != 1 ]; then
  bash scripts/build-binary.sh
fi
