/* matmul.c — float linear layers: x [M, K] · wᵀ with w [N, K] in f32/f16/bf16. Small M (decode) runs our threaded
 * matrix-vector kernels, which stream the weights once for all rows; larger M converts weight blocks to f32 and uses CBLAS. */
#include <stdlib.h>
#ifdef DBC_ACCELERATE
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#endif
#include "internal.h"

#define GEMV_MAX_ROWS 8      /* rows of x handled per pass of the weight stream */
#define GEMM_MIN_ROWS 16     /* from here on, converting weights and calling sgemm wins */
#define GEMM_BLOCK_N 256     /* weight rows converted to f32 per sgemm call */

typedef struct {
  const float* x;   /* [M, K] */
  const void* w;    /* [N, K] */
  int w_dtype;
  const void* bias; /* [N] or NULL */
  int bias_dtype;
  int64_t M, N, K;
  float* out;       /* [M, N] */
} linear_ctx;

#ifdef DBC_AVX2
static inline __attribute__((always_inline)) __m256 load8(const void* w, int dtype, int64_t i) {
  if (dtype == DBC_F32) return _mm256_loadu_ps((const float*)w + i);
  __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)w + i));
  if (dtype == DBC_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}
static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

/* out[m, n] for n in [nb, ne), rows m in [m0, m0+MC); MC and DTYPE are constants after inlining (registers, no branches) */
static inline __attribute__((always_inline)) void gemv_rows(const linear_ctx* c, int64_t m0, const int MC, const int DTYPE,
                                                            int64_t nb, int64_t ne) {
  const int64_t K = c->K;
  const size_t es = DTYPE == DBC_F32 ? 4 : 2;
  const float* x[GEMV_MAX_ROWS];
  for (int m = 0; m < MC; m++) x[m] = c->x + (m0 + m) * K;
  for (int64_t n = nb; n < ne; n++) {
    const void* wrow = (const char*)c->w + (size_t)n * (size_t)K * es;
    float acc[GEMV_MAX_ROWS] = {0};
    int64_t k = 0;
#ifdef DBC_AVX2
    __m256 va[GEMV_MAX_ROWS], vb[GEMV_MAX_ROWS];
    for (int m = 0; m < MC; m++) va[m] = _mm256_setzero_ps(), vb[m] = _mm256_setzero_ps();
    for (; k + 16 <= K; k += 16) {
      _mm_prefetch((const char*)wrow + (size_t)k * es + 1024, _MM_HINT_T0);
      const __m256 w0 = load8(wrow, DTYPE, k), w1 = load8(wrow, DTYPE, k + 8);
      for (int m = 0; m < MC; m++) {
        va[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[m] + k), va[m]);
        vb[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[m] + k + 8), vb[m]);
      }
    }
    for (int m = 0; m < MC; m++) acc[m] = hsum8(_mm256_add_ps(va[m], vb[m]));
#else
    float lanes[GEMV_MAX_ROWS][8] = {{0}};
    for (; k + 8 <= K; k += 8) {
      float wv[8];
      for (int j = 0; j < 8; j++) wv[j] = load_f32(wrow, DTYPE, k + j);
      for (int m = 0; m < MC; m++)
        for (int j = 0; j < 8; j++) lanes[m][j] += wv[j] * x[m][k + j];
    }
    for (int m = 0; m < MC; m++)
      for (int j = 0; j < 8; j++) acc[m] += lanes[m][j];
#endif
    for (; k < K; k++) {
      const float wv = load_f32(wrow, DTYPE, k);
      for (int m = 0; m < MC; m++) acc[m] += wv * x[m][k];
    }
    const float b = c->bias ? load_f32(c->bias, c->bias_dtype, n) : 0.0f;
    for (int m = 0; m < MC; m++) c->out[(m0 + m) * c->N + n] = acc[m] + b;
  }
}

#define GEMV_CASES(DTYPE)                                  \
  switch (mc) {                                            \
    case 1: gemv_rows(c, m0, 1, DTYPE, nb, ne); break;     \
    case 2: gemv_rows(c, m0, 2, DTYPE, nb, ne); break;     \
    case 3: gemv_rows(c, m0, 3, DTYPE, nb, ne); break;     \
    default: gemv_rows(c, m0, 4, DTYPE, nb, ne); break;    \
  }

/* Weight rows outer, x rows in chunks of ≤ 4 inner: each weight row is streamed from memory once and reused from L1. */
static void gemv_range(void* p, int64_t nb0, int64_t ne0) {
  const linear_ctx* c = p;
  for (int64_t nb = nb0; nb < ne0; nb++) {
    const int64_t ne = nb + 1;
    for (int64_t m0 = 0; m0 < c->M; m0 += 4) {
      const int mc = (int)(c->M - m0 < 4 ? c->M - m0 : 4);
      if (c->w_dtype == DBC_F32) { GEMV_CASES(DBC_F32) }
      else if (c->w_dtype == DBC_BF16) { GEMV_CASES(DBC_BF16) }
      else { GEMV_CASES(DBC_F16) }
    }
  }
}

typedef struct { const void* w; int dtype; int64_t K; float* dst; } convert_rows_ctx;
static void convert_rows(void* p, int64_t b, int64_t e) {
  convert_rows_ctx* c = p;
  size_t es = dbc_dtype_size(c->dtype);
  for (int64_t r = b; r < e; r++) dbc_to_f32((const char*)c->w + (size_t)r * (size_t)c->K * es, c->dtype, c->dst + (r - 0) * c->K, c->K);
}

/* Shared by quant.c: out[M, N] = x[M, K] · W[N, K]ᵀ where W comes from a row producer into f32 blocks. */
void dbc_gemm_f32_block(const float* x, const float* wblock, int64_t M, int64_t nrows, int64_t K, float* out, int64_t ldo) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)nrows, (int)K, 1.0f, x, (int)K, wblock, (int)K, 0.0f, out,
              (int)ldo);
}

static void linear_gemm(const linear_ctx* c) {
  if (c->w_dtype == DBC_F32) {
    dbc_gemm_f32_block(c->x, c->w, c->M, c->N, c->K, c->out, c->N);
  } else {
    float* block = dbc_scratch_alloc((size_t)GEMM_BLOCK_N * (size_t)c->K * sizeof(float));
    size_t es = dbc_dtype_size(c->w_dtype);
    for (int64_t n0 = 0; n0 < c->N; n0 += GEMM_BLOCK_N) {
      int64_t nr = c->N - n0 < GEMM_BLOCK_N ? c->N - n0 : GEMM_BLOCK_N;
      convert_rows_ctx cc = {(const char*)c->w + (size_t)n0 * (size_t)c->K * es, c->w_dtype, c->K, block};
      dbc_parallel_for(nr, 16, convert_rows, &cc);
      dbc_gemm_f32_block(c->x, block, c->M, nr, c->K, c->out + n0, c->N);
    }
    dbc_scratch_free(block);
  }
  if (c->bias) {
    for (int64_t m = 0; m < c->M; m++)
      for (int64_t n = 0; n < c->N; n++) c->out[m * c->N + n] += load_f32(c->bias, c->bias_dtype, n);
  }
}

/* Validates x [..., K], w [N, K], bias [N]; allocates out [..., N]. Shared with quant.c. */
int dbc_linear_prepare(dbc_tensor* x, int64_t N, int64_t K, dbc_tensor* bias, const char* name, dbc_tensor** out, int64_t* M) {
  if (x->dtype != DBC_F32 || x->ndim < 1) return dbc_fail(DBC_E_ARG, "%s: x must be f32 [..., K]", name);
  if (x->shape[x->ndim - 1] != K)
    return dbc_fail(DBC_E_ARG, "%s: shape mismatch: x has %lld features, the weight expects %lld", name, (long long)x->shape[x->ndim - 1],
                    (long long)K);
  if (bias) {
    int rc = dbc_check_float(bias, name);
    if (rc) return rc;
    if (dbc_numel(bias) != N) return dbc_fail(DBC_E_ARG, "%s: bias has %lld elements, expected %lld", name, (long long)dbc_numel(bias), (long long)N);
  }
  int64_t shape[DBC_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
  shape[x->ndim - 1] = N;
  *M = K ? dbc_numel(x) / K : 0;
  return dbc_new(DBC_F32, x->ndim, shape, out);
}

int dbc_linear(void* xh, void* wh, void* bh, void** out) {
  dbc_tensor *x, *w, *b = NULL, *o;
  int rc;
  if ((rc = dbc_check(xh, "linear x", &x)) || (rc = dbc_check(wh, "linear weight", &w))) return rc;
  if (bh && (rc = dbc_check(bh, "linear bias", &b))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "linear: out is null");
  if ((rc = dbc_check_float(w, "linear weight"))) return rc;
  if (w->ndim != 2) return dbc_fail(DBC_E_ARG, "linear: weight must be [N, K]");
  int64_t M;
  if ((rc = dbc_linear_prepare(x, w->shape[0], w->shape[1], b, "linear", &o, &M))) return rc;
  linear_ctx c = {tdata(x), tdata(w), w->dtype, b ? tdata(b) : NULL, b ? b->dtype : 0, M, w->shape[0], w->shape[1], tdata(o)};
  if (M >= GEMM_MIN_ROWS) linear_gemm(&c);
  else dbc_parallel_for(c.N, 16, gemv_range, &c);
  *out = o;
  return DBC_OK;
}

int dbc_matmul(void* ah, void* bh, void** out) {
  dbc_tensor *a, *b, *o;
  int rc;
  if ((rc = dbc_check(ah, "matmul a", &a)) || (rc = dbc_check(bh, "matmul b", &b))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "matmul: out is null");
  if (a->dtype != DBC_F32 || b->dtype != DBC_F32 || a->ndim != 2 || b->ndim != 2)
    return dbc_fail(DBC_E_ARG, "matmul: a and b must be f32 matrices");
  if (a->shape[1] != b->shape[0])
    return dbc_fail(DBC_E_ARG, "matmul: shape mismatch [%lld, %lld] x [%lld, %lld]", (long long)a->shape[0], (long long)a->shape[1],
                    (long long)b->shape[0], (long long)b->shape[1]);
  int64_t shape[2] = {a->shape[0], b->shape[1]};
  if ((rc = dbc_new(DBC_F32, 2, shape, &o))) return rc;
  if (shape[0] && shape[1] && a->shape[1])
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)shape[0], (int)shape[1], (int)a->shape[1], 1.0f, tdata(a),
                (int)a->shape[1], tdata(b), (int)shape[1], 0.0f, tdata(o), (int)shape[1]);
  else memset(tdata(o), 0, (size_t)(shape[0] * shape[1]) * 4);
  *out = o;
  return DBC_OK;
}
