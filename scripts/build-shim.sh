#!/usr/bin/env bash
# Builds the C shim (ffi/*.c) into build/libdbc.so with the system compiler.
#   DBC_SHIM_MODE=native   (default) -march=native: fastest on this machine
#   DBC_SHIM_MODE=portable release build: x86-64-v3 (AVX2/FMA/F16C) on x86-64, armv8.2-a+fp16 on arm64
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${DBC_SHIM_MODE:-native}"
OUT="${DBC_SHIM_OUT:-build/libdbc.so}"
mkdir -p "$(dirname "$OUT")"
CC="${CC:-cc}"
ARCH="$(uname -m)"
FLAGS=(-O3 -std=c11 -fPIC -shared -Wall -Wextra -Wno-unused-parameter -fno-math-errno -pthread)
case "$MODE" in
  native)
    if [ "$(uname -s)" = Darwin ] && [ "$ARCH" = arm64 ]; then FLAGS+=(-mcpu=native); else FLAGS+=(-march=native); fi ;;
  portable)
    case "$ARCH" in
      x86_64) FLAGS+=(-march=x86-64-v3) ;;
      arm64|aarch64) FLAGS+=(-march=armv8.2-a+fp16) ;;
    esac ;;
  *) echo "[build-shim] DBC_SHIM_MODE must be native or portable, got '$MODE'" >&2; exit 2 ;;
esac
LIBS=(-lm)
case "$(uname -s)" in
  Darwin) FLAGS+=(-DDBC_ACCELERATE -DACCELERATE_NEW_LAPACK); LIBS+=(-framework Accelerate) ;;
  *)
    for inc in /usr/include/openblas /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu; do
      [ -e "$inc/cblas.h" ] && FLAGS+=(-I"$inc")
    done
    FLAGS+=(-DDBC_OPENBLAS); LIBS+=(-lopenblas -ldl) ;;
esac
SOURCES=(ffi/tensor.c ffi/threads.c ffi/cpu_ops.c ffi/matmul.c ffi/quant.c ffi/quant_avx512.c ffi/moe.c ffi/recurrent.c ffi/attention.c ffi/bench.c ffi/tp_socket.c ffi/libcrypto.c ffi/aead.c ffi/tp_channel.c ffi/link_channel.c ffi/sample.c ffi/kv_block.c)
STAMP="$OUT.stamp"
SIG="$MODE $CC ${FLAGS[*]} $(cat ffi/*.h ffi/*.c | cksum)"
if [ -f "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SIG" ]; then
  exit 0
fi
echo "[build-shim] $CC ($MODE) -> $OUT"
"$CC" "${FLAGS[@]}" -o "$OUT.tmp" "${SOURCES[@]}" "${LIBS[@]}"
mv "$OUT.tmp" "$OUT"
echo "$SIG" > "$STAMP"
