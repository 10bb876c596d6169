/* quant_avx512.c — 4- and 8-bit MLX-affine linear for any number of rows of x on x86-64 with AVX-512 VNNI.
 *
 * x is quantized to int8 per 64 values (one scale each) and every product is an integer dot (vpdpbusd: u8 weights × s8
 * x), then scaled in float. Two layouts:
 * - 8-bit: a group of 64 is one 512-bit register on both sides, so a (weight row, x row, group) is one vpdpbusd, one
 *   convert and one FMA with the scale product s·d. Tiles of 4 weight rows × up to 4 x rows keep 16 accumulators in
 *   registers: a weight group is loaded once for 4 x rows, an x group once for 4 weight rows.
 * - 4-bit: the groups lie one per 32-bit lane (see "one group per lane" below), which pays the float work once per 16
 *   groups instead of once per group.
 * Rows of x go in blocks so that a block's int8 copy stays in L2 while every weight row of the thread's range passes.
 *
 * Each output is summed in the same order whatever the number of rows, so a row's result does not depend on the batch
 * it came in (batched decode equals unbatched, bit for bit). Built for every x86-64 target (function attributes) and
 * chosen at run time when the CPU has the instructions; DBC_NO_AVX512=1 turns it off (to compare kernels). */
#include <pthread.h>
#include <stdlib.h>
#include "internal.h"
#include "quant_avx512.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
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

/* n values of x (a multiple of 16) → n int8 (round to nearest even, as lrintf) with one scale, which goes to *d, and
 * their float sum to *sum. */
Z512 INLINE void quantize_group(const float* v, int n, int8_t* q, float* d, float* sum) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  __m512 amax = _mm512_setzero_ps(), total = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __m512 a = _mm512_loadu_ps(v + i);
    amax = _mm512_max_ps(amax, _mm512_andnot_ps(sign, a));
    total = _mm512_add_ps(total, a);
  }
  const float scale = _mm512_reduce_max_ps(amax) / 127.0f;
  const __m512 inv = _mm512_set1_ps(scale > 0 ? 1.0f / scale : 0.0f);
  *d = scale;
  *sum = _mm512_reduce_add_ps(total);
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

/* ---- 4-bit weights, one group per lane ----
 * The per-group float work (convert, scale, add: as much as the integer dot itself) is paid once per 16 groups: a
 * superblock of 16 groups of 64 is laid out so that 32-bit lane ℓ of every vector belongs to group ℓ. Sixteen vpdpbusd
 * then leave each group's whole integer dot in its own lane, and one convert and one FMA with the 16 scale products
 * finish all 16 groups. A weight row's superblock (512 packed bytes) is transposed into that layout once per call and
 * reused by every row of x; x is written in it when quantized. Groups of 128 are handled as pairs of 64 sharing a scale. */
#define SB_GROUPS 16
#define SB_X_BYTES 1024
#define SB_W_BYTES 512
#define PREFETCH_AHEAD 4096

/* x of one superblock: vector v = 2t + h (t = 0..7, h = 0 low / 1 high nibble) holds in lane ℓ the 4 values
 * 8t + h + {0, 2, 4, 6} of group ℓ: the ones a packed dword t of that group's weights carries in its low (high) nibbles. */
Z512 static void quantize_row_lanes(const float* x, int64_t K, int64_t vgroups, int8_t* q, float* d, float* sum) {
  int8_t natural[64];
  for (int64_t vg = 0; vg < vgroups; vg++) {
    const int64_t sb = vg / SB_GROUPS, lane = vg % SB_GROUPS;
    int8_t* o = q + sb * SB_X_BYTES + lane * 4;
    if (vg * 64 >= K) { /* padding of the last superblock */
      for (int v = 0; v < 16; v++) memset(o + v * 64, 0, 4);
      d[vg] = 0, sum[vg] = 0;
      continue;
    }
    quantize_group(x + vg * 64, 64, natural, d + vg, sum + vg);
    for (int t = 0; t < 8; t++)
      for (int h = 0; h < 2; h++)
        for (int b = 0; b < 4; b++) o[(2 * t + h) * 64 + b] = natural[8 * t + 2 * b + h];
  }
}

/* Lane-select tables of the three permute stages of the 16-group × 8-dword transpose (see load_superblock). */
static int32_t stage1[2][16], stage2[2][16], stage3[2][16];
static void build_transpose_tables(void) {
  for (int s = 0; s < 2; s++)
    for (int lane = 0; lane < 16; lane++) {
      const int g4 = lane / 4, j4 = lane % 4, g2 = lane / 2, j2 = lane % 2;
      stage1[s][lane] = g4 < 2 ? g4 * 8 + 4 * s + j4 : 16 + (g4 - 2) * 8 + 4 * s + j4;
      stage2[s][lane] = g2 < 4 ? g2 * 4 + 2 * s + j2 : 16 + (g2 - 4) * 4 + 2 * s + j2;
      stage3[s][lane] = lane < 8 ? lane * 2 + s : 16 + (lane - 8) * 2 + s;
    }
}

/* The 512 packed bytes of superblock sb of one weight row → 16 vectors of u8 weights (vector 2t + h, lane ℓ: the low (h = 0)
 * or high nibbles of dword t of group ℓ). Groups past the row's end read as zero. Three permute stages: 4 groups × 4
 * dwords, then 8 × 2, then 16 × 1 per vector. */
Z512 INLINE void load_superblock(const uint8_t* row, int64_t sb, int64_t vgroups_real, __m512i out[16]) {
  __m512i z[8], u[4][2], v[2][2][2];
  if ((sb + 1) * SB_GROUPS <= vgroups_real)
    for (int p = 0; p < 8; p++) z[p] = _mm512_loadu_si512(row + sb * SB_W_BYTES + p * 64);
  else
    for (int p = 0; p < 8; p++) {
      const int64_t g = sb * SB_GROUPS + 2 * p;
      const __mmask16 mask = g + 1 < vgroups_real ? 0xffff : g < vgroups_real ? 0x00ff : 0;
      z[p] = _mm512_maskz_loadu_epi32(mask, row + sb * SB_W_BYTES + p * 64);
    }
  const __m512i i1[2] = {_mm512_loadu_si512(stage1[0]), _mm512_loadu_si512(stage1[1])};
  const __m512i i2[2] = {_mm512_loadu_si512(stage2[0]), _mm512_loadu_si512(stage2[1])};
  const __m512i i3[2] = {_mm512_loadu_si512(stage3[0]), _mm512_loadu_si512(stage3[1])};
  for (int q = 0; q < 4; q++)
    for (int h = 0; h < 2; h++) u[q][h] = _mm512_permutex2var_epi32(z[2 * q], i1[h], z[2 * q + 1]);
  for (int s = 0; s < 2; s++)
    for (int h = 0; h < 2; h++)
      for (int h2 = 0; h2 < 2; h2++) v[s][h][h2] = _mm512_permutex2var_epi32(u[2 * s][h], i2[h2], u[2 * s + 1][h]);
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  for (int h = 0; h < 2; h++)
    for (int h2 = 0; h2 < 2; h2++)
      for (int j = 0; j < 2; j++) {
        const int t = 4 * h + 2 * h2 + j;
        const __m512i p = _mm512_permutex2var_epi32(v[0][h][h2], i3[j], v[1][h][h2]);
        out[2 * t] = _mm512_and_si512(p, low4);
        out[2 * t + 1] = _mm512_and_si512(_mm512_srli_epi32(p, 4), low4);
      }
}

/* 16 scales (or biases) of row n for the 64-value groups of superblock sb, as floats; zero past the row's end. Groups
 * of 128 give both their halves their value. */
Z512 INLINE __m512 load_scales16(const qmatrix* m, const void* src, int64_t n, int64_t sb) {
  const int per = m->gs / 64;
  const int64_t first = sb * SB_GROUPS / per, left = m->groups - first, count = SB_GROUPS / per < left ? SB_GROUPS / per : left;
  const __mmask16 mask = (__mmask16)((1u << count) - 1);
  const int64_t at = n * m->groups + first;
  __m512 v;
  if (m->sdtype == DBC_F32) v = _mm512_maskz_loadu_ps(mask, (const float*)src + at);
  else {
    const __m256i h = _mm256_maskz_loadu_epi16(mask, (const uint16_t*)src + at);
    v = m->sdtype == DBC_BF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) : _mm512_cvtph_ps(h);
  }
  if (per == 2) v = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7), v);
  return v;
}

typedef struct {
  const qmatrix* m;
  int64_t M, superblocks, vgroups; /* vgroups: superblocks·16, padding included */
  const int8_t* xq;                /* [M, superblocks·1024] */
  const float* xd;                 /* [M, vgroups] */
  const float* xsum;               /* [M, vgroups] */
  const void* bias;
  int bias_dtype;
  float* out;
} lanes_ctx;

/* out[m0..m0+MR, rows n0..n0+NR): w holds the rows' transposed weights [NR][superblocks][16], s and b their scales and
 * biases per 64 values [NR][vgroups]. MR = 1 or 2 splits each dot over 4 or 2 accumulators (exact integers, so the
 * result is the same) to keep enough vpdpbusd in flight. */
Z512 INLINE void lanes_tile(const lanes_ctx* c, int64_t n0, int64_t m0, const int NR, const int MR, const __m512i* w) {
  const int S = MR == 1 ? 4 : MR == 2 ? 2 : 1;
  const int64_t SB = c->superblocks, V = c->vgroups;
  __m512 acc[TILE_N][TILE_M];
  for (int i = 0; i < NR; i++)
    for (int r = 0; r < MR; r++) acc[i][r] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < SB; sb++) {
    __m512i dot[TILE_N][TILE_M][4];
    for (int i = 0; i < NR; i++)
      for (int r = 0; r < MR; r++)
        for (int k = 0; k < S; k++) dot[i][r][k] = _mm512_setzero_si512();
    const int8_t* xs[TILE_M];
    for (int r = 0; r < MR; r++) xs[r] = c->xq + (m0 + r) * SB * SB_X_BYTES + sb * SB_X_BYTES;
    for (int v = 0; v < 16; v++) {
      __m512i xv[TILE_M], wv[TILE_N];
      for (int r = 0; r < MR; r++) xv[r] = _mm512_loadu_si512(xs[r] + v * 64);
      for (int i = 0; i < NR; i++) wv[i] = _mm512_load_si512(w + (i * SB + sb) * 16 + v);
      for (int i = 0; i < NR; i++)
        for (int r = 0; r < MR; r++) dot[i][r][v % S] = _mm512_dpbusd_epi32(dot[i][r][v % S], wv[i], xv[r]);
    }
    __m512 scale[TILE_N], offset[TILE_N];
    for (int i = 0; i < NR; i++) scale[i] = load_scales16(c->m, c->m->scales, n0 + i, sb), offset[i] = load_scales16(c->m, c->m->biases, n0 + i, sb);
    for (int i = 0; i < NR; i++)
      for (int r = 0; r < MR; r++) {
        __m512i total = dot[i][r][0];
        for (int k = 1; k < S; k++) total = _mm512_add_epi32(total, dot[i][r][k]);
        const __m512 sd = _mm512_mul_ps(scale[i], _mm512_loadu_ps(c->xd + (m0 + r) * V + sb * 16));
        acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), sd, acc[i][r]);
        acc[i][r] = _mm512_fmadd_ps(offset[i], _mm512_loadu_ps(c->xsum + (m0 + r) * V + sb * 16), acc[i][r]);
      }
  }
  for (int i = 0; i < NR; i++) {
    const float bias = c->bias ? load_f32(c->bias, c->bias_dtype, n0 + i) : 0.0f;
    for (int r = 0; r < MR; r++) c->out[(m0 + r) * c->m->N + n0 + i] = _mm512_reduce_add_ps(acc[i][r]) + bias;
  }
}

/* One row of x (a decode step of one sequence): each weight row's superblocks go from memory through the transpose
 * straight into the dot products, with no buffer between. The same integer sums and float steps as lanes_tile, so the
 * result equals the batched kernel's bit for bit. */
Z512 static void lanes_range_one(void* p, int64_t nb, int64_t ne) {
  const lanes_ctx* c = p;
  const qmatrix* m = c->m;
  const int64_t SB = c->superblocks, real = m->K / 64;
  for (int64_t n = nb; n < ne; n++) {
    const uint8_t* row = (const uint8_t*)(m->w + n * m->words_per_row);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < SB; sb++) {
      __m512i w[16], dot[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
      for (int k = 0; k < SB_W_BYTES; k += 64) _mm_prefetch((const char*)row + sb * SB_W_BYTES + PREFETCH_AHEAD + k, _MM_HINT_T0);
      load_superblock(row, sb, real, w);
      const int8_t* xs = c->xq + sb * SB_X_BYTES;
      for (int v = 0; v < 16; v++) dot[v % 4] = _mm512_dpbusd_epi32(dot[v % 4], w[v], _mm512_loadu_si512(xs + v * 64));
      const __m512i total = _mm512_add_epi32(_mm512_add_epi32(dot[0], dot[1]), _mm512_add_epi32(dot[2], dot[3]));
      const __m512 sd = _mm512_mul_ps(load_scales16(m, m->scales, n, sb), _mm512_loadu_ps(c->xd + sb * 16));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), sd, acc);
      acc = _mm512_fmadd_ps(load_scales16(m, m->biases, n, sb), _mm512_loadu_ps(c->xsum + sb * 16), acc);
    }
    c->out[n] = _mm512_reduce_add_ps(acc) + (c->bias ? load_f32(c->bias, c->bias_dtype, n) : 0.0f);
  }
}

#define LANES_MR(N0, NR, W)                                 \
  switch (mr) {                                             \
    case 1: lanes_tile(c, N0, m0, NR, 1, W); break;         \
    case 2: lanes_tile(c, N0, m0, NR, 2, W); break;         \
    case 3: lanes_tile(c, N0, m0, NR, 3, W); break;         \
    default: lanes_tile(c, N0, m0, NR, 4, W); break;        \
  }

Z512 static void lanes_range(void* p, int64_t nb, int64_t ne) {
  const lanes_ctx* c = p;
  const qmatrix* m = c->m;
  const int64_t SB = c->superblocks, real = m->K / 64;
  __m512i* w = dbc_scratch_alloc((size_t)(TILE_N * SB * 16) * sizeof(__m512i));
  for (int64_t xb = 0; xb < c->M; xb += X_BLOCK) {
    const int64_t xe = xb + X_BLOCK < c->M ? xb + X_BLOCK : c->M;
    for (int64_t n0 = nb; n0 < ne; n0 += TILE_N) {
      const int nr = (int)(ne - n0 < TILE_N ? ne - n0 : TILE_N);
      for (int i = 0; i < nr; i++) {
        const uint8_t* row = (const uint8_t*)(m->w + (n0 + i) * m->words_per_row);
        for (int64_t sb = 0; sb < SB; sb++) {
          for (int k = 0; k < SB_W_BYTES; k += 64) _mm_prefetch((const char*)row + sb * SB_W_BYTES + PREFETCH_AHEAD + k, _MM_HINT_T0);
          load_superblock(row, sb, real, w + (i * SB + sb) * 16);
        }
      }
      for (int64_t m0 = xb; m0 < xe; m0 += TILE_M) {
        const int mr = (int)(xe - m0 < TILE_M ? xe - m0 : TILE_M);
        if (nr == TILE_N) {
          LANES_MR(n0, TILE_N, w)
        } else {
          for (int i = 0; i < nr; i++) LANES_MR(n0 + i, 1, w + i * SB * 16)
        }
      }
    }
  }
  dbc_scratch_free(w);
}

typedef struct { const float* x; int64_t K, vgroups, superblocks; int8_t* xq; float* xd; float* xsum; } lanes_rows_ctx;
Z512 static void quantize_rows_lanes(void* p, int64_t rb, int64_t re) {
  const lanes_rows_ctx* q = p;
  for (int64_t r = rb; r < re; r++)
    quantize_row_lanes(q->x + r * q->K, q->K, q->vgroups, q->xq + r * q->superblocks * SB_X_BYTES, q->xd + r * q->vgroups,
                       q->xsum + r * q->vgroups);
}

static int lanes_linear(const qmatrix* m, const float* x, int64_t M, const void* bias, int bias_dtype, float* out) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, build_transpose_tables);
  const int64_t SB = (m->K / 64 + SB_GROUPS - 1) / SB_GROUPS, V = SB * SB_GROUPS;
  int8_t* xq = dbc_scratch_alloc((size_t)(M * SB * SB_X_BYTES));
  float* xd = dbc_scratch_alloc((size_t)(M * V) * sizeof(float));
  float* xsum = dbc_scratch_alloc((size_t)(M * V) * sizeof(float));
  if (!xq || !xd || !xsum) {
    dbc_scratch_free(xq), dbc_scratch_free(xd), dbc_scratch_free(xsum);
    return dbc_fail(DBC_E_NOMEM, "quantized_linear: out of memory");
  }
  lanes_rows_ctx qc = {x, m->K, V, SB, xq, xd, xsum};
  dbc_parallel_for(M, 8, quantize_rows_lanes, &qc);
  lanes_ctx c = {m, M, SB, V, xq, xd, xsum, bias, bias_dtype, out};
  dbc_parallel_for(m->N, 16, M == 1 ? lanes_range_one : lanes_range, &c);
  dbc_scratch_free(xq), dbc_scratch_free(xd), dbc_scratch_free(xsum);
  return DBC_OK;
}

typedef struct { const float* x; int64_t K; int gs; int8_t* xq; float* xd; float* xsum; } qrows_ctx;
Z512 static void quantize_rows(void* p, int64_t rb, int64_t re) {
  const qrows_ctx* q = p;
  const int64_t groups = q->K / q->gs;
  for (int64_t r = rb; r < re; r++)
    quantize_row(q->x + r * q->K, q->K, q->gs, q->xq + r * q->K, q->xd + r * groups, q->xsum + r * groups);
}

int dbc_q_avx512_linear(const qmatrix* m, const float* x, int64_t M, const void* bias, int bias_dtype, float* out) {
  if (m->bits == 4) return lanes_linear(m, x, M, bias, bias_dtype, out);
  const int64_t K = m->K, groups = m->groups;
  int8_t* xq = dbc_scratch_alloc((size_t)(M * K));
  float* xd = dbc_scratch_alloc((size_t)(M * groups) * sizeof(float));
  float* xsum = dbc_scratch_alloc((size_t)(M * groups) * sizeof(float));
  if (!xq || !xd || !xsum) {
    dbc_scratch_free(xq), dbc_scratch_free(xd), dbc_scratch_free(xsum);
    return dbc_fail(DBC_E_NOMEM, "quantized_linear: out of memory");
  }
  qrows_ctx qc = {x, K, m->gs, xq, xd, xsum};
  dbc_parallel_for(M, 8, quantize_rows, &qc);
  zctx c = {m, M, xq, xd, xsum, bias, bias_dtype, out};
  dbc_parallel_for(m->N, 16, m->gs == 64 ? range_q8_g64 : range_q8_g128, &c);
  dbc_scratch_free(xq), dbc_scratch_free(xd), dbc_scratch_free(xsum);
  return DBC_OK;
}

#else
int dbc_q_avx512_available(void) { return 0; }
int dbc_q_avx512_supports(int bits, int gs, int64_t K) { return 0; }
int dbc_q_avx512_linear(const qmatrix* m, const float* x, int64_t M, const void* bias, int bias_dtype, float* out) {
  return dbc_fail(DBC_E_ARG, "quantized_linear: no AVX-512 kernel on this platform");
}
#endif
