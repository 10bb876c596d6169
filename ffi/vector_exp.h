/* vector_exp.h — e^x for 16 floats at once (AVX-512), for the softmax of attention and for SiLU. Not part of the ABI.
 * x = n·ln 2 + f with |f| ≤ ln 2 / 2; e^f by its Taylor polynomial to degree 7 (relative error < 1e-8 before rounding),
 * scaled by 2^n (scalef: +∞ past the float range); below −87.3, where expf leaves the normal floats, 0. */
#ifndef DBC_VECTOR_EXP_H
#define DBC_VECTOR_EXP_H
#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 dbc_exp16(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
  __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), _mm512_maskz_mov_ps(~tiny, x));
  f = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), f);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(~tiny, p, n);
}
#endif
#endif
