/* quant.c — MLX affine quantization (design/mlx-c.md §4): w[n,k] = scale[n,k/gs]·q + bias[n,k/gs], q packed LSB-first
 * in u32 words (bits 2,3,4,5,6,8; 3/5/6-bit values straddle words). Quantized linear, dequantize and embedding gather.
 * MLX mxfp4 (biases absent): 4-bit E2M1 values, group 32, u8 E8M0 scales: w = fp4[q]·2^(scale−127).
 * The kernels for 4 and 8 bits quantize x to int8 per group and use integer dot products (as llama.cpp's Q8 activations
 * do) at every batch size: on x86-64 with AVX-512 VNNI the kernels of quant_avx512.c, otherwise the AVX2 rows below.
 * Other widths, mxfp4 and precise requests dequantize weight blocks for a float GEMM once 16 or more rows come. */
#include <math.h>
#include <stdlib.h>
#include "internal.h"
#include "quant_avx512.h"

#define QGEMV_MAX_ROWS 8
#define QGEMM_MIN_ROWS 16
#define QGEMM_BLOCK_N 256

void dbc_gemm_f32_block(const float* x, const float* wblock, int64_t M, int64_t nrows, int64_t K, float* out, int64_t ldo);
int dbc_linear_prepare(dbc_tensor* x, int64_t N, int64_t K, dbc_tensor* bias, const char* name, dbc_tensor** out, int64_t* M);


/* q values of elements [k0, k0+n) of one packed row, as floats */
static void unpack_q(const uint32_t* row, int bits, int64_t k0, int n, float* q) {
  const uint32_t mask = (1u << bits) - 1u;
  if (bits == 4 && (k0 & 7) == 0) {
    const uint32_t* w = row + k0 / 8;
    for (int i = 0; i < n; i += 8) {
      uint32_t v = w[i / 8];
      for (int j = 0; j < 8; j++) q[i + j] = (float)((v >> (4 * j)) & 0xf);
    }
    return;
  }
  if (bits == 8 && (k0 & 3) == 0) {
    const uint8_t* b = (const uint8_t*)row + k0;
    for (int i = 0; i < n; i++) q[i] = (float)b[i];
    return;
  }
  for (int i = 0; i < n; i++) {
    int64_t bit = (k0 + i) * bits, word = bit >> 5;
    int shift = (int)(bit & 31);
    uint64_t v = row[word];
    if (shift + bits > 32) v |= (uint64_t)row[word + 1] << 32;
    q[i] = (float)((uint32_t)(v >> shift) & mask);
  }
}

static const float FP4_E2M1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* E8M0: 2^(s − 127); MLX reads s = 0 as the bf16 denormal 2^-127 too */
static inline float e8m0(uint8_t s) { return ldexpf(1.0f, (int)s - 127); }

void dbc_dequant_row(const qmatrix* m, int64_t n, float* out) {
  const uint32_t* row = m->w + n * m->words_per_row;
  if (m->mx) {
    const uint8_t* scales = m->scales;
    for (int64_t g = 0; g < m->groups; g++) {
      float s = e8m0(scales[n * m->groups + g]);
      float* o = out + g * m->gs;
      unpack_q(row, 4, g * m->gs, m->gs, o);
      for (int i = 0; i < m->gs; i++) o[i] = FP4_E2M1[(int)o[i]] * s;
    }
    return;
  }
  for (int64_t g = 0; g < m->groups; g++) {
    float s = load_f32(m->scales, m->sdtype, n * m->groups + g), b = load_f32(m->biases, m->sdtype, n * m->groups + g);
    float* o = out + g * m->gs;
    unpack_q(row, m->bits, g * m->gs, m->gs, o);
    for (int i = 0; i < m->gs; i++) o[i] = o[i] * s + b;
  }
}

/* A quantized matrix [N, K] (or experts [E, N, K] seen as [E·N, K] when `experts` is given): affine with scales and
 * biases in a float dtype, or mxfp4 when biases are absent (bits 4, group 32, u8 scales). */
int dbc_qmatrix_check(void* wh, void* sh, void* bh, int gs, int bits, const char* name, int64_t* experts, qmatrix* m) {
  dbc_tensor *w, *s, *b = NULL;
  int rc;
  if ((rc = dbc_check(wh, name, &w)) || (rc = dbc_check(sh, name, &s))) return rc;
  if (bh && (rc = dbc_check(bh, name, &b))) return rc;
  int mx = b == NULL;
  if (mx && (bits != 4 || gs != 32)) return dbc_fail(DBC_E_ARG, "%s: mxfp4 (no biases) needs bits 4 and group size 32, got %d and %d", name, bits, gs);
  if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8)
    return dbc_fail(DBC_E_ARG, "%s: unsupported bits %d (2, 3, 4, 5, 6 or 8)", name, bits);
  if (gs != 32 && gs != 64 && gs != 128) return dbc_fail(DBC_E_ARG, "%s: unsupported group size %d (32, 64 or 128)", name, gs);
  int nd = experts ? 3 : 2;
  if (w->dtype != DBC_U32 || w->ndim != nd)
    return dbc_fail(DBC_E_ARG, "%s: packed weight must be u32 [%sN, K*bits/32], got %s with %d axes", name, experts ? "E, " : "", dbc_dtype_name(w->dtype), w->ndim);
  if (mx) {
    if (s->dtype != DBC_U8) return dbc_fail(DBC_E_ARG, "%s: mxfp4 scales must be u8 (E8M0), got %s", name, dbc_dtype_name(s->dtype));
  } else {
    if ((rc = dbc_check_float(s, name)) || (rc = dbc_check_float(b, name))) return rc;
    if (s->dtype != b->dtype) return dbc_fail(DBC_E_ARG, "%s: scales and biases differ in dtype", name);
  }
  int64_t E = experts ? w->shape[0] : 1, N = w->shape[nd - 2], K = w->shape[nd - 1] * 32 / bits;
  if ((w->shape[nd - 1] * 32) % bits) return dbc_fail(DBC_E_ARG, "%s: packed width %lld is not a whole number of %d-bit values", name, (long long)w->shape[nd - 1], bits);
  if (K % gs) return dbc_fail(DBC_E_ARG, "%s: input size %lld is not a multiple of group size %d", name, (long long)K, gs);
  for (dbc_tensor* t = s; t; t = (t == s ? b : NULL))
    if (t->ndim != nd || t->shape[nd - 2] != N || t->shape[nd - 1] != K / gs || (experts && t->shape[0] != E))
      return dbc_fail(DBC_E_ARG, "%s: scales/biases must be [%s%lld, %lld] for a [%lld, %lld] matrix at group size %d", name, experts ? "E, " : "", (long long)N,
                      (long long)(K / gs), (long long)N, (long long)K, gs);
  *m = (qmatrix){tdata(w), tdata(s), b ? tdata(b) : NULL, s->dtype, E * N, K, w->shape[nd - 1], K / gs, gs, bits, mx};
  if (experts) *experts = E;
  return DBC_OK;
}

static int qmatrix_check(void* wh, void* sh, void* bh, int gs, int bits, const char* name, qmatrix* m) {
  return dbc_qmatrix_check(wh, sh, bh, gs, bits, name, NULL, m);
}

int dbc_dequantize(void* wh, void* sh, void* bh, int gs, int bits, void** out) {
  qmatrix m;
  dbc_tensor* o;
  int rc = qmatrix_check(wh, sh, bh, gs, bits, "dequantize", &m);
  if (rc) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "dequantize: out is null");
  int64_t shape[2] = {m.N, m.K};
  if ((rc = dbc_new(DBC_F32, 2, shape, &o))) return rc;
  for (int64_t n = 0; n < m.N; n++) dbc_dequant_row(&m, n, (float*)tdata(o) + n * m.K);
  *out = o;
  return DBC_OK;
}

int dbc_quantized_embedding(void* wh, void* sh, void* bh, int gs, int bits, void* ih, void** out) {
  qmatrix m;
  dbc_tensor *ids, *o;
  int rc = qmatrix_check(wh, sh, bh, gs, bits, "quantized_embedding", &m);
  if (rc || (rc = dbc_check(ih, "quantized_embedding ids", &ids))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "quantized_embedding: out is null");
  if (ids->dtype != DBC_I32 || ids->ndim >= DBC_MAX_DIMS) return dbc_fail(DBC_E_ARG, "quantized_embedding: ids must be i32");
  int64_t n = dbc_numel(ids), shape[DBC_MAX_DIMS];
  const int32_t* id = tdata(ids);
  for (int64_t i = 0; i < n; i++)
    if (id[i] < 0 || id[i] >= m.N) return dbc_fail(DBC_E_ARG, "quantized_embedding: token id %d outside vocab of %lld", id[i], (long long)m.N);
  for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
  shape[ids->ndim] = m.K;
  if ((rc = dbc_new(DBC_F32, ids->ndim + 1, shape, &o))) return rc;
  for (int64_t i = 0; i < n; i++) dbc_dequant_row(&m, id[i], (float*)tdata(o) + i * m.K);
  *out = o;
  return DBC_OK;
}

/* ---------- quantized linear ---------- */

typedef struct {
  const qmatrix* m;
  const float* x;      /* [M, K] */
  int64_t M;
  const void* bias;
  int bias_dtype;
  float* out;          /* [M, N] */
  const float* xsum;   /* [M, groups]: Σx per group, for the bias term */
  /* int8 activations (AVX2 path) */
  const int8_t* xq;    /* [M, K], 4-bit: each 32-block stored even elements first, then odd */
  const float* xd;     /* [M, K/32] block scales */
  const float* xe;     /* [M, groups]: 8-bit only, Σ_b d_b·128·Σxq_b */
} qlinear_ctx;

/* Portable path: unpack a group to floats once, dot with every row of x. */
static void qgemv_float_range(void* p, int64_t nb, int64_t ne) {
  const qlinear_ctx* c = p;
  const qmatrix* m = c->m;
  float q[128];
  for (int64_t n = nb; n < ne; n++) {
    const uint32_t* row = m->w + n * m->words_per_row;
    float acc[QGEMV_MAX_ROWS];
    for (int64_t m0 = 0; m0 < c->M; m0 += QGEMV_MAX_ROWS) {
      int mc = (int)(c->M - m0 < QGEMV_MAX_ROWS ? c->M - m0 : QGEMV_MAX_ROWS);
      for (int r = 0; r < mc; r++) acc[r] = 0;
      for (int64_t g = 0; g < m->groups; g++) {
        float s = load_f32(m->scales, m->sdtype, n * m->groups + g), b = load_f32(m->biases, m->sdtype, n * m->groups + g);
        unpack_q(row, m->bits, g * m->gs, m->gs, q);
        for (int r = 0; r < mc; r++) {
          const float* x = c->x + (m0 + r) * m->K + g * m->gs;
          float lanes[8] = {0};
          for (int i = 0; i < m->gs; i += 8)
            for (int j = 0; j < 8; j++) lanes[j] += q[i + j] * x[i + j];
          float d = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
          acc[r] += s * d + b * c->xsum[(m0 + r) * m->groups + g];
        }
      }
      float bias = c->bias ? load_f32(c->bias, c->bias_dtype, n) : 0.0f;
      for (int r = 0; r < mc; r++) c->out[(m0 + r) * m->N + n] = acc[r] + bias;
    }
  }
}

#ifdef DBC_AVX2
static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* Σ a·b in 8 float lanes: the per-group bias terms of a row (a serial scalar sum would be one long FMA latency chain). */
static inline float dot_f32(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  float tail = 0;
  for (; k < n; k++) tail += a[k] * b[k];
  return hsum8(acc) + tail;
}

#if defined(__AVXVNNI__)
#define DBC_VNNI 1
#define DOT_U8S8(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define DBC_VNNI 1
#define DOT_U8S8(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#else
#define DBC_VNNI 0
#endif

/* Σ q·x over one group of GS values (integer lanes). x is quantized per group; for 4-bit each 64 values are stored
 * even elements first so they meet the low nibbles of one 32-byte load. */
static inline __attribute__((always_inline)) __m256i group_dot(const uint8_t* q, const int8_t* x, const int BITS, const int GS) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
#if DBC_VNNI
  __m256i acc = _mm256_setzero_si256();
  if (BITS == 4) {
    if (GS == 32) {
      const __m128i v = _mm_loadu_si128((const __m128i*)q);
      acc = DOT_U8S8(acc, _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), low4), _mm256_loadu_si256((const __m256i*)x));
    } else {
      for (int h = 0; h < GS / 64; h++) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(q + 32 * h));
        acc = DOT_U8S8(acc, _mm256_and_si256(v, low4), _mm256_loadu_si256((const __m256i*)(x + 64 * h)));
        acc = DOT_U8S8(acc, _mm256_and_si256(_mm256_srli_epi16(v, 4), low4), _mm256_loadu_si256((const __m256i*)(x + 64 * h + 32)));
      }
    }
  } else {
    for (int h = 0; h < GS / 32; h++)
      acc = DOT_U8S8(acc, _mm256_loadu_si256((const __m256i*)(q + 32 * h)), _mm256_loadu_si256((const __m256i*)(x + 32 * h)));
  }
  return acc;
#else
  const __m256i ones = _mm256_set1_epi16(1);
  if (BITS == 4) {
    __m256i sum16;
    if (GS == 32) {
      const __m128i v = _mm_loadu_si128((const __m128i*)q);
      sum16 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), low4), _mm256_loadu_si256((const __m256i*)x));
    } else {
      sum16 = _mm256_setzero_si256();
      for (int h = 0; h < GS / 64; h++) { /* ≤ 4 products of 15·127·2 per lane: no i16 overflow */
        const __m256i v = _mm256_loadu_si256((const __m256i*)(q + 32 * h));
        sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(_mm256_and_si256(v, low4), _mm256_loadu_si256((const __m256i*)(x + 64 * h))));
        sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4),
                                                             _mm256_loadu_si256((const __m256i*)(x + 64 * h + 32))));
      }
    }
    return _mm256_madd_epi16(sum16, ones);
  }
  /* 8-bit: (q-128)·x with the sign trick so maddubs cannot saturate; the caller adds 128·Σx back */
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  __m256i acc = _mm256_setzero_si256();
  for (int h = 0; h < GS / 32; h++) {
    const __m256i qs = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(q + 32 * h)), flip);
    const __m256i xv = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i*)(x + 32 * h)), qs);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(qs, qs), xv), ones));
  }
  return acc;
#endif
}

/* One pass over weight rows [nb, ne) for MC rows of x; MC, BITS and GS are compile-time constants after inlining, so
 * accumulators stay in registers. Groups go in pairs into two accumulators to hide the FMA latency chain. */
static inline __attribute__((always_inline)) void qgemv_int8_rows(const qlinear_ctx* c, int64_t m0, const int MC, const int BITS,
                                                                  const int GS, int64_t nb, int64_t ne) {
  const qmatrix* m = c->m;
  const int64_t K = m->K, groups = m->groups, group_bytes = GS * BITS / 8;
  const int8_t* xq[QGEMV_MAX_ROWS];
  const float* xd[QGEMV_MAX_ROWS];
  for (int r = 0; r < MC; r++) xq[r] = c->xq + (m0 + r) * K, xd[r] = c->xd + (m0 + r) * groups;
  float srow[groups], brow[groups];
  for (int64_t n = nb; n < ne; n++) {
    const uint8_t* row = (const uint8_t*)(m->w + n * m->words_per_row);
    dbc_to_f32((const char*)m->scales + (size_t)(n * groups) * dbc_dtype_size(m->sdtype), m->sdtype, srow, groups);
    dbc_to_f32((const char*)m->biases + (size_t)(n * groups) * dbc_dtype_size(m->sdtype), m->sdtype, brow, groups);
    __m256 acc0[QGEMV_MAX_ROWS], acc1[QGEMV_MAX_ROWS];
    for (int r = 0; r < MC; r++) acc0[r] = _mm256_setzero_ps(), acc1[r] = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 2 <= groups; g += 2) {
      _mm_prefetch((const char*)row + g * group_bytes + 1024, _MM_HINT_T0);
      for (int r = 0; r < MC; r++) {
        const __m256i d0 = group_dot(row + g * group_bytes, xq[r] + g * GS, BITS, GS);
        const __m256i d1 = group_dot(row + (g + 1) * group_bytes, xq[r] + (g + 1) * GS, BITS, GS);
        acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(srow[g] * xd[r][g]), acc0[r]);
        acc1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_set1_ps(srow[g + 1] * xd[r][g + 1]), acc1[r]);
      }
    }
    for (; g < groups; g++)
      for (int r = 0; r < MC; r++)
        acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_dot(row + g * group_bytes, xq[r] + g * GS, BITS, GS)),
                                  _mm256_set1_ps(srow[g] * xd[r][g]), acc0[r]);
    const float bias = c->bias ? load_f32(c->bias, c->bias_dtype, n) : 0.0f;
    for (int r = 0; r < MC; r++) {
      const float* xs = c->xsum + (m0 + r) * groups;
      const float* xe = c->xe + (m0 + r) * groups;
      const float extra = dot_f32(brow, xs, groups) + (BITS == 8 && !DBC_VNNI ? dot_f32(srow, xe, groups) : 0.0f);
      c->out[(m0 + r) * m->N + n] = hsum8(_mm256_add_ps(acc0[r], acc1[r])) + extra + bias;
    }
  }
}

#define QGEMV_MC(BITS, GS)                                         \
  switch (mc) {                                                    \
    case 1: qgemv_int8_rows(c, m0, 1, BITS, GS, nb, ne); break;    \
    case 2: qgemv_int8_rows(c, m0, 2, BITS, GS, nb, ne); break;    \
    case 3: qgemv_int8_rows(c, m0, 3, BITS, GS, nb, ne); break;    \
    default: qgemv_int8_rows(c, m0, 4, BITS, GS, nb, ne); break;   \
  }
#define QGEMV_GS(BITS)                                             \
  if (c->m->gs == 32) { QGEMV_MC(BITS, 32) }                       \
  else if (c->m->gs == 64) { QGEMV_MC(BITS, 64) }                  \
  else { QGEMV_MC(BITS, 128) }

/* Blocks of weight rows outer, x rows in chunks of ≤ 4 inner: a block (a few KiB) is read from memory once and stays in
 * L1 for the other chunks, each call does a whole block (its setup is not paid per row), and ≤ 4 rows of x keep their
 * accumulators in registers. */
#define QGEMV_ROW_BLOCK 16
static void qgemv_int8_range(void* p, int64_t nb0, int64_t ne0) {
  const qlinear_ctx* c = p;
  for (int64_t nb = nb0; nb < ne0; nb += QGEMV_ROW_BLOCK) {
    const int64_t ne = nb + QGEMV_ROW_BLOCK < ne0 ? nb + QGEMV_ROW_BLOCK : ne0;
    for (int64_t m0 = 0; m0 < c->M; m0 += 4) {
      const int mc = (int)(c->M - m0 < 4 ? c->M - m0 : 4);
      if (c->m->bits == 4) { QGEMV_GS(4) } else { QGEMV_GS(8) }
    }
  }
}

/* Precise 4-bit decode (x kept in float, Backend.quantizedLinear precise): each packed word's 8 values are widened to
 * floats in one vector, scaled by the group's scale and multiplied into ≤ 4 rows of x; the bias term uses Σx per group. */
static void qgemv_precise4_range(void* p, int64_t nb, int64_t ne) {
  const qlinear_ctx* c = p;
  const qmatrix* m = c->m;
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), low4 = _mm256_set1_epi32(0xf);
  for (int64_t n = nb; n < ne; n++) {
    const uint32_t* row = m->w + n * m->words_per_row;
    const float bias = c->bias ? load_f32(c->bias, c->bias_dtype, n) : 0.0f;
    for (int64_t m0 = 0; m0 < c->M; m0 += 4) {
      const int mc = (int)(c->M - m0 < 4 ? c->M - m0 : 4);
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      float extra[4] = {0, 0, 0, 0};
      for (int64_t g = 0; g < m->groups; g++) {
        const float s = load_f32(m->scales, m->sdtype, n * m->groups + g), b = load_f32(m->biases, m->sdtype, n * m->groups + g);
        const __m256 sv = _mm256_set1_ps(s);
        for (int64_t w = 0; w < m->gs / 8; w++) {
          const int64_t k = g * m->gs + 8 * w;
          const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)row[k / 8]), shifts), low4);
          const __m256 wq = _mm256_mul_ps(_mm256_cvtepi32_ps(q), sv);
          for (int r = 0; r < mc; r++) acc[r] = _mm256_fmadd_ps(wq, _mm256_loadu_ps(c->x + (m0 + r) * m->K + k), acc[r]);
        }
        for (int r = 0; r < mc; r++) extra[r] += b * c->xsum[(m0 + r) * m->groups + g];
      }
      for (int r = 0; r < mc; r++) c->out[(m0 + r) * m->N + n] = hsum8(acc[r]) + extra[r] + bias;
    }
  }
}

/* x rows → int8 per group with one scale per group; 4-bit groups of 64+ store each 64 values even-first (32 then 32 odd),
 * 32-value groups store 16 even then 16 odd, so they line up with the nibbles of one load. 8-bit keeps the natural order. */
static void quantize_activations(const float* x, int64_t M, int64_t K, int gs, int bits, int8_t* xq, float* xd, float* xe) {
  const int64_t groups = K / gs;
  const int chunk = gs == 32 ? 32 : 64;
  for (int64_t r = 0; r < M; r++) {
    for (int64_t g = 0; g < groups; g++) {
      const float* v = x + r * K + g * gs;
      float amax = 0;
      for (int i = 0; i < gs; i++) amax = fmaxf(amax, fabsf(v[i]));
      float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
      int8_t* o = xq + r * K + g * gs;
      int sum = 0;
      for (int i = 0; i < gs; i++) {
        int qv = (int)lrintf(v[i] * inv);
        int within = i % chunk, base = i - within;
        int at = bits == 4 ? base + (within & 1 ? chunk / 2 + within / 2 : within / 2) : i;
        o[at] = (int8_t)qv;
        sum += qv;
      }
      xd[r * groups + g] = d;
      xe[r * groups + g] = d * 128.0f * (float)sum;
    }
  }
}
#endif

/* Row n of a quantized matrix dotted with x (K floats) without materialising the row. Each weight is formed and summed
 * exactly as dbc_dequant_row then dbc_dot_f32 would (same values, same 8 lanes, same order), so both give the same bits:
 * a row of an expert many rows picked (unpacked once) and of one few rows picked (dotted directly) agree. */
float dbc_qrow_dot(const qmatrix* m, int64_t n, const float* x) {
  const uint32_t* row = m->w + n * m->words_per_row;
  const int gs = m->gs;
#ifdef DBC_AVX2
  /* 4-bit words widened 8 values at a time; products and sums as the scalar lanes (multiply, then add: no FMA) */
  if (m->mx || m->bits == 4) {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), low4 = _mm256_set1_epi32(0xf), low3 = _mm256_set1_epi32(7);
    const __m256 magnitudes = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t g = 0; g < m->groups; g++) {
      __m256 sv, bv = _mm256_setzero_ps();
      if (m->mx) sv = _mm256_set1_ps(e8m0(((const uint8_t*)m->scales)[n * m->groups + g]));
      else sv = _mm256_set1_ps(load_f32(m->scales, m->sdtype, n * m->groups + g)), bv = _mm256_set1_ps(load_f32(m->biases, m->sdtype, n * m->groups + g));
      for (int i = 0; i < gs; i += 8) {
        const int64_t k = g * gs + i;
        const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)row[k / 8]), shifts), low4);
        __m256 w;
        if (m->mx) {
          /* E2M1: magnitude from the low 3 bits, bit 3 is the sign */
          const __m256 mag = _mm256_permutevar8x32_ps(magnitudes, _mm256_and_si256(q, low3));
          const __m256 sign = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_andnot_si256(low3, q), 28));
          w = _mm256_mul_ps(_mm256_xor_ps(mag, sign), sv);
        } else {
          w = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), sv), bv);
        }
        acc = _mm256_add_ps(acc, _mm256_mul_ps(w, _mm256_loadu_ps(x + k)));
      }
    }
    float l[8];
    _mm256_storeu_ps(l, acc);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  }
#endif
  float lanes[8] = {0}, w[128];
  for (int64_t g = 0; g < m->groups; g++) {
    unpack_q(row, m->bits, g * gs, gs, w);
    if (m->mx) {
      float s = e8m0(((const uint8_t*)m->scales)[n * m->groups + g]);
      for (int i = 0; i < gs; i++) w[i] = FP4_E2M1[(int)w[i]] * s;
    } else {
      float s = load_f32(m->scales, m->sdtype, n * m->groups + g), b = load_f32(m->biases, m->sdtype, n * m->groups + g);
      for (int i = 0; i < gs; i++) w[i] = w[i] * s + b;
    }
    const float* xg = x + g * gs;
    for (int i = 0; i < gs; i += 8)
      for (int j = 0; j < 8; j++) lanes[j] += w[i + j] * xg[i + j];
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

/* Any format: dequantize each weight row once, dot it with every row of x. */
static void qgemv_dequant_range(void* p, int64_t nb, int64_t ne) {
  const qlinear_ctx* c = p;
  const qmatrix* m = c->m;
  float* w = dbc_scratch_alloc((size_t)m->K * sizeof(float));
  for (int64_t n = nb; n < ne; n++) {
    dbc_dequant_row(m, n, w);
    float bias = c->bias ? load_f32(c->bias, c->bias_dtype, n) : 0.0f;
    for (int64_t r = 0; r < c->M; r++) c->out[r * m->N + n] = dbc_dot_f32(w, c->x + r * m->K, m->K) + bias;
  }
  dbc_scratch_free(w);
}

typedef struct { const qmatrix* m; int64_t n0; float* dst; } qdequant_ctx;
static void qdequant_range(void* p, int64_t b, int64_t e) {
  qdequant_ctx* c = p;
  for (int64_t r = b; r < e; r++) dbc_dequant_row(c->m, c->n0 + r, c->dst + r * c->m->K);
}

int dbc_quantized_prepare(void* wh, void* sh, void* bh, int gs, int bits) {
  qmatrix m;
  int rc = qmatrix_check(wh, sh, bh, gs, bits, "quantized_prepare", &m);
  if (rc || m.mx || !dbc_q_avx512_supports(bits, gs, m.K)) return rc;
  return dbc_q_avx512_prepare(&m, wh); /* 1: repacked */
}

int dbc_quantized_linear(void* xh, void* wh, void* sh, void* bh, void* biash, int gs, int bits, int precise, void** out) {
  qmatrix m;
  dbc_tensor *x, *bias = NULL, *o;
  int rc = qmatrix_check(wh, sh, bh, gs, bits, "quantized_linear", &m);
  if (rc || (rc = dbc_check(xh, "quantized_linear x", &x))) return rc;
  if (biash && (rc = dbc_check(biash, "quantized_linear bias", &bias))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "quantized_linear: out is null");
  int64_t M;
  if ((rc = dbc_linear_prepare(x, m.N, m.K, bias, "quantized_linear", &o, &M))) return rc;
  const float* xp = tdata(x);
  float* op = tdata(o);
  /* AVX-512 VNNI: one int8 kernel for every batch size (decode rows and prompt chunks alike) */
  if (!m.mx && !precise && dbc_q_avx512_supports(bits, gs, m.K)) {
    if ((rc = dbc_q_avx512_linear(&m, wh, xp, M, bias ? tdata(bias) : NULL, bias ? bias->dtype : 0, op))) { dbc_tensor_free(o); return rc; }
    *out = o;
    return DBC_OK;
  }
#ifdef DBC_AVX2
  const int int8_rows = !m.mx && !precise && (bits == 4 || bits == 8); /* measured faster than dequantize + GEMM at every M */
#else
  const int int8_rows = 0;
#endif
  if (M >= QGEMM_MIN_ROWS && !int8_rows) {
    float* block = dbc_scratch_alloc((size_t)QGEMM_BLOCK_N * (size_t)m.K * sizeof(float));
    if (!block) { dbc_tensor_free(o); return dbc_fail(DBC_E_NOMEM, "quantized_linear: out of memory"); }
    for (int64_t n0 = 0; n0 < m.N; n0 += QGEMM_BLOCK_N) {
      int64_t nr = m.N - n0 < QGEMM_BLOCK_N ? m.N - n0 : QGEMM_BLOCK_N;
      qdequant_ctx dc = {&m, n0, block};
      dbc_parallel_for(nr, 8, qdequant_range, &dc);
      dbc_gemm_f32_block(xp, block, M, nr, m.K, op + n0, m.N);
    }
    dbc_scratch_free(block);
    if (bias)
      for (int64_t r = 0; r < M; r++)
        for (int64_t n = 0; n < m.N; n++) op[r * m.N + n] += load_f32(tdata(bias), bias->dtype, n);
    *out = o;
    return DBC_OK;
  }
  if (m.mx) { /* mxfp4: rows dequantized to floats (E2M1 has no integer form to pair with int8 activations) */
    qlinear_ctx c = {&m, xp, M, bias ? tdata(bias) : NULL, bias ? bias->dtype : 0, op, NULL, NULL, NULL, NULL};
    dbc_parallel_for(m.N, 16, qgemv_dequant_range, &c);
    *out = o;
    return DBC_OK;
  }
  float* xsum = dbc_scratch_alloc((size_t)(M * m.groups) * sizeof(float));
  for (int64_t r = 0; r < M; r++)
    for (int64_t g = 0; g < m.groups; g++) {
      float s = 0;
      for (int i = 0; i < gs; i++) s += xp[r * m.K + g * gs + i];
      xsum[r * m.groups + g] = s;
    }
  qlinear_ctx c = {&m, xp, M, bias ? tdata(bias) : NULL, bias ? bias->dtype : 0, op, xsum, NULL, NULL, NULL};
#ifdef DBC_AVX2
  if ((bits == 4 || bits == 8) && !precise) {
    int8_t* xq = dbc_scratch_alloc((size_t)(M * m.K));
    float* xd = dbc_scratch_alloc((size_t)(M * m.groups) * sizeof(float));
    float* xe = dbc_scratch_alloc((size_t)(M * m.groups) * sizeof(float));
    quantize_activations(xp, M, m.K, gs, bits, xq, xd, xe);
    c.xq = xq, c.xd = xd, c.xe = xe;
    dbc_parallel_for(m.N, 16, qgemv_int8_range, &c);
    dbc_scratch_free(xq), dbc_scratch_free(xd), dbc_scratch_free(xe);
    dbc_scratch_free(xsum);
    *out = o;
    return DBC_OK;
  }
#endif
#ifdef DBC_AVX2
  if (bits == 4) dbc_parallel_for(m.N, 16, qgemv_precise4_range, &c);
  else
#endif
    dbc_parallel_for(m.N, 16, qgemv_float_range, &c);
  dbc_scratch_free(xsum);
  *out = o;
  return DBC_OK;
}
