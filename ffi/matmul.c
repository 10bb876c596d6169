/* matmul.c — float linear layers: x [M, K] · wᵀ with w [N, K] in f32/f16/bf16. Small M (decode) runs our threaded
 * matrix-vector kernels, which stream the weights once for all rows. Larger M (prefill): bf16 weights on a CPU with
 * AVX-512 BF16 take our VDPBF16PS kernel below; the rest convert weight blocks to f32 and use CBLAS. */
#include <stdlib.h>
#ifdef DBC_ACCELERATE
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#endif
#include "internal.h"
#include "quant_avx512.h"

#define GEMV_MAX_ROWS 8      /* rows of x handled per pass of the weight stream */
#define GEMM_MIN_ROWS 16     /* from here on, a GEMM kernel (ours for bf16, else sgemm on converted weights) wins */
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

/* ---- bf16 weights × many rows (prefill) on AVX-512 BF16 ----
 * VDPBF16PS multiplies pairs of bf16 and adds them to f32 lanes, so it reads the weights in their own layout (no f32
 * copy, no packing). x is split once per call into two bf16 terms, hi = bf16(x) and lo = bf16(x − hi), which together
 * carry x to 2⁻¹⁸ of its value (about f32's own rounding over a dot product); each product is exact in f32 and summed in
 * f32. One bf16 term alone would be 1.8× faster but rounds x to 2⁻⁹ (0.15% rms per linear): BF16_X_TERMS = 1.
 * Each accumulator holds 16 lanes of partial sums along K for one (row of x, row of w); a tile's accumulators are
 * reduced 16 at a time by one shuffle tree, in the same order wherever a row falls, so a row's result does not depend
 * on M. Measured (Zen 5, one thread, Qwen3-0.6B's projections at 128 rows): 3.5× OpenBLAS sgemm on converted weights
 * with one term, 1.8× with two; and the work runs on our pool, where OpenBLAS's threads fought our spinning workers. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h> /* internal.h includes it only for AVX2 builds; the portable build dispatches here at run time */
#define ZBF __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))
#ifndef BF16_X_TERMS
#define BF16_X_TERMS 2
#endif
#define BF_MR 2     /* rows of x per tile */
#define BF_NR 8     /* rows of w per tile: 16 accumulators, 2 x vectors and a w vector in registers */
#define BF_KB 1024  /* values of K per block: a tile's w (8 × 2 KiB) stays in L1 while every row of x passes */
#define BF_MB 128   /* rows of x per block: their bf16 terms of one K block (512 KiB) stay in L2 */

/* AVX-512 as quant_avx512.c finds it (DBC_NO_AVX512 turns both off) and AVX512_BF16: CPUID leaf 7, subleaf 1, EAX bit 5
 * (asked directly: older compilers' __builtin_cpu_supports has no name for it). */
static int bf16_gemm_available(void) {
  static int state = -1;
  if (state < 0) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    state = dbc_q_avx512_available() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1);
  }
  return state;
}

typedef struct {
  const float* x;     /* [M, K] */
  uint16_t* xb;       /* [BF16_X_TERMS, M, KP]: x's bf16 terms, zero from K to KP */
  const uint16_t* w;  /* [N, K] */
  int64_t M, N, K, KP;
  const void* bias;
  int bias_dtype;
  float* out;
} bf16_ctx;

/* Rows [b, e) of x into their bf16 terms (round to nearest even). */
ZBF static void bf16_split_x(void* p, int64_t b, int64_t e) {
  const bf16_ctx* c = p;
  for (int64_t m = b; m < e; m++) {
    const float* src = c->x + m * c->K;
    uint16_t* hi = c->xb + m * c->KP;
    for (int64_t k = 0; k < c->KP; k += 16) {
      const __mmask16 mask = c->K - k >= 16 ? 0xffff : c->K > k ? (__mmask16)((1u << (c->K - k)) - 1) : 0;
      const __m512 v = _mm512_maskz_loadu_ps(mask, src + k);
      const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
      _mm256_storeu_si256((__m256i*)(hi + k), h);
      if (BF16_X_TERMS == 2) {
        const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        _mm256_storeu_si256((__m256i*)(hi + c->M * c->KP + k), (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, back)));
      }
    }
  }
}

/* 16 accumulators a[i·4 + j] → one vector of their sums, lane i·4 + j. */
ZBF static inline __attribute__((always_inline)) __m512 bf16_reduce16(const __m512* a) {
  __m512 q[4];
  for (int i = 0; i < 4; i++) {
    const __m512* v = a + i * 4;
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
    q[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  } /* q[i]: in each 128-bit lane, partial sums of a[i·4 .. i·4+3] */
  const __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(q[0], q[1], 0x88), _mm512_shuffle_f32x4(q[0], q[1], 0xdd));
  const __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(q[2], q[3], 0x88), _mm512_shuffle_f32x4(q[2], q[3], 0xdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(t, u, 0x88), _mm512_shuffle_f32x4(t, u, 0xdd));
}

/* out[m0 .. m0+mr, n0 .. n0+nr) = (or += when not first) x · wᵀ over K values [k0, k1). The tile is always BF_MR × BF_NR:
 * rows past mr or nr repeat the last one and their sums are dropped. */
ZBF static void bf16_tile(const bf16_ctx* c, int64_t m0, int mr, int64_t n0, int nr, int64_t k0, int64_t k1, int first) {
  __m512 acc[BF_MR][BF_NR];
  for (int m = 0; m < BF_MR; m++)
    for (int n = 0; n < BF_NR; n++) acc[m][n] = _mm512_setzero_ps();
  const uint16_t* wr[BF_NR];
  const uint16_t* xr[BF16_X_TERMS][BF_MR];
  for (int n = 0; n < BF_NR; n++) wr[n] = c->w + (n0 + (n < nr ? n : nr - 1)) * c->K;
  for (int t = 0; t < BF16_X_TERMS; t++)
    for (int m = 0; m < BF_MR; m++) xr[t][m] = c->xb + (t * c->M + m0 + (m < mr ? m : mr - 1)) * c->KP;
  const int64_t whole = k0 + (k1 - k0) / 32 * 32;
  int64_t k = k0;
  for (; k < whole; k += 32)
    for (int t = 0; t < BF16_X_TERMS; t++) {
      __m512bh xv[BF_MR];
      for (int m = 0; m < BF_MR; m++) xv[m] = (__m512bh)_mm512_loadu_si512(xr[t][m] + k);
      for (int n = 0; n < BF_NR; n++) {
        const __m512bh w = (__m512bh)_mm512_loadu_si512(wr[n] + k);
        for (int m = 0; m < BF_MR; m++) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], xv[m], w);
      }
    }
  if (k < k1) { /* the rest of a row of w, read masked (x is zero-padded to 32) */
    const __mmask32 mask = (__mmask32)((1ull << (k1 - k)) - 1);
    for (int t = 0; t < BF16_X_TERMS; t++) {
      __m512bh xv[BF_MR];
      for (int m = 0; m < BF_MR; m++) xv[m] = (__m512bh)_mm512_loadu_si512(xr[t][m] + k);
      for (int n = 0; n < BF_NR; n++) {
        const __m512bh w = (__m512bh)_mm512_maskz_loadu_epi16(mask, wr[n] + k);
        for (int m = 0; m < BF_MR; m++) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], xv[m], w);
      }
    }
  }
  for (int ng = 0; ng < BF_NR; ng += 4) { /* 4 rows of w × BF_MR rows of x (zeros after) per reduction */
    __m512 a[16];
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 4; j++) a[i * 4 + j] = i < BF_MR ? acc[i][ng + j] : _mm512_setzero_ps();
    float s[16];
    _mm512_storeu_ps(s, bf16_reduce16(a));
    for (int i = 0; i < mr; i++) {
      float* o = c->out + (m0 + i) * c->N + n0 + ng;
      for (int j = 0; j < 4 && ng + j < nr; j++) o[j] = first ? s[i * 4 + j] : o[j] + s[i * 4 + j];
    }
  }
}

/* Tiles [b, e) of BF_NR rows of w: per block of rows of x and block of K, each tile of w passes over every tile of x. */
ZBF static void bf16_gemm_range(void* p, int64_t b, int64_t e) {
  const bf16_ctx* c = p;
  for (int64_t mb = 0; mb < c->M; mb += BF_MB) {
    const int64_t me = mb + BF_MB < c->M ? mb + BF_MB : c->M;
    for (int64_t k0 = 0; k0 < c->K; k0 += BF_KB) {
      const int64_t k1 = k0 + BF_KB < c->K ? k0 + BF_KB : c->K;
      for (int64_t t = b; t < e; t++) {
        const int64_t n0 = t * BF_NR;
        const int nr = (int)(c->N - n0 < BF_NR ? c->N - n0 : BF_NR);
        for (int64_t m0 = mb; m0 < me; m0 += BF_MR)
          bf16_tile(c, m0, (int)(me - m0 < BF_MR ? me - m0 : BF_MR), n0, nr, k0, k1, k0 == 0);
      }
    }
  }
  if (c->bias)
    for (int64_t m = 0; m < c->M; m++)
      for (int64_t n = b * BF_NR; n < e * BF_NR && n < c->N; n++) c->out[m * c->N + n] += load_f32(c->bias, c->bias_dtype, n);
}

/* 1 when computed here, 0 when this CPU (or DBC_NO_AVX512) leaves it to linear_gemm, or an error code. */
static int linear_bf16_gemm(const linear_ctx* c) {
  if (c->w_dtype != DBC_BF16 || c->K == 0 || !bf16_gemm_available()) return 0;
  const int64_t KP = (c->K + 31) / 32 * 32;
  uint16_t* xb = dbc_scratch_alloc((size_t)BF16_X_TERMS * (size_t)c->M * (size_t)KP * sizeof(uint16_t));
  if (!xb) return dbc_fail(DBC_E_NOMEM, "linear: out of memory for x's bf16 terms");
  bf16_ctx b = {c->x, xb, c->w, c->M, c->N, c->K, KP, c->bias, c->bias_dtype, c->out};
  dbc_parallel_for(c->M, 8, bf16_split_x, &b);
  dbc_parallel_for((c->N + BF_NR - 1) / BF_NR, 4, bf16_gemm_range, &b);
  dbc_scratch_free(xb);
  return 1;
}
#else
static int linear_bf16_gemm(const linear_ctx* c) { return 0; }
#endif

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
  if (M < GEMM_MIN_ROWS) dbc_parallel_for(c.N, 16, gemv_range, &c);
  else if ((rc = linear_bf16_gemm(&c)) < 0) {
    dbc_tensor_free(o);
    return rc;
  } else if (rc == 0) linear_gemm(&c);
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
