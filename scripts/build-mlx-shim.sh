#!/usr/bin/env bash
# Builds the mlx glue (ffi/mlx_glue.c + ffi/mlx_distributed.c + ffi/rank_watchdog.c → build/libdbc_mlx.so) against an mlx-c that is already installed.
# It never builds mlx-c itself: on macOS install it with Homebrew (brew install mlx-c); elsewhere point MLXC_PREFIX at
# an install prefix holding include/mlx/c/mlx.h and lib/libmlxc.*. Exits 0 with a notice when mlx-c is not found.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${DBC_MLX_SHIM_OUT:-build/libdbc_mlx.so}"
candidates=("${MLXC_PREFIX:-}")
if command -v brew >/dev/null 2>&1; then candidates+=("$(brew --prefix mlx-c 2>/dev/null || true)" "$(brew --prefix 2>/dev/null || true)"); fi
candidates+=(/opt/homebrew /usr/local /usr)
PREFIX=""
for p in "${candidates[@]}"; do
  if [ -n "$p" ] && [ -f "$p/include/mlx/c/mlx.h" ] && ls "$p"/lib/libmlxc.* >/dev/null 2>&1; then PREFIX="$p"; break; fi
done
if [ -z "$PREFIX" ]; then
  echo "[build-mlx-shim] mlx-c not found (set MLXC_PREFIX, or 'brew install mlx-c' on macOS); the mlx backend stays unavailable"
  exit 0
fi
mkdir -p "$(dirname "$OUT")"
LINK=(-L"$PREFIX/lib" -lmlxc -lmlx -Wl,-rpath,"$PREFIX/lib")
# Linux: DT_RPATH (not RUNPATH) so libmlxc finds libmlx in the same prefix too
[ "$(uname -s)" = Linux ] && LINK=(-Wl,--no-as-needed -Wl,--disable-new-dtags "${LINK[@]}")
echo "[build-mlx-shim] mlx-c at $PREFIX -> $OUT"
"${CC:-cc}" -O2 -std=c11 -fPIC -shared -Wall -Wno-unused-parameter -Iffi -I"$PREFIX/include" -o "$OUT" ffi/mlx_glue.c ffi/mlx_distributed.c ffi/rank_watchdog.c \
  "${LINK[@]}" -lm -lpthread
