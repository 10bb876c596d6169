/* quant.c — MLX affine quantization (design/mlx-c.md §4): w[n,k] = scale[n,k/gs]·q + bias[n,k/gs], q packed LSB-first
 * in u32 words (bits 2,3,4,5,6,8; 3/5/6-bit values straddle words). Quantized linear, dequantize and embedding gather.
 * The decode kernels for 4 and 8 bits quantize x to int8 per 32-element block and use integer dot products (as llama.cpp's
 * Q8 activations do): it keeps the weight stream, not the arithmetic, as the bottleneck. */
#include <math.h>
#include <stdlib.h>
#include "internal.h"

#define QGEMV_MAX_ROWS 8
#define QGEMM_MIN_ROWS 16
#define QGEMM_BLOCK_N 256

void dbc_gemm_f32_block(const float* x, const float* wblock, int64_t M, int64_t nrows, int64_t K, float* out, int64_t ldo);
int dbc_linear_prepare(dbc_tensor* x, int64_t N, int64_t K, dbc_tensor* bias, const char* name, dbc_tensor** out, int64_t* M);

typedef struct {
  const uint32_t* w;
  const void* scales;
  const void* biases;
  int sdtype;
  int64_t N, K, words_per_row, groups;
  int gs, bits;
} qmatrix;

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

static void dequant_row(const qmatrix* m, int64_t n, float* out) {
  const uint32_t* row = m->w + n * m->words_per_row;
  for (int64_t g = 0; g < m->groups; g++) {
    float s = load_f32(m->scales, m->sdtype, n * m->groups + g), b = load_f32(m->biases, m->sdtype, n * m->groups + g);
    float* o = out + g * m->gs;
    unpack_q(row, m->bits, g * m->gs, m->gs, o);
    for (int i = 0; i < m->gs; i++) o[i] = o[i] * s + b;
  }
}

static int qmatrix_check(void* wh, void* sh, void* bh, int gs, int bits, const char* name, qmatrix* m) {
  dbc_tensor *w, *s, *b;
  int rc;
  if ((rc = dbc_check(wh, name, &w)) || (rc = dbc_check(sh, name, &s)) || (rc = dbc_check(bh, name, &b))) return rc;
  if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8)
    return dbc_fail(DBC_E_ARG, "%s: unsupported bits %d (2, 3, 4, 5, 6 or 8)", name, bits);
  if (gs != 32 && gs != 64 && gs != 128) return dbc_fail(DBC_E_ARG, "%s: unsupported group size %d (32, 64 or 128)", name, gs);
  if (w->dtype != DBC_U32 || w->ndim != 2) return dbc_fail(DBC_E_ARG, "%s: packed weight must be u32 [N, K*bits/32], got %s", name, dbc_dtype_name(w->dtype));
  if ((rc = dbc_check_float(s, name)) || (rc = dbc_check_float(b, name))) return rc;
  if (s->dtype != b->dtype) return dbc_fail(DBC_E_ARG, "%s: scales and biases differ in dtype", name);
  int64_t N = w->shape[0], K = w->shape[1] * 32 / bits;
  if ((w->shape[1] * 32) % bits) return dbc_fail(DBC_E_ARG, "%s: packed width %lld is not a whole number of %d-bit values", name, (long long)w->shape[1], bits);
  if (K % gs) return dbc_fail(DBC_E_ARG, "%s: input size %lld is not a multiple of group size %d", name, (long long)K, gs);
  if (s->ndim != 2 || b->ndim != 2 || s->shape[0] != N || b->shape[0] != N || s->shape[1] != K / gs || b->shape[1] != K / gs)
    return dbc_fail(DBC_E_ARG, "%s: scales/biases must be [%lld, %lld] for a [%lld, %lld] matrix at group size %d", name, (long long)N,
                    (long long)(K / gs), (long long)N, (long long)K, gs);
  *m = (qmatrix){tdata(w), tdata(s), tdata(b), s->dtype, N, K, w->shape[1], K / gs, gs, bits};
  return DBC_OK;
}

int dbc_dequantize(void* wh, void* sh, void* bh, int gs, int bits, void** out) {
  qmatrix m;
  dbc_tensor* o;
  int rc = qmatrix_check(wh, sh, bh, gs, bits, "dequantize", &m);
  if (rc) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "dequantize: out is null");
  int64_t shape[2] = {m.N, m.K};
  if ((rc = dbc_new(DBC_F32, 2, shape, &o))) return rc;
  for (int64_t n = 0; n < m.N; n++) dequant_row(&m, n, (float*)tdata(o) + n * m.K);
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
  for (int64_t i = 0; i < n; i++) dequant_row(&m, id[i], (float*)tdata(o) + i * m.K);
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

static void qgemv_int8_range(void* p, int64_t nb, int64_t ne) {
  const qlinear_ctx* c = p;
  const qmatrix* m = c->m;
  const int64_t K = m->K, blocks = K / 32, per_group = m->gs / 32;
  const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char)0x80);
  for (int64_t m0 = 0; m0 < c->M; m0 += QGEMV_MAX_ROWS) {
    const int mc = (int)(c->M - m0 < QGEMV_MAX_ROWS ? c->M - m0 : QGEMV_MAX_ROWS);
    for (int64_t n = nb; n < ne; n++) {
      const uint8_t* row = (const uint8_t*)(m->w + n * m->words_per_row);
      __m256 acc[QGEMV_MAX_ROWS];
      float extra[QGEMV_MAX_ROWS];
      for (int r = 0; r < mc; r++) acc[r] = _mm256_setzero_ps(), extra[r] = 0;
      for (int64_t g = 0; g < m->groups; g++) {
        const float s = load_f32(m->scales, m->sdtype, n * m->groups + g), b = load_f32(m->biases, m->sdtype, n * m->groups + g);
        for (int64_t bi = g * per_group; bi < (g + 1) * per_group; bi++) {
          __m256i q;
          if (m->bits == 4) {
            __m128i v = _mm_loadu_si128((const __m128i*)(row + bi * 16));
            __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
            q = _mm256_and_si256(both, low4);
          } else {
            q = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(row + bi * 32)), flip); /* q - 128 as int8 */
          }
          const __m256i qa = m->bits == 4 ? q : _mm256_sign_epi8(q, q);
          for (int r = 0; r < mc; r++) {
            __m256i xv = _mm256_loadu_si256((const __m256i*)(c->xq + (m0 + r) * K + bi * 32));
            if (m->bits == 8) xv = _mm256_sign_epi8(xv, q);
            __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(qa, xv), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s * c->xd[(m0 + r) * blocks + bi]), acc[r]);
          }
        }
        for (int r = 0; r < mc; r++) {
          extra[r] += b * c->xsum[(m0 + r) * m->groups + g];
          if (m->bits == 8) extra[r] += s * c->xe[(m0 + r) * m->groups + g];
        }
      }
      const float bias = c->bias ? load_f32(c->bias, c->bias_dtype, n) : 0.0f;
      for (int r = 0; r < mc; r++) c->out[(m0 + r) * m->N + n] = hsum8(acc[r]) + extra[r] + bias;
    }
  }
}

/* x rows → int8 per 32-block (4-bit: even elements first so they meet the low nibbles), block scales, and 8-bit corrections */
static void quantize_activations(const float* x, int64_t M, int64_t K, int gs, int bits, int8_t* xq, float* xd, float* xe) {
  const int64_t blocks = K / 32, groups = K / gs, per_group = gs / 32;
  for (int64_t r = 0; r < M; r++) {
    for (int64_t bi = 0; bi < blocks; bi++) {
      const float* v = x + r * K + bi * 32;
      float amax = 0;
      for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
      float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
      int8_t* o = xq + r * K + bi * 32;
      int sum = 0;
      for (int i = 0; i < 32; i++) {
        int qv = (int)lrintf(v[i] * inv);
        int at = bits == 4 ? (i & 1 ? 16 + i / 2 : i / 2) : i;
        o[at] = (int8_t)qv;
        sum += qv;
      }
      xd[r * blocks + bi] = d;
      if (bits == 8) {
        int64_t g = bi / per_group;
        if (bi % per_group == 0) xe[r * groups + g] = 0;
        xe[r * groups + g] += d * 128.0f * (float)sum;
      }
    }
  }
}
#endif

typedef struct { const qmatrix* m; int64_t n0; float* dst; } qdequant_ctx;
static void qdequant_range(void* p, int64_t b, int64_t e) {
  qdequant_ctx* c = p;
  for (int64_t r = b; r < e; r++) dequant_row(c->m, c->n0 + r, c->dst + r * c->m->K);
}

int dbc_quantized_linear(void* xh, void* wh, void* sh, void* bh, void* biash, int gs, int bits, void** out) {
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
  if (M >= QGEMM_MIN_ROWS) {
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
  float* xsum = dbc_scratch_alloc((size_t)(M * m.groups) * sizeof(float));
  for (int64_t r = 0; r < M; r++)
    for (int64_t g = 0; g < m.groups; g++) {
      float s = 0;
      for (int i = 0; i < gs; i++) s += xp[r * m.K + g * gs + i];
      xsum[r * m.groups + g] = s;
    }
  qlinear_ctx c = {&m, xp, M, bias ? tdata(bias) : NULL, bias ? bias->dtype : 0, op, xsum, NULL, NULL, NULL};
#ifdef DBC_AVX2
  if (bits == 4 || bits == 8) {
    int8_t* xq = dbc_scratch_alloc((size_t)(M * m.K));
    float* xd = dbc_scratch_alloc((size_t)(M * (m.K / 32)) * sizeof(float));
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
  dbc_parallel_for(m.N, 16, qgemv_float_range, &c);
  dbc_scratch_free(xsum);
  *out = o;
  return DBC_OK;
}
