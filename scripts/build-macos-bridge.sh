#!/usr/bin/env bash
# Builds the macOS bridge (ffi/macos/*.swift: Secure Enclave identity and Keychain pins) into build/libdbc_macos.dylib.
# macOS only, with swiftc from the Xcode command line tools; anywhere else it says it skipped and exits 0, and
# dbcluster uses the software key file and the 0600 pin file instead (docs/trust.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${DBC_MACOS_BRIDGE_OUT:-build/libdbc_macos.dylib}"
if [ "$(uname -s)" != Darwin ]; then
  echo "[build-macos-bridge] skipped: the Secure Enclave / Keychain bridge builds only on macOS (this is $(uname -s))"
  exit 0
fi
SWIFTC="${SWIFTC:-$(xcrun --find swiftc 2>/dev/null || command -v swiftc || true)}"
if [ -z "$SWIFTC" ]; then
  echo "[build-macos-bridge] swiftc not found: run 'xcode-select --install' and rerun" >&2
  exit 1
fi
SOURCES=(ffi/macos/bridge.swift ffi/macos/secure_enclave.swift ffi/macos/keychain.swift)
STAMP="$OUT.stamp"
SIG="$("$SWIFTC" --version 2>&1 | head -1) $(cat ffi/macos/*.swift ffi/macos/*.h | cksum)"
if [ -f "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SIG" ]; then
  exit 0
fi
mkdir -p "$(dirname "$OUT")"
echo "[build-macos-bridge] swiftc -> $OUT"
"$SWIFTC" -emit-library -O -swift-version 5 -module-name DbcMacosBridge \
  -framework CryptoKit -framework Security -o "$OUT.tmp" "${SOURCES[@]}"
mv "$OUT.tmp" "$OUT"
echo "$SIG" > "$STAMP"
