/* quant_avx512.h — the AVX-512 VNNI quantized linear (quant_avx512.c), chosen at run time. Not part of the ABI. */
#ifndef DBC_QUANT_AVX512_H
#define DBC_QUANT_AVX512_H
#include "internal.h"

/* 1 when this CPU has AVX-512 F/BW/VL/DQ/VNNI and DBC_NO_AVX512 is not set. */
int dbc_q_avx512_available(void);
/* 1 when the kernel handles this format: 4 or 8 bits, group 64 or 128, K a whole number of groups. */
int dbc_q_avx512_supports(int bits, int gs, int64_t K);
/* out[M, N] = x[M, K] · wᵀ (+ bias); x quantized to int8 per group. w is m's packed-weight tensor: 4-bit weights are
 * repacked into the kernel's layout once and kept with it. */
int dbc_q_avx512_linear(const qmatrix* m, const dbc_tensor* w, const float* x, int64_t M, const void* bias, int bias_dtype, float* out);
/* Makes m's kernel layout now instead of at the first call: 1 when that is a copy kept with w (4-bit), 0 when the
 * kernel reads w itself (8-bit), or an error code. */
int dbc_q_avx512_prepare(const qmatrix* m, const dbc_tensor* w);
#endif
