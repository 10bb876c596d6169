/* quant_avx512.c — 4- and 8-bit MLX-affine linear for any number of rows of x on x86-64 with AVX-512 VNNI.
 *
 * x is quantized to int8 per 64 values (one scale each) and every product is an integer dot (vpdpbusd: u8 weights × s8
 * x), then scaled in float. Two layouts:
 * - 8-bit: a group of 64 is one 512-bit register on both sides, so a (weight row, x row, group) is one vpdpbusd, one
 *   convert and one FMA with the scale product s·d. Tiles of 4 weight rows × up to 4 x rows keep 16 accumulators in
 *   registers: a weight group is loaded once for 4 x rows, an x group once for 4 weight rows.
 * - 4-bit: each lane of an accumulator is one output row (see "16 output rows per vector" below), from a copy of the
 *   weights made once in that layout, so the float work is a few vector operations per 16 outputs and needs no
 *   horizontal sums.
 * Rows of x go in blocks so that a block's int8 copy stays in L2 while every weight row of the thread's range passes.
 *
 * Each output is summed in the same order whatever the number of rows, so a row's result does not depend on the batch
 * it came in (batched decode equals unbatched, bit for bit). Built for every x86-64 target (function attributes) and
 * chosen at run time when the CPU has the instructions; DBC_NO_AVX512=1 turns it off (to compare kernels). */
#include <stdlib.h>
#include "internal.h"
#include "quant_avx512.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h> /* internal.h includes it only for AVX2 builds; a generic (-mno-avx2) build still dispatches here */
#define Z512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/* Rows of x per block: 32 rows of a 14,336-wide input are 448 KiB of int8, within a core's L2. */
#define X_BLOCK 32
#define TILE_N 4
#define TILE_M 4

int dbc_q_avx512_available(void) {
  static int state = -1;
  if (state < 0) {
    const char* off = getenv("DBC_NO_AVX512");
    __builtin_cpu_init();
    state = !(off && *off && strcmp(off, "0")) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
  }
  return state;
}

int dbc_q_avx512_supports(int bits, int gs, int64_t K) {
  return (bits == 4 || bits == 8) && (gs == 64 || gs == 128) && K % gs == 0 && dbc_q_avx512_available();
}

/* The scale of n values of x (a multiple of 16), max |x| / 127, goes to *d and their float sum to *sum. */
Z512 INLINE __m512 group_scale(const float* v, int n, float* d, float* sum) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  __m512 amax = _mm512_setzero_ps(), total = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __m512 a = _mm512_loadu_ps(v + i);
    amax = _mm512_max_ps(amax, _mm512_andnot_ps(sign, a));
    total = _mm512_add_ps(total, a);
  }
  const float scale = _mm512_reduce_max_ps(amax) / 127.0f;
  *d = scale;
  *sum = _mm512_reduce_add_ps(total);
  return _mm512_set1_ps(scale > 0 ? 1.0f / scale : 0.0f); /* what x is multiplied by before rounding */
}

/* n values of x → n int8 (round to nearest even, as lrintf) with one scale (group_scale). */
Z512 INLINE void quantize_group(const float* v, int n, int8_t* q, float* d, float* sum) {
  const __m512 inv = group_scale(v, n, d, sum);
  for (int i = 0; i < n; i += 16)
    _mm_storeu_si128((__m128i*)(q + i), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + i), inv))));
}

/* One row of x → int8 per group of gs, natural order (the 8-bit kernel's layout). */
Z512 INLINE void quantize_row(const float* x, int64_t K, int gs, int8_t* q, float* d, float* sum) {
  for (int64_t g = 0; g < K / gs; g++) quantize_group(x + g * gs, gs, q + g * gs, d + g, sum + g);
}

Z512 INLINE float dot_groups(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc);
  float tail = 0;
  for (; k < n; k++) tail += a[k] * b[k];
  return _mm512_reduce_add_ps(acc) + tail;
}

/* x as int8 for one call: M·K values, and a scale and a float sum for each of a row's `groups` groups. */
typedef struct { int8_t* q; float* d; float* sum; } x8;
static void x8_free(x8* x) { dbc_scratch_free(x->q), dbc_scratch_free(x->d), dbc_scratch_free(x->sum); }
static int x8_alloc(int64_t M, int64_t K, int64_t groups, x8* x) {
  *x = (x8){dbc_scratch_alloc((size_t)(M * K)), dbc_scratch_alloc((size_t)(M * groups) * sizeof(float)), dbc_scratch_alloc((size_t)(M * groups) * sizeof(float))};
  if (x->q && x->d && x->sum) return DBC_OK;
  x8_free(x);
  return dbc_fail(DBC_E_NOMEM, "quantized_linear: out of memory");
}

typedef struct {
  const qmatrix* m;
  int64_t M;
  const int8_t* xq;   /* [M, K] */
  const float* xd;    /* [M, groups] */
  const float* xsum;  /* [M, groups] */
  const void* bias;
  int bias_dtype;
  float* out;         /* [M, N] */
} zctx;

/* 8-bit: out[m0..m0+MR, n0..n0+NR]; s and b hold the NR rows' scales and biases as floats, sd is scratch for the
 * products. A group of GS is GS / 64 registers. */
Z512 INLINE void tile(const zctx* c, int64_t n0, int64_t m0, const int NR, const int MR, const int GS, const float* s,
                      const float* b, float* sd) {
  const qmatrix* m = c->m;
  const int64_t K = m->K, groups = m->groups;
  const int CH = GS / 64;
  for (int i = 0; i < NR; i++)
    for (int r = 0; r < MR; r++) {
      const float* si = s + i * groups;
      const float* dr = c->xd + (m0 + r) * groups;
      float* o = sd + (i * MR + r) * groups;
      int64_t g = 0;
      for (; g + 16 <= groups; g += 16) _mm512_storeu_ps(o + g, _mm512_mul_ps(_mm512_loadu_ps(si + g), _mm512_loadu_ps(dr + g)));
      for (; g < groups; g++) o[g] = si[g] * dr[g];
    }
  const uint8_t* rows[TILE_N];
  for (int i = 0; i < NR; i++) rows[i] = (const uint8_t*)(m->w + (n0 + i) * m->words_per_row);
  __m512 acc[TILE_N][TILE_M];
  for (int i = 0; i < NR; i++)
    for (int r = 0; r < MR; r++) acc[i][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; g++) {
    __m512i w[TILE_N][2];
    for (int i = 0; i < NR; i++)
      for (int h = 0; h < CH; h++) w[i][h] = _mm512_loadu_si512(rows[i] + g * GS + h * 64);
    for (int r = 0; r < MR; r++) {
      const int8_t* xg = c->xq + (m0 + r) * K + g * GS;
      const __m512i x0 = _mm512_loadu_si512(xg);
      const __m512i x1 = CH == 2 ? _mm512_loadu_si512(xg + 64) : x0;
      for (int i = 0; i < NR; i++) {
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[i][0], x0);
        if (CH == 2) dot = _mm512_dpbusd_epi32(dot, w[i][1], x1);
        acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(sd[(i * MR + r) * groups + g]), acc[i][r]);
      }
    }
  }
  for (int i = 0; i < NR; i++) {
    const float bias = c->bias ? load_f32(c->bias, c->bias_dtype, n0 + i) : 0.0f;
    for (int r = 0; r < MR; r++)
      c->out[(m0 + r) * m->N + n0 + i] =
          _mm512_reduce_add_ps(acc[i][r]) + dot_groups(b + i * groups, c->xsum + (m0 + r) * groups, groups) + bias;
  }
}

#define TILE_MR(N0, NR, S, B)                                         \
  switch (mr) {                                                       \
    case 1: tile(c, N0, m0, NR, 1, GS, S, B, sd); break;        \
    case 2: tile(c, N0, m0, NR, 2, GS, S, B, sd); break;        \
    case 3: tile(c, N0, m0, NR, 3, GS, S, B, sd); break;        \
    default: tile(c, N0, m0, NR, 4, GS, S, B, sd); break;       \
  }

Z512 INLINE void range_for(const zctx* c, int64_t nb, int64_t ne, const int GS) {
  const qmatrix* m = c->m;
  const int64_t groups = m->groups;
  const size_t ssize = dbc_dtype_size(m->sdtype);
  float* s = dbc_scratch_alloc((size_t)(TILE_N * groups) * sizeof(float) * 2 + (size_t)(TILE_N * TILE_M * groups) * sizeof(float));
  float* b = s + TILE_N * groups;
  float* sd = b + TILE_N * groups;
  for (int64_t xb = 0; xb < c->M; xb += X_BLOCK) {
    const int64_t xe = xb + X_BLOCK < c->M ? xb + X_BLOCK : c->M;
    for (int64_t n0 = nb; n0 < ne; n0 += TILE_N) {
      const int nr = (int)(ne - n0 < TILE_N ? ne - n0 : TILE_N);
      dbc_to_f32((const char*)m->scales + (size_t)(n0 * groups) * ssize, m->sdtype, s, nr * groups);
      dbc_to_f32((const char*)m->biases + (size_t)(n0 * groups) * ssize, m->sdtype, b, nr * groups);
      for (int64_t m0 = xb; m0 < xe; m0 += TILE_M) {
        const int mr = (int)(xe - m0 < TILE_M ? xe - m0 : TILE_M);
        if (nr == TILE_N) {
          TILE_MR(n0, TILE_N, s, b)
        } else {
          /* the range's last rows one at a time (N is rarely not a multiple of 4) */
          for (int i = 0; i < nr; i++) TILE_MR(n0 + i, 1, s + i * groups, b + i * groups)
        }
      }
    }
  }
  dbc_scratch_free(s);
}

Z512 static void range_q8_g64(void* p, int64_t nb, int64_t ne) { range_for(p, nb, ne, 64); }
Z512 static void range_q8_g128(void* p, int64_t nb, int64_t ne) { range_for(p, nb, ne, 128); }

/* ---- 4-bit weights, 16 output rows per vector ----
 * Each 32-bit lane of an accumulator belongs to one output row, as in a float GEMM: a vector holds dword c of one group of
 * 16 consecutive weight rows, and the 4 x values that dword's nibbles pair with reach all lanes through vpdpbusd's own
 * broadcast. A group's integer dots then land in 16 lanes at once and its float work (convert, scale, bias) is a few
 * vector operations for 16 outputs, with no horizontal sums. The layout is made once per weight (dbc_derived_get):
 * blocks of 16 rows (zero rows pad the last), each group of a block 8 vectors (512 bytes), then each block's scales
 * and biases 16 to a scale group, in their own dtype. */
#define ROWS 16
#define GROUP_W_BYTES 512
#define PREFETCH_AHEAD 2048

/* x of one group of 64, as the weights pair with it: 4-byte chunk v = 2c + h holds the values 8c + h + {0, 2, 4, 6}, the
 * ones packed dword c carries in its low (h = 0) or high nibbles. */
Z512 static void quantize_row_chunks(const float* x, int64_t K, int8_t* q, float* d, float* sum) {
  /* Within each 8 bytes, byte 4h + b of the chunk order is natural byte 2b + h: one in-lane byte shuffle. */
  const __m512i order = _mm512_set4_epi32(0x0f0d0b09, 0x0e0c0a08, 0x07050301, 0x06040200);
  for (int64_t g = 0; g < K / 64; g++) {
    const float* v = x + g * 64;
    const __m512 inv = group_scale(v, 64, d + g, sum + g);
    __m512i natural = _mm512_castsi128_si512(_mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v), inv))));
    for (int i = 1; i < 4; i++) {
      const __m128i part = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + 16 * i), inv)));
      natural = i == 1 ? _mm512_inserti32x4(natural, part, 1) : i == 2 ? _mm512_inserti32x4(natural, part, 2) : _mm512_inserti32x4(natural, part, 3);
    }
    _mm512_storeu_si512(q + g * 64, _mm512_shuffle_epi8(natural, order));
  }
}

typedef struct {
  const qmatrix* m;
  int64_t blocks, groups, sgroups; /* 16-row blocks, groups of 64, scale groups */
  size_t sbytes;                   /* bytes of one scale */
} rows16_shape;

INLINE rows16_shape shape_of(const qmatrix* m) {
  return (rows16_shape){m, (m->N + ROWS - 1) / ROWS, m->K / 64, m->groups, dbc_dtype_size(m->sdtype)};
}
INLINE int64_t weight_bytes16(const rows16_shape* s) { return s->blocks * s->groups * GROUP_W_BYTES; }
INLINE int64_t scale_bytes16(const rows16_shape* s) { return s->blocks * s->sgroups * ROWS * (int64_t)s->sbytes; }

typedef struct { rows16_shape s; const uint8_t* src; uint8_t* dst; } repack_ctx;
Z512 static void repack_blocks(void* p, int64_t bb, int64_t be) {
  const repack_ctx* c = p;
  const rows16_shape* s = &c->s;
  const qmatrix* m = s->m;
  const int64_t row_bytes = m->words_per_row * 4, ss = (int64_t)s->sbytes;
  uint8_t* scales = c->dst + weight_bytes16(s);
  uint8_t* biases = scales + scale_bytes16(s);
  const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)row_bytes));
  for (int64_t b = bb; b < be; b++) {
    const int64_t valid = m->N - b * ROWS < ROWS ? m->N - b * ROWS : ROWS;
    const __mmask16 mask = (__mmask16)((1u << valid) - 1);
    const uint8_t* block = c->src + b * ROWS * row_bytes;
    for (int64_t g = 0; g < s->groups; g++)
      for (int c4 = 0; c4 < 8; c4++) /* dword c4 of group g of the block's 16 rows */
        _mm512_storeu_si512(c->dst + (b * s->groups + g) * GROUP_W_BYTES + c4 * 64,
                            _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, rows, block + g * 32 + c4 * 4, 1));
    for (int l = 0; l < ROWS; l++) {
      const int64_t n = b * ROWS + l;
      for (int64_t g = 0; g < s->sgroups; g++) {
        const int64_t at = ((b * s->sgroups + g) * ROWS + l) * ss;
        if (n < m->N) {
          memcpy(scales + at, (const uint8_t*)m->scales + (n * m->groups + g) * ss, (size_t)ss);
          memcpy(biases + at, (const uint8_t*)m->biases + (n * m->groups + g) * ss, (size_t)ss);
        } else {
          memset(scales + at, 0, (size_t)ss);
          memset(biases + at, 0, (size_t)ss);
        }
      }
    }
  }
}
static void repack(const void* src, void* dst, void* ctx) {
  repack_ctx c = {shape_of(ctx), src, dst};
  dbc_parallel_for(c.s.blocks, 16, repack_blocks, &c);
}

/* 16 scales (one per row of a block) as floats. */
Z512 INLINE __m512 load16(const uint8_t* p, int dtype) {
  if (dtype == DBC_F32) return _mm512_loadu_ps(p);
  const __m256i h = _mm256_loadu_si256((const __m256i*)p);
  return dtype == DBC_BF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) : _mm512_cvtph_ps(h);
}

typedef struct {
  rows16_shape s;
  const uint8_t *w, *scales, *biases; /* the repacked matrix */
  int64_t M;
  const int8_t* xq;  /* [M, K], chunked per group */
  const float* xd;   /* [M, groups] */
  const float* xsum; /* [M, groups] */
  const void* bias;
  int bias_dtype;
  float* out;
} rows16_ctx;

/* out[m0..m0+MR, rows 16·b0 .. 16·(b0+NB)): NB blocks × MR rows of x, NB·MR integer and as many float accumulators.
 * SPLIT gives each integer dot two accumulators (low and high nibbles; exact integers, so the same result) where there
 * are too few dots to keep vpdpbusd busy. Every output is summed group after group in the same order whatever NB and
 * MR, so a row's result does not depend on the batch it came in. With PF, `next` is the weights of the NB blocks the range
 * takes after these: the tile fetches their group g into L2 as it works on its own group g from L1 (a compile-time
 * choice: as a runtime one, the pointer cost the 4-row tile a register and 10% of its speed). */
Z512 INLINE void rows16_tile(const rows16_ctx* c, int64_t b0, int64_t m0, const int NB, const int MR, const int SPLIT, const int PF, const uint8_t* next) {
  const rows16_shape* s = &c->s;
  const int64_t K = s->m->K, G = s->groups, per = s->m->gs / 64, ss = (int64_t)s->sbytes;
  const int dtype = s->m->sdtype;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const uint8_t* w[4];
  for (int i = 0; i < NB; i++) w[i] = c->w + (b0 + i) * G * GROUP_W_BYTES;
  __m512 acc[4][4];
  for (int i = 0; i < NB; i++)
    for (int r = 0; r < MR; r++) acc[i][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; g++) {
    __m512i dot[4][4][2];
    for (int i = 0; i < NB; i++)
      for (int r = 0; r < MR; r++)
        for (int h = 0; h < SPLIT; h++) dot[i][r][h] = _mm512_setzero_si512();
    for (int i = 0; i < NB; i++)
      for (int k = 0; k < GROUP_W_BYTES; k += 64) _mm_prefetch((const char*)w[i] + g * GROUP_W_BYTES + PREFETCH_AHEAD + k, _MM_HINT_T0);
    if (PF)
      for (int i = 0; i < NB; i++)
        for (int k = 0; k < GROUP_W_BYTES; k += 64) _mm_prefetch((const char*)next + (i * G + g) * GROUP_W_BYTES + k, _MM_HINT_T1);
#pragma GCC unroll 8
    for (int c4 = 0; c4 < 8; c4++) {
      __m512i lo[4], hi[4];
      for (int i = 0; i < NB; i++) {
        const __m512i p = _mm512_loadu_si512(w[i] + g * GROUP_W_BYTES + c4 * 64);
        lo[i] = _mm512_and_si512(p, low4);
        hi[i] = _mm512_and_si512(_mm512_srli_epi32(p, 4), low4);
      }
      for (int r = 0; r < MR; r++) {
        const int8_t* xg = c->xq + (m0 + r) * K + g * 64 + c4 * 8;
        int32_t x0, x1;
        memcpy(&x0, xg, 4), memcpy(&x1, xg + 4, 4);
        for (int i = 0; i < NB; i++) {
          dot[i][r][0] = _mm512_dpbusd_epi32(dot[i][r][0], lo[i], _mm512_set1_epi32(x0));
          dot[i][r][SPLIT - 1] = _mm512_dpbusd_epi32(dot[i][r][SPLIT - 1], hi[i], _mm512_set1_epi32(x1));
        }
      }
    }
    const int64_t sg = g / per;
    for (int i = 0; i < NB; i++) {
      const int64_t at = ((b0 + i) * s->sgroups + sg) * ROWS * ss;
      const __m512 scale = load16(c->scales + at, dtype), offset = load16(c->biases + at, dtype);
      for (int r = 0; r < MR; r++) {
        const __m512i total = SPLIT == 2 ? _mm512_add_epi32(dot[i][r][0], dot[i][r][1]) : dot[i][r][0];
        const __m512 sd = _mm512_mul_ps(scale, _mm512_set1_ps(c->xd[(m0 + r) * G + g]));
        acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), sd, acc[i][r]);
        acc[i][r] = _mm512_fmadd_ps(offset, _mm512_set1_ps(c->xsum[(m0 + r) * G + g]), acc[i][r]);
      }
    }
  }
  const int64_t N = s->m->N;
  for (int i = 0; i < NB; i++) {
    const int64_t n0 = (b0 + i) * ROWS;
    const __mmask16 mask = N - n0 >= ROWS ? 0xffff : (__mmask16)((1u << (N - n0)) - 1);
    __m512 bias = _mm512_setzero_ps();
    if (c->bias) {
      float b[ROWS] = {0};
      for (int l = 0; l < ROWS && n0 + l < N; l++) b[l] = load_f32(c->bias, c->bias_dtype, n0 + l);
      bias = _mm512_loadu_ps(b);
    }
    for (int r = 0; r < MR; r++) _mm512_mask_storeu_ps(c->out + (m0 + r) * N + n0, mask, _mm512_add_ps(acc[i][r], bias));
  }
}

/* One tile of `mr` rows of x (1..4) over NB blocks, in the variant for that shape, fetching nothing ahead. */
#define ROWS16_TILE(NB)                                                    \
  switch (mr) {                                                            \
    case 1: rows16_tile(c, b, m0, NB, 1, 2, 0, NULL); break;               \
    case 2: rows16_tile(c, b, m0, NB, 2, 2, 0, NULL); break;               \
    case 3: rows16_tile(c, b, m0, NB, 3, NB == 2 ? 1 : 2, 0, NULL); break; \
    default: rows16_tile(c, b, m0, NB, 4, NB == 2 ? 1 : 2, 0, NULL); break; \
  }

/* Rows of x per block: as many as keep the block's int8 copy within 256 KiB (a quarter of a Zen 5 core's L2; 256 rows of
 * a 1,024-wide input, 16 of a 14,336-wide one), since each block streams the thread's weights once more; within a block
 * a pair of row blocks' weights stays in L1 while every 4 rows of x pass. */
Z512 static void rows16_range(void* p, int64_t bb, int64_t be) {
  const rows16_ctx* c = p;
  const int64_t fit = (256 << 10) / c->s.m->K / TILE_M * TILE_M, X_ROWS = fit < TILE_M ? TILE_M : fit, G = c->s.groups;
  if (c->M == 1) { /* decode: 2 blocks a tile (two weight streams), each dot split in two: 4 chains of vpdpbusd */
    int64_t b = bb;
    for (; b + 2 <= be; b += 2) rows16_tile(c, b, 0, 2, 1, 2, 0, NULL);
    for (; b < be; b++) rows16_tile(c, b, 0, 1, 1, 2, 0, NULL);
    return;
  }
  for (int64_t xb = 0; xb < c->M; xb += X_ROWS) {
    const int64_t xe = xb + X_ROWS < c->M ? xb + X_ROWS : c->M;
    for (int64_t b = bb; b < be; b += 2) {
      const int nb = be - b >= 2 ? 2 : 1;
      /* With more than one tile of rows the first streams the pair from memory and the others work from L1, leaving the
       * memory idle: the last one (when it is a full one) fetches the next pair meanwhile (at batch 8 the two had taken
       * the sum of the times). */
      const uint8_t* next = nb == 2 && be - b >= 4 && xe - xb > TILE_M ? c->w + (b + 2) * G * GROUP_W_BYTES : NULL;
      for (int64_t m0 = xb; m0 < xe; m0 += TILE_M) {
        const int mr = (int)(xe - m0 < TILE_M ? xe - m0 : TILE_M);
        if (nb == 1) ROWS16_TILE(1)
        else if (next && m0 + TILE_M >= xe && mr == TILE_M) rows16_tile(c, b, m0, 2, 4, 1, 1, next);
        else ROWS16_TILE(2)
      }
    }
  }
}

typedef struct { const float* x; int64_t K, groups; int8_t* xq; float* xd; float* xsum; } chunk_rows_ctx;
Z512 static void quantize_rows_chunks(void* p, int64_t rb, int64_t re) {
  const chunk_rows_ctx* q = p;
  for (int64_t r = rb; r < re; r++) quantize_row_chunks(q->x + r * q->K, q->K, q->xq + r * q->K, q->xd + r * q->groups, q->xsum + r * q->groups);
}

static const uint8_t* q4_layout(const qmatrix* m, const dbc_tensor* wt) {
  const rows16_shape s = shape_of(m);
  const void* with[2] = {m->scales, m->biases};
  return dbc_derived_get(wt, DBC_DERIVED_ROWS16_Q4, m->N * m->words_per_row * 4, with, weight_bytes16(&s) + 2 * scale_bytes16(&s), repack, (void*)m);
}

int dbc_q_avx512_prepare(const qmatrix* m, const dbc_tensor* w) {
  if (m->bits != 4) return 0; /* the 8-bit kernel reads the MLX layout */
  return q4_layout(m, w) ? 1 : DBC_E_NOMEM;
}

static int q4_linear(const qmatrix* m, const dbc_tensor* wt, const float* x, int64_t M, const void* bias, int bias_dtype, float* out) {
  const rows16_shape s = shape_of(m);
  const uint8_t* packed = q4_layout(m, wt);
  if (!packed) return DBC_E_NOMEM;
  const int64_t K = m->K, G = s.groups;
  x8 q;
  if (x8_alloc(M, K, G, &q)) return DBC_E_NOMEM;
  chunk_rows_ctx qc = {x, K, G, q.q, q.d, q.sum};
  dbc_parallel_for(M, 8, quantize_rows_chunks, &qc);
  rows16_ctx c = {s, packed, packed + weight_bytes16(&s), packed + weight_bytes16(&s) + scale_bytes16(&s), M, q.q, q.d, q.sum, bias, bias_dtype, out};
  dbc_parallel_for(s.blocks, 4, rows16_range, &c);
  x8_free(&q);
  return DBC_OK;
}

typedef struct { const float* x; int64_t K; int gs; int8_t* xq; float* xd; float* xsum; } qrows_ctx;
Z512 static void quantize_rows(void* p, int64_t rb, int64_t re) {
  const qrows_ctx* q = p;
  const int64_t groups = q->K / q->gs;
  for (int64_t r = rb; r < re; r++)
    quantize_row(q->x + r * q->K, q->K, q->gs, q->xq + r * q->K, q->xd + r * groups, q->xsum + r * groups);
}

int dbc_q_avx512_linear(const qmatrix* m, const dbc_tensor* w, const float* x, int64_t M, const void* bias, int bias_dtype, float* out) {
  if (m->bits == 4) return q4_linear(m, w, x, M, bias, bias_dtype, out);
  const int64_t K = m->K;
  x8 q;
  if (x8_alloc(M, K, m->groups, &q)) return DBC_E_NOMEM;
  qrows_ctx qc = {x, K, m->gs, q.q, q.d, q.sum};
  dbc_parallel_for(M, 8, quantize_rows, &qc);
  zctx c = {m, M, q.q, q.d, q.sum, bias, bias_dtype, out};
  dbc_parallel_for(m->N, 16, m->gs == 64 ? range_q8_g64 : range_q8_g128, &c);
  x8_free(&q);
  return DBC_OK;
}

#else
int dbc_q_avx512_available(void) { return 0; }
int dbc_q_avx512_supports(int bits, int gs, int64_t K) { return 0; }
int dbc_q_avx512_prepare(const qmatrix* m, const dbc_tensor* w) { return 0; }
int dbc_q_avx512_linear(const qmatrix* m, const dbc_tensor* w, const float* x, int64_t M, const void* bias, int bias_dtype, float* out) {
  return dbc_fail(DBC_E_ARG, "quantized_linear: no AVX-512 kernel on this platform");
}
#endif
