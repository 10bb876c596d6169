#!/usr/bin/env bash
# Builds the release into dist/ (or the folder given): dbcluster-linux-x64 and dbcluster-darwin-arm64, plus SHA256SUMS
# and BUILD-INFO.txt (what each artifact holds, what was skipped and why). docs/release.md explains each artifact.
#   bash scripts/release.sh [OUT_DIR]
#   DBC_RELEASE_TARGETS="linux-x64 darwin-arm64" (default) chooses the targets.
# Every binary is cross-compiled by `bun build --compile`. Native code is built only for this machine's own platform:
# its portable compute shim is embedded in its binary, and on a Mac the Swift bridge (Secure Enclave, Keychain) ships
# beside it as libdbc_macos.dylib. A binary for another platform gets no embedded shim (the script says so); it runs its
# non-compute commands and looks for libdbc.so beside itself for the rest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${1:-dist}"
read -r -a TARGETS <<< "${DBC_RELEASE_TARGETS:-linux-x64 darwin-arm64}"
say() { echo "[release] $*"; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) HOST=linux-x64 ;;
  Linux-aarch64 | Linux-arm64) HOST=linux-arm64 ;;
  Darwin-arm64) HOST=darwin-arm64 ;;
  Darwin-x86_64) HOST=darwin-x64 ;;
  *) HOST=unknown ;;
esac
[ -x node_modules/.bin/bun ] || { echo "[release] node_modules/.bin/bun missing: run 'bash scripts/setup.sh' first" >&2; exit 1; }
VERSION="$(node_modules/.bin/bun -e 'console.log(require("./package.json").version)')"

mkdir -p "$OUT_DIR"
# Only this run's artifacts end up in SHA256SUMS: clear what an earlier run left.
rm -f "$OUT_DIR"/dbcluster-* "$OUT_DIR/libdbc_macos.dylib" "$OUT_DIR/SHA256SUMS" "$OUT_DIR/BUILD-INFO.txt"
INFO=("dbcluster $VERSION release, built on $HOST ($(date -u +%Y-%m-%dT%H:%M:%SZ))")
ARTIFACTS=()
SKIPPED=0

for target in "${TARGETS[@]}"; do
  case "$target" in
    linux-x64 | linux-arm64 | darwin-arm64 | darwin-x64) ;;
    *) echo "[release] unknown target '$target' (use linux-x64, linux-arm64, darwin-arm64 or darwin-x64)" >&2; exit 2 ;;
  esac
  binary="$OUT_DIR/dbcluster-$target"
  if [ "$target" = "$HOST" ]; then
    shim="build/release/$target/libdbc.so"
    DBC_SHIM_MODE=portable DBC_SHIM_OUT="$shim" bash scripts/build-shim.sh
    say "$binary (portable compute shim embedded)"
    node_modules/.bin/bun scripts/compile-binary.ts --target "bun-$target" --shim "$shim" --outfile "$binary"
    got="$("$binary" --version)"
    [ "$got" = "$VERSION" ] || { echo "[release] $binary --version printed '$got', expected '$VERSION'" >&2; exit 1; }
    INFO+=("dbcluster-$target: Bun runtime + TypeScript + portable compute shim (embedded); checked: --version = $VERSION")
  else
    say "$binary: cross-compiling without its compute shim (C code for $target must be compiled on $target)"
    if ! log="$(node_modules/.bin/bun scripts/compile-binary.ts --target "bun-$target" --no-shim --outfile "$binary" 2>&1)"; then
      echo "$log" >&2
      say "SKIPPED $binary: bun could not cross-compile for $target (it fetches that runtime from the npm registry; see above)"
      INFO+=("dbcluster-$target: SKIPPED (bun could not fetch or build the $target runtime on this machine)")
      SKIPPED=$((SKIPPED + 1))
      continue
    fi
    say "SKIPPED the $target compute shim: this binary runs identity, coordinator, doctor and rdma-ping --transport link, and needs libdbc.so beside it (or DBCLUSTER_SHIM) to compute"
    INFO+=("dbcluster-$target: Bun runtime + TypeScript, cross-compiled; compute shim NOT embedded (build on $target, or put its libdbc.so beside the binary)")
    if [ "${target%%-*}" = darwin ]; then
      say "note: dbcluster-$target was not re-signed here (codesign is macOS-only); on the Mac run: codesign --force --sign - dbcluster-$target"
      INFO+=("dbcluster-$target: not re-signed on this machine; if macOS kills it, run: codesign --force --sign - dbcluster-$target")
    fi
    SKIPPED=$((SKIPPED + 1))
  fi
  ARTIFACTS+=("dbcluster-$target")
  if [ "${target%%-*}" = darwin ]; then
    if [ "$HOST" = "$target" ]; then
      DBC_MACOS_BRIDGE_OUT="$OUT_DIR/libdbc_macos.dylib" bash scripts/build-macos-bridge.sh
      ARTIFACTS+=(libdbc_macos.dylib)
      INFO+=("libdbc_macos.dylib: the Swift bridge (Secure Enclave identity, Keychain pins); keep it beside dbcluster-$target")
    else
      say "SKIPPED libdbc_macos.dylib: the Swift bridge builds only on a Mac; without it dbcluster-$target uses the software key file and the pin file"
      INFO+=("libdbc_macos.dylib: SKIPPED (needs swiftc on a Mac); dbcluster-$target falls back to the software identity and the pin file")
      SKIPPED=$((SKIPPED + 1))
    fi
  fi
done

if command -v sha256sum >/dev/null 2>&1; then SUM=(sha256sum); else SUM=(shasum -a 256); fi
(cd "$OUT_DIR" && "${SUM[@]}" "${ARTIFACTS[@]}" > SHA256SUMS)
printf '%s\n' "${INFO[@]}" > "$OUT_DIR/BUILD-INFO.txt"
say "wrote $OUT_DIR/SHA256SUMS (${#ARTIFACTS[@]} files) and $OUT_DIR/BUILD-INFO.txt; $SKIPPED part(s) skipped, listed above"
