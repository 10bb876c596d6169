/* attention.c — KV cache writes and scaled dot-product attention for rows at arbitrary (slot, position) pairs, with GQA,
 * causal or explicit additive masks, sliding windows and per-head sink logits. Cache layout: [slots, kv_heads, max_len, head_dim],
 * f32 or f16: attention reads every cached key and value of a row each step, so an f16 cache halves what a long batch
 * streams (and what it holds); the kernels widen each vector as they load it and compute in f32.
 * A ring cache (ring != 0) holds position p at index p % max_len, so a sliding-window layer keeps only the last max_len
 * positions of each sequence: memory stays flat however long the generation runs. */
#include <math.h>
#include <stdlib.h>
#include "internal.h"
#include "vector_exp.h"

int dbc_kv_write(void* ch, void* xh, void* sh, void* ph, int ring) {
  dbc_tensor *cache, *x, *slots, *pos;
  int rc;
  if ((rc = dbc_check(ch, "kv_write cache", &cache)) || (rc = dbc_check(xh, "kv_write x", &x)) ||
      (rc = dbc_check(sh, "kv_write slots", &slots)) || (rc = dbc_check(ph, "kv_write positions", &pos)))
    return rc;
  if ((cache->dtype != DBC_F32 && cache->dtype != DBC_F16) || cache->ndim != 4)
    return dbc_fail(DBC_E_ARG, "kv_write: cache must be f32 or f16 [slots, kv_heads, max_len, head_dim]");
  if (x->dtype != DBC_F32 || x->ndim != 3 || x->shape[1] != cache->shape[1] || x->shape[2] != cache->shape[3])
    return dbc_fail(DBC_E_ARG, "kv_write: x must be f32 [rows, %lld, %lld]", (long long)cache->shape[1], (long long)cache->shape[3]);
  int64_t rows = x->shape[0], H = cache->shape[1], L = cache->shape[2], D = cache->shape[3];
  if (slots->dtype != DBC_I32 || pos->dtype != DBC_I32 || dbc_numel(slots) != rows || dbc_numel(pos) != rows)
    return dbc_fail(DBC_E_ARG, "kv_write: slots and positions must be i32 [rows]");
  const int32_t *sl = tdata(slots), *ps = tdata(pos);
  for (int64_t r = 0; r < rows; r++) {
    if (sl[r] < 0 || sl[r] >= cache->shape[0]) return dbc_fail(DBC_E_ARG, "kv_write: slot %d outside 0..%lld", sl[r], (long long)cache->shape[0] - 1);
    if (ps[r] < 0 || (!ring && ps[r] >= L)) return dbc_fail(DBC_E_ARG, "kv_write: position %d outside the cache length %lld", ps[r], (long long)L);
  }
  const float* src = tdata(x);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t h = 0; h < H; h++) {
      const int64_t at = (((int64_t)sl[r] * H + h) * L + ps[r] % L) * D;
      if (cache->dtype == DBC_F32) memcpy((float*)tdata(cache) + at, src + (r * H + h) * D, (size_t)D * 4);
      else dbc_f32_to_f16(src + (r * H + h) * D, (uint16_t*)tdata(cache) + at, D);
    }
  return DBC_OK;
}

typedef struct {
  const float* q;
  const void *k, *v; /* f32, or f16 where f16 is set */
  const float *mask, *sinks;
  const int32_t *slots, *pos;
  int64_t heads, kv_heads, max_len, head_dim, mask_width, kv_length;
  int causal, window, ring, f16;
  float scale;
  float* out;
} attn_ctx;

/* Element i of a cache as f32; F16 is a constant at each call, so each kernel is compiled once per cache dtype. */
static inline float kv_at(const void* p, int64_t i, const int F16) { return F16 ? f16_to_f32(((const uint16_t*)p)[i]) : ((const float*)p)[i]; }
/* Row j of a slot's [max_len, D] block (position j % max_len in a ring). */
static inline const void* kv_row(const void* block, int64_t j, int64_t max_len, int ring, int64_t D, const int F16) {
  return (const char*)block + (ring ? j % max_len : j) * D * (F16 ? 2 : 4);
}

/* Rows [j, j + n) of a slot's block asked into the caches: a page holds only 16 f16 rows of 128, and the hardware's
 * stream prefetcher stops at each page's end, so every new page of keys or values began with a full memory latency. */
static inline void prefetch_rows(const void* block, int64_t j, int64_t n, int64_t max_len, int ring, int64_t D, const int F16) {
  const int64_t bytes = D * (F16 ? 2 : 4);
  for (int64_t i = 0; i < n; i++) {
    const char* row = kv_row(block, j + i, max_len, ring, D, F16);
    for (int64_t at = 0; at < bytes; at += 64) __builtin_prefetch(row + at, 0, 3);
  }
}

/* One task = one row × one kv head: the query heads that share that kv head (GQA) go through its keys and values
 * together, so each cached key and value is read from memory once per row, not once per query head (the f32 cache of a
 * long batch is as large as the weights a step reads). Each head's sums run in the same order as for a head alone. */
#if defined(__AVX512F__)
#define VW 16
typedef __m512 vecf;
#define vload _mm512_loadu_ps
#define vstore _mm512_storeu_ps
#define vfma _mm512_fmadd_ps
#define vset1 _mm512_set1_ps
#define vzero _mm512_setzero_ps
#define vadd _mm512_add_ps
#define vsum _mm512_reduce_add_ps
static inline __m512 vload_kv(const void* p, int64_t i, const int F16) {
  return F16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)((const uint16_t*)p + i))) : _mm512_loadu_ps((const float*)p + i);
}
#elif defined(DBC_AVX2)
#define VW 8
typedef __m256 vecf;
#define vload _mm256_loadu_ps
#define vstore _mm256_storeu_ps
#define vfma _mm256_fmadd_ps
#define vset1 _mm256_set1_ps
#define vzero _mm256_setzero_ps
#define vadd _mm256_add_ps
static inline float vsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline __m256 vload_kv(const void* p, int64_t i, const int F16) {
  if (!F16) return _mm256_loadu_ps((const float*)p + i);
#if defined(__F16C__)
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((const uint16_t*)p + i)));
#else
  float f[8];
  for (int k = 0; k < 8; k++) f[k] = kv_at(p, i + k, 1);
  return _mm256_loadu_ps(f);
#endif
}
#endif

static inline float dot_key(const float* q, const void* k, int64_t D, const int F16) {
  int64_t d = 0;
  float s = 0;
#ifdef VW
  if (D >= 4 * VW) { /* four accumulators: a key's dot is a chain of D / VW FMAs otherwise */
    vecf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
    for (; d + 4 * VW <= D; d += 4 * VW) {
      a0 = vfma(vload(q + d), vload_kv(k, d, F16), a0);
      a1 = vfma(vload(q + d + VW), vload_kv(k, d + VW, F16), a1);
      a2 = vfma(vload(q + d + 2 * VW), vload_kv(k, d + 2 * VW, F16), a2);
      a3 = vfma(vload(q + d + 3 * VW), vload_kv(k, d + 3 * VW, F16), a3);
    }
    s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
  }
#endif
  for (; d < D; d++) s += q[d] * kv_at(k, d, F16);
  return s;
}

/* o[0, D) = Σ_j w_j · v_j over the task's keys, a block of the output held in registers while the keys stream past. */
static inline void weighted_values(float* o, const float* w, const void* vb, int64_t start, int64_t end, int64_t max_len, int ring, int64_t D,
                                   const int F16) {
  int64_t d0 = 0;
#ifdef VW
  for (; d0 + 8 * VW <= D; d0 += 8 * VW) {
    vecf acc[8];
    for (int c = 0; c < 8; c++) acc[c] = vzero();
    for (int64_t j = start; j < end; j++) {
      const void* vj = kv_row(vb, j, max_len, ring, D, F16);
      if (d0 == 0 && j + 16 < end) prefetch_rows(vb, j + 16, 1, max_len, ring, D, F16); /* a page ahead */
      const vecf wj = vset1(w[j - start]);
      for (int c = 0; c < 8; c++) acc[c] = vfma(wj, vload_kv(vj, d0 + c * VW, F16), acc[c]);
    }
    for (int c = 0; c < 8; c++) vstore(o + d0 + c * VW, acc[c]);
  }
#endif
  for (int64_t d = d0; d < D; d++) o[d] = 0;
  for (int64_t j = start; j < end && d0 < D; j++) {
    const void* vj = kv_row(vb, j, max_len, ring, D, F16);
    for (int64_t d = d0; d < D; d++) o[d] += w[j - start] * kv_at(vj, d, F16);
  }
}

#if defined(__AVX512F__)
/* 16 vectors → one vector whose lane k is the sum of vector k's lanes: four rounds of pairing neighbours (even lanes of
 * both, plus odd lanes of both) instead of 16 separate horizontal sums. */
static inline __m512 fold16(__m512 a[16]) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#pragma GCC unroll 4
  for (int n = 16; n > 1; n /= 2)
#pragma GCC unroll 8
    for (int i = 0; i < n / 2; i++)
      a[i] = _mm512_add_ps(_mm512_permutex2var_ps(a[2 * i], even, a[2 * i + 1]), _mm512_permutex2var_ps(a[2 * i], odd, a[2 * i + 1]));
  return a[0];
}

/* Scores of keys [j0, j0 + nk), nk ≤ 16 (the rest −∞), for one query head, scaled and masked. q goes through the head
 * dimension once, each of its vectors against the 16 keys' (16 accumulators in registers). */
static inline __m512 scores16(const float* q, const float* const key[16], int64_t j0, int64_t nk, const attn_ctx* c, const float* mask_row) {
  const int64_t D = c->head_dim;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d += 16) {
    const __m512 qv = _mm512_loadu_ps(q + d);
#pragma GCC unroll 16
    for (int k = 0; k < 16; k++) acc[k] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(key[k] + d), acc[k]);
  }
  const __mmask16 live = (__mmask16)((1u << nk) - 1);
  __m512 s = _mm512_mul_ps(fold16(acc), _mm512_set1_ps(c->scale));
  if (mask_row) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(live, mask_row + j0));
  return _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), s);
}

/* o0, o1 [0, D) = Σ_j w0_j · v_j and Σ_j w1_j · v_j (two query heads of one kv head), D a multiple of 64: each value row
 * is read once for both; each head's sums run in the same order as weighted_values alone. */
static inline void weighted_values_pair(float* o0, float* o1, const float* w0, const float* w1, const void* vb, int64_t start, int64_t end,
                                        int64_t max_len, int ring, int64_t D, const int F16) {
  for (int64_t d0 = 0; d0 < D; d0 += 64) {
    __m512 a[4], b[4];
    for (int k = 0; k < 4; k++) a[k] = _mm512_setzero_ps(), b[k] = _mm512_setzero_ps();
    for (int64_t j = start; j < end; j++) {
      const void* vj = kv_row(vb, j, max_len, ring, D, F16);
      if (d0 == 0 && j + 16 < end) prefetch_rows(vb, j + 16, 1, max_len, ring, D, F16); /* a page ahead */
      const __m512 x = _mm512_set1_ps(w0[j - start]), y = _mm512_set1_ps(w1[j - start]);
      for (int k = 0; k < 4; k++) {
        const __m512 v = vload_kv(vj, d0 + 16 * k, F16);
        a[k] = _mm512_fmadd_ps(x, v, a[k]);
        b[k] = _mm512_fmadd_ps(y, v, b[k]);
      }
    }
    for (int k = 0; k < 4; k++) _mm512_storeu_ps(o0 + d0 + 16 * k, a[k]), _mm512_storeu_ps(o1 + d0 + 16 * k, b[k]);
  }
}
#endif

static inline void attn_tasks(const attn_ctx* c, int64_t b, int64_t e, const int F16) {
  const int64_t D = c->head_dim, group = c->heads / c->kv_heads, es = F16 ? 2 : 4;
  float* scores = dbc_scratch_alloc((size_t)(group * c->max_len) * sizeof(float));
  float* maxes = dbc_scratch_alloc((size_t)group * sizeof(float));
  float* inv = dbc_scratch_alloc((size_t)group * sizeof(float));
  float* kblock = F16 ? dbc_scratch_alloc((size_t)(16 * D) * sizeof(float)) : NULL; /* 16 f16 keys widened */
  for (int64_t task = b; task < e; task++) {
    const int64_t r = task / c->kv_heads, kvh = task % c->kv_heads, h0 = kvh * group;
    const int64_t end = c->causal ? (int64_t)c->pos[r] + 1 : c->kv_length;
    const int64_t start = c->window > 0 && end - c->window > 0 ? end - c->window : 0, n = end - start;
    const void* kb = (const char*)c->k + (((int64_t)c->slots[r] * c->kv_heads + kvh) * c->max_len) * D * es;
    const void* vb = (const char*)c->v + (((int64_t)c->slots[r] * c->kv_heads + kvh) * c->max_len) * D * es;
    for (int64_t g = 0; g < group; g++) maxes[g] = c->sinks ? c->sinks[h0 + g] : -INFINITY;
#if defined(__AVX512F__)
    if (D % 16 == 0) { /* 16 keys at a time, in L1 while each query head of the group passes (f16 ones widened once) */
      prefetch_rows(kb, start, end - start < 16 ? end - start : 16, c->max_len, c->ring, D, F16);
      for (int64_t j0 = start; j0 < end; j0 += 16) {
        const int64_t nk = end - j0 < 16 ? end - j0 : 16;
        /* the next 16 keys, or at the last block the first 16 values */
        if (end - j0 > 16) prefetch_rows(kb, j0 + 16, end - j0 - 16 < 16 ? end - j0 - 16 : 16, c->max_len, c->ring, D, F16);
        else prefetch_rows(vb, start, n < 16 ? n : 16, c->max_len, c->ring, D, F16);
        const float* key[16];
        for (int k = 0; k < 16; k++) { /* past the end: the last key again, its lane masked */
          const void* row = kv_row(kb, j0 + (k < nk ? k : nk - 1), c->max_len, c->ring, D, F16);
          if (!F16) key[k] = row;
          else {
            float* wide = kblock + k * D;
            for (int64_t d = 0; d < D; d += 16) _mm512_storeu_ps(wide + d, vload_kv(row, d, 1));
            key[k] = wide;
          }
        }
        for (int64_t g = 0; g < group; g++) {
          const __m512 s16 = scores16(c->q + (r * c->heads + h0 + g) * D, key, j0, nk, c, c->mask ? c->mask + r * c->mask_width : NULL);
          _mm512_mask_storeu_ps(scores + g * n + j0 - start, (__mmask16)((1u << nk) - 1), s16);
          const float top = _mm512_reduce_max_ps(s16);
          if (top > maxes[g]) maxes[g] = top;
        }
      }
      for (int64_t g = 0; g < group; g++) { /* weights e^(s − max) in place, 1 / their sum in inv[g] (0: every key masked) */
        float* w = scores + g * n;
        if (maxes[g] == -INFINITY) {
          for (int64_t j = 0; j < n; j++) w[j] = 0;
          inv[g] = 0;
          continue;
        }
        const __m512 top = _mm512_set1_ps(maxes[g]);
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
          const __mmask16 live = (__mmask16)(n - j >= 16 ? 0xffff : (1u << (n - j)) - 1);
          const __m512 e16 = _mm512_maskz_mov_ps(live, dbc_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, w + j), top)));
          _mm512_mask_storeu_ps(w + j, live, e16);
          sum = _mm512_add_ps(sum, e16);
        }
        inv[g] = (float)(1.0 / (_mm512_reduce_add_ps(sum) + (c->sinks ? exp((double)(c->sinks[h0 + g] - maxes[g])) : 0.0)));
      }
      int64_t g = 0;
      if (D % 64 == 0) /* two heads at a time: each value row is read once for both */
        for (; g + 2 <= group; g += 2)
          weighted_values_pair(c->out + (r * c->heads + h0 + g) * D, c->out + (r * c->heads + h0 + g + 1) * D, scores + g * n, scores + (g + 1) * n, vb, start, end, c->max_len, c->ring, D, F16);
      for (; g < group; g++) weighted_values(c->out + (r * c->heads + h0 + g) * D, scores + g * n, vb, start, end, c->max_len, c->ring, D, F16);
      for (g = 0; g < group; g++) {
        float* o = c->out + (r * c->heads + h0 + g) * D;
        for (int64_t d = 0; d < D; d++) o[d] *= inv[g];
      }
      continue;
    }
#endif
    for (int64_t j = start; j < end; j++) {
      const void* kj = kv_row(kb, j, c->max_len, c->ring, D, F16);
      if (j + 16 < end) prefetch_rows(kb, j + 16, 1, c->max_len, c->ring, D, F16);
      for (int64_t g = 0; g < group; g++) {
        float s = dot_key(c->q + (r * c->heads + h0 + g) * D, kj, D, F16) * c->scale;
        if (c->mask) s += c->mask[r * c->mask_width + j];
        scores[g * n + j - start] = s;
        if (s > maxes[g]) maxes[g] = s;
      }
    }
    for (int64_t g = 0; g < group; g++) {
      float* o = c->out + (r * c->heads + h0 + g) * D;
      if (maxes[g] == -INFINITY) { /* every key masked: output zeros rather than NaN */
        for (int64_t d = 0; d < D; d++) o[d] = 0;
        continue;
      }
      float* w = scores + g * n;
      double denom = c->sinks ? exp((double)(c->sinks[h0 + g] - maxes[g])) : 0.0;
      for (int64_t j = 0; j < n; j++) denom += w[j] = expf(w[j] - maxes[g]);
      weighted_values(o, w, vb, start, end, c->max_len, c->ring, D, F16);
      const float inv = (float)(1.0 / denom);
      for (int64_t d = 0; d < D; d++) o[d] *= inv;
    }
  }
  dbc_scratch_free(scores);
  dbc_scratch_free(maxes);
  dbc_scratch_free(inv);
  dbc_scratch_free(kblock);
}
static void attn_range_f32(void* p, int64_t b, int64_t e) { attn_tasks(p, b, e, 0); }
static void attn_range_f16(void* p, int64_t b, int64_t e) { attn_tasks(p, b, e, 1); }

int dbc_attention(void* qh, void* kh, void* vh, void* sh, void* ph, float scale, void* mh, int causal, int kv_length, int window,
                  int ring, void* sinkh, void** out) {
  dbc_tensor *q, *k, *v, *slots, *pos, *mask = NULL, *sinks = NULL, *o;
  int rc;
  if ((rc = dbc_check(qh, "attention q", &q)) || (rc = dbc_check(kh, "attention k_cache", &k)) || (rc = dbc_check(vh, "attention v_cache", &v)) ||
      (rc = dbc_check(sh, "attention slots", &slots)) || (rc = dbc_check(ph, "attention positions", &pos)))
    return rc;
  if (mh && (rc = dbc_check(mh, "attention mask", &mask))) return rc;
  if (sinkh && (rc = dbc_check(sinkh, "attention sinks", &sinks))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "attention: out is null");
  if (q->dtype != DBC_F32 || q->ndim != 3) return dbc_fail(DBC_E_ARG, "attention: q must be f32 [rows, heads, head_dim]");
  if ((k->dtype != DBC_F32 && k->dtype != DBC_F16) || v->dtype != k->dtype || k->ndim != 4 || v->ndim != 4)
    return dbc_fail(DBC_E_ARG, "attention: caches must be both f32 or both f16 [slots, kv_heads, max_len, head_dim]");
  for (int i = 0; i < 4; i++)
    if (k->shape[i] != v->shape[i]) return dbc_fail(DBC_E_ARG, "attention: key and value caches differ in shape");
  int64_t rows = q->shape[0], H = q->shape[1], D = q->shape[2], KH = k->shape[1], L = k->shape[2];
  if (k->shape[3] != D) return dbc_fail(DBC_E_ARG, "attention: q head_dim %lld != cache head_dim %lld", (long long)D, (long long)k->shape[3]);
  if (KH == 0 || H % KH) return dbc_fail(DBC_E_ARG, "attention: %lld query heads do not divide into %lld kv heads", (long long)H, (long long)KH);
  if (slots->dtype != DBC_I32 || pos->dtype != DBC_I32 || dbc_numel(slots) != rows || dbc_numel(pos) != rows)
    return dbc_fail(DBC_E_ARG, "attention: slots and positions must be i32 [rows]");
  const int32_t *sl = tdata(slots), *ps = tdata(pos);
  if (!causal && (kv_length < 0 || kv_length > L))
    return dbc_fail(DBC_E_ARG, "attention: kv_length %d outside the cache length %lld", kv_length, (long long)L);
  if (window < 0) return dbc_fail(DBC_E_ARG, "attention: negative window");
  if (ring && (!causal || mh || window < 1 || window > L))
    return dbc_fail(DBC_E_ARG, "attention: a ring cache needs causal rows, no mask and a window in 1..%lld, got window %d", (long long)L, window);
  for (int64_t r = 0; r < rows; r++) {
    if (sl[r] < 0 || sl[r] >= k->shape[0]) return dbc_fail(DBC_E_ARG, "attention: slot %d outside 0..%lld", sl[r], (long long)k->shape[0] - 1);
    if (ps[r] < 0 || (!ring && ps[r] >= L)) return dbc_fail(DBC_E_ARG, "attention: position %d outside the cache length %lld", ps[r], (long long)L);
  }
  if (ring) /* every key a row needs must still be in the ring after this call's writes: rows of one slot span <= L - window */
    for (int64_t r = 0; r < rows; r++)
      for (int64_t s = 0; s < rows; s++)
        if (sl[s] == sl[r] && ps[s] - ps[r] > L - window)
          return dbc_fail(DBC_E_ARG, "attention: rows of slot %d span positions %d..%d, more than the ring of %lld holds with window %d",
                          sl[r], ps[r], ps[s], (long long)L, window);
  int64_t width = 0;
  if (mask) {
    if (mask->dtype != DBC_F32 || mask->ndim != 2 || mask->shape[0] != rows)
      return dbc_fail(DBC_E_ARG, "attention: mask must be f32 [rows, keys]");
    width = mask->shape[1];
  }
  if (sinks && (sinks->dtype != DBC_F32 || dbc_numel(sinks) != H)) return dbc_fail(DBC_E_ARG, "attention: sinks must be f32 [heads]");
  if ((rc = dbc_new(DBC_F32, 3, q->shape, &o))) return rc;
  attn_ctx c = {tdata(q), tdata(k), tdata(v), mask ? tdata(mask) : NULL, sinks ? tdata(sinks) : NULL, sl, ps, H, KH, L, D, width, 0,
                causal, window, ring, k->dtype == DBC_F16, scale, tdata(o)};
  c.kv_length = kv_length;
  for (int64_t r = 0; r < rows; r++) {
    int64_t keys = causal ? ps[r] + 1 : kv_length;
    if (mask && width < keys) {
      dbc_tensor_free(o);
      return dbc_fail(DBC_E_ARG, "attention: mask width %lld < keys attended %lld", (long long)width, (long long)keys);
    }
  }
  dbc_parallel_for(rows * KH, 1, c.f16 ? attn_range_f16 : attn_range_f32, &c);
  *out = o;
  return DBC_OK;
}
