/* sample.c — sample.h: the allowed id with the best logit, and the allowed candidates above a floor, read straight from
 * a row of logits and its packed mask. AVX-512 or AVX2 where the build targets them (16 or 8 ids per compare, a mask
 * word's bits as lane masks), plain C otherwise; every path gives the same ids. */
#include <math.h>
#include "internal.h"
#include "sample.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#define SAMPLE_AVX512 1
#elif defined(DBC_AVX2)
#define SAMPLE_AVX2 1
#endif

/* Words wholly inside the row are taken by the vector loops; the row's last partial word and any word past the row
 * (a mask may be longer) by the scalar ones. */
static inline int64_t words_in_row(int64_t n, int64_t words) { return n / 32 < words ? n / 32 : words; }
static inline uint32_t word_bits(const uint32_t* mask, int64_t words, int64_t w) { return w < words ? mask[w] : 0; }

#if defined(SAMPLE_AVX2)
/* All-ones lanes where bit j of the byte `bits` is set (lane j). */
static inline __m256 lanes8(uint32_t bits) {
  const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  __m256i m = _mm256_and_si256(_mm256_set1_epi32((int)bits), sel);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, sel));
}
#endif

/* The largest allowed logit (NaN ignored), −∞ when none is a number. */
static float masked_max(const float* logits, int64_t n, const uint32_t* mask, int64_t words) {
  float best = -INFINITY;
  int64_t w = 0;
#if defined(SAMPLE_AVX512)
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t full = words_in_row(n, words); w < full; w++) {
    uint32_t bits = mask[w];
    if (!bits) continue;
    const float* x = logits + 32 * w;
    // max(x, m) is m where x is NaN
    vmax = _mm512_mask_max_ps(vmax, (__mmask16)bits, _mm512_loadu_ps(x), vmax);
    vmax = _mm512_mask_max_ps(vmax, (__mmask16)(bits >> 16), _mm512_loadu_ps(x + 16), vmax);
  }
  best = _mm512_reduce_max_ps(vmax);
#elif defined(SAMPLE_AVX2)
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 vmax = ninf;
  for (int64_t full = words_in_row(n, words); w < full; w++) {
    uint32_t bits = mask[w];
    if (!bits) continue;
    const float* x = logits + 32 * w;
    for (int g = 0; g < 4; g++) {
      uint32_t b = (bits >> (8 * g)) & 0xff;
      if (!b) continue;
      __m256 v = _mm256_blendv_ps(ninf, _mm256_loadu_ps(x + 8 * g), lanes8(b));
      vmax = _mm256_max_ps(v, vmax);
    }
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  best = _mm_cvtss_f32(m4);
#endif
  for (int64_t id = 32 * w; id < n; id++) {
    if (!((word_bits(mask, words, id >> 5) >> (id & 31)) & 1)) continue;
    if (logits[id] > best) best = logits[id];
  }
  return best;
}

/* The lowest allowed id whose logit equals `value`, or -1. */
static int64_t first_equal(const float* logits, int64_t n, const uint32_t* mask, int64_t words, float value) {
  int64_t w = 0;
#if defined(SAMPLE_AVX512)
  const __m512 v = _mm512_set1_ps(value);
  for (int64_t full = words_in_row(n, words); w < full; w++) {
    uint32_t bits = mask[w];
    if (!bits) continue;
    const float* x = logits + 32 * w;
    uint32_t lo = _mm512_mask_cmp_ps_mask((__mmask16)bits, _mm512_loadu_ps(x), v, _CMP_EQ_OQ);
    uint32_t hi = _mm512_mask_cmp_ps_mask((__mmask16)(bits >> 16), _mm512_loadu_ps(x + 16), v, _CMP_EQ_OQ);
    uint32_t eq = lo | hi << 16;
    if (eq) return 32 * w + __builtin_ctz(eq);
  }
#elif defined(SAMPLE_AVX2)
  const __m256 v = _mm256_set1_ps(value);
  for (int64_t full = words_in_row(n, words); w < full; w++) {
    uint32_t bits = mask[w];
    if (!bits) continue;
    const float* x = logits + 32 * w;
    uint32_t eq = 0;
    for (int g = 0; g < 4; g++) {
      __m256 e = _mm256_cmp_ps(_mm256_loadu_ps(x + 8 * g), v, _CMP_EQ_OQ);
      eq |= (uint32_t)_mm256_movemask_ps(e) << (8 * g);
    }
    eq &= bits;
    if (eq) return 32 * w + __builtin_ctz(eq);
  }
#endif
  for (int64_t id = 32 * w; id < n; id++)
    if (((word_bits(mask, words, id >> 5) >> (id & 31)) & 1) && logits[id] == value) return id;
  return -1;
}

/* The lowest allowed id of the row, or -1. */
static int64_t first_allowed(int64_t n, const uint32_t* mask, int64_t words) {
  for (int64_t w = 0; w < words && 32 * w < n; w++)
    if (mask[w]) {
      int64_t id = 32 * w + __builtin_ctz(mask[w]);
      return id < n ? id : -1;
    }
  return -1;
}

int dbc_masked_argmax(const float* logits, int64_t n, const uint32_t* mask, int64_t words) {
  if (!logits || n < 0 || n > INT32_MAX || words < 0 || (words && !mask))
    return dbc_fail(DBC_E_ARG, "[sample] masked_argmax: bad row (n %lld, %lld mask words)", (long long)n, (long long)words);
  int64_t first = first_allowed(n, mask, words);
  if (first < 0)
    return dbc_fail(DBC_SAMPLE_NONE_ALLOWED, "[sample] the grammar's mask allows none of the row's %lld tokens",
                    (long long)n);
  int64_t id = first_equal(logits, n, mask, words, masked_max(logits, n, mask, words));
  // every allowed logit is NaN: the lowest allowed id
  return (int)(id < 0 ? first : id);
}

/* The smallest float f with f >= floor, so that a float v >= floor (as doubles) exactly when v >= f. */
static float float_at_least(double floor) {
  float f = (float)floor;
  return (double)f < floor ? nextafterf(f, INFINITY) : f;
}

static inline int put_key(double* keys, int count, float v, uint32_t id) {
  double key = -(double)v;
  uint64_t b;
  memcpy(&b, &key, sizeof b);
  b |= id;
  memcpy(&keys[count], &b, sizeof b);
  return count + 1;
}

int dbc_masked_candidates(const float* logits, int64_t n, const uint32_t* mask, int64_t words, double floor,
                          double* keys) {
  if (!logits || !keys || n < 0 || n > 0x1fffffff || words < 0 || (words && !mask))
    return dbc_fail(DBC_E_ARG, "[sample] masked_candidates: bad row (n %lld, %lld mask words)", (long long)n,
                    (long long)words);
  int count = 0;
  int64_t w = 0;
  // NaN floor keeps nothing, as v >= NaN is false
  if (floor != floor) return 0;
  const float f = float_at_least(floor);
#if defined(SAMPLE_AVX512)
  const __m512 vf = _mm512_set1_ps(f);
  for (int64_t full = words_in_row(n, words); w < full; w++) {
    uint32_t bits = mask[w];
    if (!bits) continue;
    const float* x = logits + 32 * w;
    uint32_t lo = _mm512_mask_cmp_ps_mask((__mmask16)bits, _mm512_loadu_ps(x), vf, _CMP_GE_OQ);
    uint32_t hi = _mm512_mask_cmp_ps_mask((__mmask16)(bits >> 16), _mm512_loadu_ps(x + 16), vf, _CMP_GE_OQ);
    for (uint32_t keep = lo | hi << 16; keep; keep &= keep - 1) {
      int j = __builtin_ctz(keep);
      count = put_key(keys, count, x[j], (uint32_t)(32 * w + j));
    }
  }
#elif defined(SAMPLE_AVX2)
  const __m256 vf = _mm256_set1_ps(f);
  for (int64_t full = words_in_row(n, words); w < full; w++) {
    uint32_t bits = mask[w];
    if (!bits) continue;
    const float* x = logits + 32 * w;
    uint32_t keep = 0;
    for (int g = 0; g < 4; g++)
      keep |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8 * g), vf, _CMP_GE_OQ)) << (8 * g);
    for (keep &= bits; keep; keep &= keep - 1) {
      int j = __builtin_ctz(keep);
      count = put_key(keys, count, x[j], (uint32_t)(32 * w + j));
    }
  }
#endif
  for (int64_t id = 32 * w; id < n; id++)
    if (((word_bits(mask, words, id >> 5) >> (id & 31)) & 1) && logits[id] >= f) count = put_key(keys, count, logits[id], (uint32_t)id);
  return count;
}
