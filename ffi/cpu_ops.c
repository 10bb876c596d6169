/* cpu_ops.c — elementwise ops, norms, RoPE, softmax/argmax/top-k, embedding gather and layout ops for the CPU backend. */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include "internal.h"
#include "vector_exp.h"

#define ELEMENT_CHUNK 16384

/* ---------- conversions and layout ---------- */

typedef struct { const dbc_tensor* x; dbc_tensor* out; } convert_ctx;
static void convert_range(void* p, int64_t b, int64_t e) {
  convert_ctx* c = p;
  const void* src = tdata(c->x);
  void* dst = tdata(c->out);
  int sd = c->x->dtype, dd = c->out->dtype;
  for (int64_t i = b; i < e; i++) {
    float v = load_f32(src, sd, i);
    if (dd == DBC_F32) ((float*)dst)[i] = v;
    else if (dd == DBC_BF16) ((uint16_t*)dst)[i] = f32_to_bf16(v);
    else ((uint16_t*)dst)[i] = f32_to_f16(v);
  }
}

int dbc_astype(void* xh, int dtype, void** out) {
  dbc_tensor *x, *o;
  int rc = dbc_check(xh, "astype", &x);
  if (rc) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "astype: out is null");
  if (x->dtype == dtype || ((x->dtype == DBC_I32 || x->dtype == DBC_U32) && (dtype == DBC_I32 || dtype == DBC_U32))) {
    if ((rc = dbc_new(dtype, x->ndim, x->shape, &o))) return rc;
    memcpy(tdata(o), tdata(x), (size_t)(dbc_numel(x) * (int64_t)dbc_dtype_size(dtype)));
    *out = o;
    return DBC_OK;
  }
  if (dbc_check_float(x, "astype input") || (dtype != DBC_F32 && dtype != DBC_F16 && dtype != DBC_BF16))
    return dbc_fail(DBC_E_ARG, "astype: only float dtypes convert (%s -> %s)", dbc_dtype_name(x->dtype), dbc_dtype_name(dtype));
  if ((rc = dbc_new(dtype, x->ndim, x->shape, &o))) return rc;
  convert_ctx c = {x, o};
  dbc_parallel_for(dbc_numel(x), ELEMENT_CHUNK, convert_range, &c);
  *out = o;
  return DBC_OK;
}

int dbc_transpose(void* xh, int ndim, const int64_t* perm, void** out) {
  dbc_tensor *x, *o;
  int rc = dbc_check(xh, "transpose", &x);
  if (rc) return rc;
  if (!out || !perm) return dbc_fail(DBC_E_ARG, "transpose: null perm or out");
  if (ndim != x->ndim) return dbc_fail(DBC_E_ARG, "transpose: perm has %d axes, tensor has %d", ndim, x->ndim);
  int seen[DBC_MAX_DIMS] = {0};
  int64_t shape[DBC_MAX_DIMS], in_stride[DBC_MAX_DIMS], out_stride[DBC_MAX_DIMS];
  for (int i = 0; i < ndim; i++) {
    if (perm[i] < 0 || perm[i] >= ndim || seen[perm[i]]++) return dbc_fail(DBC_E_ARG, "transpose: perm is not a permutation");
    shape[i] = x->shape[perm[i]];
  }
  if ((rc = dbc_new(x->dtype, ndim, shape, &o))) return rc;
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) in_stride[i] = s, s *= x->shape[i];
  for (int i = 0; i < ndim; i++) out_stride[i] = in_stride[perm[i]];
  size_t es = dbc_dtype_size(x->dtype);
  int64_t n = dbc_numel(o), idx[DBC_MAX_DIMS] = {0};
  const char* src = tdata(x);
  char* dst = tdata(o);
  for (int64_t i = 0; i < n; i++) {
    int64_t off = 0;
    for (int d = 0; d < ndim; d++) off += idx[d] * out_stride[d];
    memcpy(dst + i * (int64_t)es, src + off * (int64_t)es, es);
    for (int d = ndim - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  *out = o;
  return DBC_OK;
}

int dbc_concat(void* ah, void* bh, int axis, void** out) {
  dbc_tensor *a, *b, *o;
  int rc;
  if ((rc = dbc_check(ah, "concat a", &a)) || (rc = dbc_check(bh, "concat b", &b))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "concat: out is null");
  if (a->dtype != b->dtype || a->ndim != b->ndim) return dbc_fail(DBC_E_ARG, "concat: dtype or rank differ");
  if (axis < 0) axis += a->ndim;
  if (axis < 0 || axis >= a->ndim) return dbc_fail(DBC_E_ARG, "concat: axis out of range");
  int64_t shape[DBC_MAX_DIMS];
  for (int i = 0; i < a->ndim; i++) {
    if (i != axis && a->shape[i] != b->shape[i])
      return dbc_fail(DBC_E_ARG, "concat: shapes differ at axis %d (%lld vs %lld)", i, (long long)a->shape[i], (long long)b->shape[i]);
    shape[i] = i == axis ? a->shape[i] + b->shape[i] : a->shape[i];
  }
  if ((rc = dbc_new(a->dtype, a->ndim, shape, &o))) return rc;
  int64_t outer = 1, inner = (int64_t)dbc_dtype_size(a->dtype);
  for (int i = 0; i < axis; i++) outer *= a->shape[i];
  for (int i = axis + 1; i < a->ndim; i++) inner *= a->shape[i];
  int64_t ab = a->shape[axis] * inner, bb = b->shape[axis] * inner;
  char *dst = tdata(o), *pa = tdata(a), *pb = tdata(b);
  for (int64_t i = 0; i < outer; i++) {
    memcpy(dst, pa + i * ab, (size_t)ab), dst += ab;
    memcpy(dst, pb + i * bb, (size_t)bb), dst += bb;
  }
  *out = o;
  return DBC_OK;
}

int dbc_slice(void* xh, int axis, int64_t start, int64_t end, void** out) {
  dbc_tensor *x, *o;
  int rc = dbc_check(xh, "slice", &x);
  if (rc) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "slice: out is null");
  if (axis < 0) axis += x->ndim;
  if (axis < 0 || axis >= x->ndim) return dbc_fail(DBC_E_ARG, "slice: axis out of range");
  if (start < 0 || end > x->shape[axis] || start > end)
    return dbc_fail(DBC_E_ARG, "slice: [%lld, %lld) outside axis %d of size %lld", (long long)start, (long long)end, axis,
                    (long long)x->shape[axis]);
  int64_t shape[DBC_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) shape[i] = i == axis ? end - start : x->shape[i];
  if ((rc = dbc_new(x->dtype, x->ndim, shape, &o))) return rc;
  int64_t outer = 1, inner = (int64_t)dbc_dtype_size(x->dtype);
  for (int i = 0; i < axis; i++) outer *= x->shape[i];
  for (int i = axis + 1; i < x->ndim; i++) inner *= x->shape[i];
  char *dst = tdata(o), *src = tdata(x);
  int64_t row = x->shape[axis] * inner, len = (end - start) * inner;
  for (int64_t i = 0; i < outer; i++) memcpy(dst + i * len, src + i * row + start * inner, (size_t)len);
  *out = o;
  return DBC_OK;
}

/* ---------- elementwise ---------- */

enum { OP_ADD, OP_MUL, OP_SCALE, OP_SILU, OP_GELU, OP_GELU_TANH, OP_GLU_SILU, OP_GLU_GELU, OP_GLU_GELU_TANH, OP_GLU_CLIPPED, OP_GLU_SIGMOID, OP_TANH };

typedef struct {
  int op;
  const float* a;
  const void* b;
  int b_dtype;
  int64_t b_n;
  float s;
  float* out;
} ew_ctx;

static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static inline float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}

/* GPT-OSS's SwiGLU: gate clipped above at 7, up clipped to [-7, 7] and shifted by 1, sigmoid sharpened by 1.702 */
static inline float glu_clipped(float g, float u) {
  g = fminf(g, 7.0f);
  u = fminf(fmaxf(u, -7.0f), 7.0f);
  return g / (1.0f + expf(-1.702f * g)) * (u + 1.0f);
}

#if defined(__AVX512F__)
/* o = silu(a) (· u), 16 at a time; the last, partial vector masked, so every element goes through the same code
 * wherever a thread's range happens to end */
static void silu16(const float* a, const float* u, float* o, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; i += 16) {
    const __mmask16 m = e - i >= 16 ? 0xffff : (__mmask16)((1u << (e - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, a + i);
    __m512 y = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), dbc_exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    if (u) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, u + i));
    _mm512_mask_storeu_ps(o + i, m, y);
  }
}
#endif

static void ew_range(void* p, int64_t b, int64_t e) {
  ew_ctx* c = p;
  const float* a = c->a;
  float* o = c->out;
  switch (c->op) {
    case OP_ADD:
    case OP_MUL:
      if (c->b_dtype == DBC_F32) { /* b repeats every b_n elements: plain loops over its contiguous runs */
        const float* bb = c->b;
        for (int64_t i = b, j = b % c->b_n; i < e; j = 0) {
          const int64_t run = e - i < c->b_n - j ? e - i : c->b_n - j;
          float* oo = o + i;
          const float *aa = a + i, *bj = bb + j;
          if (c->op == OP_ADD)
            for (int64_t k = 0; k < run; k++) oo[k] = aa[k] + bj[k];
          else
            for (int64_t k = 0; k < run; k++) oo[k] = aa[k] * bj[k];
          i += run;
        }
      } else {
        for (int64_t i = b; i < e; i++) {
          float v = load_f32(c->b, c->b_dtype, i % c->b_n);
          o[i] = c->op == OP_ADD ? a[i] + v : a[i] * v;
        }
      }
      break;
    case OP_SCALE: for (int64_t i = b; i < e; i++) o[i] = a[i] * c->s; break;
#if defined(__AVX512F__)
    case OP_SILU: silu16(a, NULL, o, b, e); break;
    case OP_GLU_SILU: silu16(a, c->b, o, b, e); break;
#else
    case OP_SILU: for (int64_t i = b; i < e; i++) o[i] = silu(a[i]); break;
    case OP_GLU_SILU: { const float* u = c->b; for (int64_t i = b; i < e; i++) o[i] = silu(a[i]) * u[i]; break; }
#endif
    case OP_GELU: for (int64_t i = b; i < e; i++) o[i] = gelu(a[i]); break;
    case OP_GELU_TANH: for (int64_t i = b; i < e; i++) o[i] = gelu_tanh(a[i]); break;
    case OP_TANH: for (int64_t i = b; i < e; i++) o[i] = tanhf(a[i]); break;
    case OP_GLU_GELU: { const float* u = c->b; for (int64_t i = b; i < e; i++) o[i] = gelu(a[i]) * u[i]; break; }
    case OP_GLU_GELU_TANH: { const float* u = c->b; for (int64_t i = b; i < e; i++) o[i] = gelu_tanh(a[i]) * u[i]; break; }
    case OP_GLU_CLIPPED: { const float* u = c->b; for (int64_t i = b; i < e; i++) o[i] = glu_clipped(a[i], u[i]); break; }
    case OP_GLU_SIGMOID: { const float* u = c->b; for (int64_t i = b; i < e; i++) o[i] = u[i] / (1.0f + expf(-a[i])); break; }
  }
}

static int unary(void* xh, int op, float s, const char* name, void** out) {
  dbc_tensor *x, *o;
  int rc = dbc_check(xh, name, &x);
  if (rc) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "%s: out is null", name);
  if (x->dtype != DBC_F32) return dbc_fail(DBC_E_ARG, "%s: activations must be f32, got %s", name, dbc_dtype_name(x->dtype));
  if ((rc = dbc_new(DBC_F32, x->ndim, x->shape, &o))) return rc;
  ew_ctx c = {.op = op, .a = tdata(x), .s = s, .out = tdata(o)};
  dbc_parallel_for(dbc_numel(x), ELEMENT_CHUNK, ew_range, &c);
  *out = o;
  return DBC_OK;
}

static int binary(void* ah, void* bh, int op, const char* name, void** out) {
  dbc_tensor *a, *b, *o;
  int rc;
  if ((rc = dbc_check(ah, name, &a)) || (rc = dbc_check(bh, name, &b))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "%s: out is null", name);
  if (a->dtype != DBC_F32) return dbc_fail(DBC_E_ARG, "%s: first operand must be f32, got %s", name, dbc_dtype_name(a->dtype));
  if ((rc = dbc_check_float(b, name))) return rc;
  if (b->ndim > a->ndim) return dbc_fail(DBC_E_ARG, "%s: second operand has more axes than the first", name);
  for (int i = 0; i < b->ndim; i++) {
    if (b->shape[b->ndim - 1 - i] != a->shape[a->ndim - 1 - i])
      return dbc_fail(DBC_E_ARG, "%s: shape mismatch: operand b must match the trailing axes of a (axis %d: %lld vs %lld)", name,
                      a->ndim - 1 - i, (long long)b->shape[b->ndim - 1 - i], (long long)a->shape[a->ndim - 1 - i]);
  }
  int64_t bn = dbc_numel(b);
  if (bn == 0 && dbc_numel(a) != 0) return dbc_fail(DBC_E_ARG, "%s: empty operand", name);
  if ((rc = dbc_new(DBC_F32, a->ndim, a->shape, &o))) return rc;
  ew_ctx c = {.op = op, .a = tdata(a), .b = tdata(b), .b_dtype = b->dtype, .b_n = bn ? bn : 1, .out = tdata(o)};
  dbc_parallel_for(dbc_numel(a), ELEMENT_CHUNK, ew_range, &c);
  *out = o;
  return DBC_OK;
}

int dbc_add(void* a, void* b, void** out) { return binary(a, b, OP_ADD, "add", out); }
int dbc_mul(void* a, void* b, void** out) { return binary(a, b, OP_MUL, "mul", out); }
int dbc_scale(void* x, float s, void** out) { return unary(x, OP_SCALE, s, "scale", out); }
int dbc_silu(void* x, void** out) { return unary(x, OP_SILU, 0, "silu", out); }
int dbc_tanh(void* x, void** out) { return unary(x, OP_TANH, 0, "tanh", out); }
int dbc_gelu(void* x, int approximate, void** out) { return unary(x, approximate ? OP_GELU_TANH : OP_GELU, 0, "gelu", out); }

int dbc_glu(void* gh, void* uh, int activation, void** out) {
  dbc_tensor *g, *u, *o;
  int rc;
  if ((rc = dbc_check(gh, "glu gate", &g)) || (rc = dbc_check(uh, "glu up", &u))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "glu: out is null");
  if (g->dtype != DBC_F32 || u->dtype != DBC_F32) return dbc_fail(DBC_E_ARG, "glu: gate and up must be f32");
  if (dbc_numel(g) != dbc_numel(u)) return dbc_fail(DBC_E_ARG, "glu: gate and up differ in size");
  if (activation < 0 || activation > 4)
    return dbc_fail(DBC_E_ARG, "glu: activation must be 0 (silu), 1 (gelu), 2 (gelu tanh), 3 (clipped swiglu) or 4 (sigmoid)");
  if ((rc = dbc_new(DBC_F32, g->ndim, g->shape, &o))) return rc;
  ew_ctx c = {.op = OP_GLU_SILU + activation, .a = tdata(g), .b = tdata(u), .out = tdata(o)};
  dbc_parallel_for(dbc_numel(g), ELEMENT_CHUNK, ew_range, &c);
  *out = o;
  return DBC_OK;
}

/* ---------- row-wise ops ---------- */

typedef struct {
  const float* x;
  const void* w;
  int w_dtype;
  float eps;
  int64_t cols;
  float* out;
} rows_ctx;

/* Sum of squares in double, over 8 interleaved partial sums that the compiler keeps in vector lanes (one serial chain
 * of double adds made RMSNorm cost 6% of a prefill). */
static double sum_squares(const float* x, int64_t n) {
  double part[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) part[j] += (double)x[i + j] * x[i + j];
  double ss = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
  for (; i < n; i++) ss += (double)x[i] * x[i];
  return ss;
}

static void rms_range(void* p, int64_t b, int64_t e) {
  rows_ctx* c = p;
  int64_t n = c->cols;
  enum { CHUNK = 256 };
  float w[CHUNK];
  for (int64_t r = b; r < e; r++) {
    const float* x = c->x + r * n;
    float* o = c->out + r * n;
    float inv = (float)(1.0 / sqrt(sum_squares(x, n) / (double)n + c->eps));
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) { /* the weight widened a chunk at a time, so the product loop is plain */
      const int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
      const float* wf = c->w_dtype == DBC_F32 ? (const float*)c->w + i0 : w;
      if (c->w_dtype != DBC_F32) dbc_to_f32((const char*)c->w + i0 * (int64_t)dbc_dtype_size(c->w_dtype), c->w_dtype, w, m);
      for (int64_t i = 0; i < m; i++) o[i0 + i] = x[i0 + i] * inv * wf[i];
    }
  }
}

int dbc_rms_norm(void* xh, void* wh, float eps, void** out) {
  dbc_tensor *x, *w, *o;
  int rc;
  if ((rc = dbc_check(xh, "rms_norm x", &x)) || (rc = dbc_check(wh, "rms_norm weight", &w))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "rms_norm: out is null");
  if (x->dtype != DBC_F32 || x->ndim < 1) return dbc_fail(DBC_E_ARG, "rms_norm: x must be f32 with at least one axis");
  if ((rc = dbc_check_float(w, "rms_norm weight"))) return rc;
  int64_t cols = x->shape[x->ndim - 1];
  if (dbc_numel(w) != cols) return dbc_fail(DBC_E_ARG, "rms_norm: weight has %lld elements, last axis is %lld", (long long)dbc_numel(w), (long long)cols);
  if ((rc = dbc_new(DBC_F32, x->ndim, x->shape, &o))) return rc;
  rows_ctx c = {tdata(x), tdata(w), w->dtype, eps, cols, tdata(o)};
  dbc_parallel_for(cols ? dbc_numel(x) / cols : 0, 8, rms_range, &c);
  *out = o;
  return DBC_OK;
}

static void softmax_range(void* p, int64_t b, int64_t e) {
  rows_ctx* c = p;
  int64_t n = c->cols;
  for (int64_t r = b; r < e; r++) {
    const float* x = c->x + r * n;
    float* o = c->out + r * n;
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (o[i] = expf(x[i] - m));
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) o[i] *= inv;
  }
}

int dbc_softmax(void* xh, void** out) {
  dbc_tensor *x, *o;
  int rc = dbc_check(xh, "softmax", &x);
  if (rc) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "softmax: out is null");
  if (x->dtype != DBC_F32 || x->ndim < 1) return dbc_fail(DBC_E_ARG, "softmax: x must be f32 with at least one axis");
  if ((rc = dbc_new(DBC_F32, x->ndim, x->shape, &o))) return rc;
  int64_t cols = x->shape[x->ndim - 1];
  rows_ctx c = {.x = tdata(x), .cols = cols, .out = tdata(o)};
  dbc_parallel_for(cols ? dbc_numel(x) / cols : 0, 4, softmax_range, &c);
  *out = o;
  return DBC_OK;
}

int dbc_argmax(void* xh, void** out) {
  dbc_tensor *x, *o;
  int rc = dbc_check(xh, "argmax", &x);
  if (rc) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "argmax: out is null");
  if (x->dtype != DBC_F32 || x->ndim < 1) return dbc_fail(DBC_E_ARG, "argmax: x must be f32 with at least one axis");
  int64_t cols = x->shape[x->ndim - 1];
  if (cols == 0) return dbc_fail(DBC_E_ARG, "argmax: empty last axis");
  if ((rc = dbc_new(DBC_I32, x->ndim - 1, x->shape, &o))) return rc;
  const float* p = tdata(x);
  int32_t* r = tdata(o);
  for (int64_t row = 0, rows = dbc_numel(x) / cols; row < rows; row++) {
    const float* v = p + row * cols;
    int64_t best = 0;
    for (int64_t i = 1; i < cols; i++) if (v[i] > v[best]) best = i;
    r[row] = (int32_t)best;
  }
  *out = o;
  return DBC_OK;
}

typedef struct { float v; int32_t i; } scored;
static void sift_down(scored* h, int k, int at) { /* min-heap on v; ties: larger index is "smaller" so lower index wins */
  for (;;) {
    int l = 2 * at + 1, r = l + 1, m = at;
    if (l < k && (h[l].v < h[m].v || (h[l].v == h[m].v && h[l].i > h[m].i))) m = l;
    if (r < k && (h[r].v < h[m].v || (h[r].v == h[m].v && h[r].i > h[m].i))) m = r;
    if (m == at) return;
    scored t = h[m]; h[m] = h[at]; h[at] = t; at = m;
  }
}
static int by_value_desc(const void* a, const void* b) {
  const scored *x = a, *y = b;
  if (x->v != y->v) return x->v < y->v ? 1 : -1;
  return x->i - y->i;
}

int dbc_topk(void* xh, int k, void** values, void** indices) {
  dbc_tensor *x, *ov, *oi;
  int rc = dbc_check(xh, "topk", &x);
  if (rc) return rc;
  if (!values || !indices) return dbc_fail(DBC_E_ARG, "topk: out is null");
  if (x->dtype != DBC_F32 || x->ndim < 1) return dbc_fail(DBC_E_ARG, "topk: x must be f32 with at least one axis");
  int64_t cols = x->shape[x->ndim - 1];
  if (k < 1 || k > cols) return dbc_fail(DBC_E_ARG, "topk: k=%d outside 1..%lld", k, (long long)cols);
  int64_t shape[DBC_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
  shape[x->ndim - 1] = k;
  if ((rc = dbc_new(DBC_F32, x->ndim, shape, &ov))) return rc;
  if ((rc = dbc_new(DBC_I32, x->ndim, shape, &oi))) { dbc_tensor_free(ov); return rc; }
  scored* heap = malloc(sizeof(scored) * (size_t)k);
  const float* p = tdata(x);
  for (int64_t row = 0, rows = dbc_numel(x) / cols; row < rows; row++) {
    const float* v = p + row * cols;
    for (int i = 0; i < k; i++) heap[i] = (scored){v[i], i};
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(heap, k, i);
    for (int64_t i = k; i < cols; i++)
      if (v[i] > heap[0].v) heap[0] = (scored){v[i], (int32_t)i}, sift_down(heap, k, 0);
    qsort(heap, (size_t)k, sizeof(scored), by_value_desc);
    for (int i = 0; i < k; i++) ((float*)tdata(ov))[row * k + i] = heap[i].v, ((int32_t*)tdata(oi))[row * k + i] = heap[i].i;
  }
  free(heap);
  *values = ov;
  *indices = oi;
  return DBC_OK;
}

/* ---------- RoPE ---------- */

typedef struct {
  const float* x;
  const int32_t* pos;
  const float* inv_freq;
  int64_t heads, head_dim;
  int dims, traditional;
  float scale;
  float* out;
} rope_ctx;

static void rope_range(void* p, int64_t b, int64_t e) {
  rope_ctx* c = p;
  int half = c->dims / 2;
  float cs[half], sn[half]; /* one row's angles serve all its heads */
  for (int64_t r = b; r < e; r++) {
    float pos = (float)c->pos[r] * c->scale;
    for (int i = 0; i < half; i++) {
      float theta = pos * c->inv_freq[i];
      cs[i] = cosf(theta), sn[i] = sinf(theta);
    }
    for (int64_t h = 0; h < c->heads; h++) {
      const float* x = c->x + (r * c->heads + h) * c->head_dim;
      float* o = c->out + (r * c->heads + h) * c->head_dim;
      if (c->traditional)
        for (int i = 0; i < half; i++) {
          float x1 = x[2 * i], x2 = x[2 * i + 1];
          o[2 * i] = x1 * cs[i] - x2 * sn[i];
          o[2 * i + 1] = x1 * sn[i] + x2 * cs[i];
        }
      else
        for (int i = 0; i < half; i++) {
          float x1 = x[i], x2 = x[i + half];
          o[i] = x1 * cs[i] - x2 * sn[i];
          o[i + half] = x1 * sn[i] + x2 * cs[i];
        }
      for (int64_t i = c->dims; i < c->head_dim; i++) o[i] = x[i];
    }
  }
}

int dbc_rope(void* xh, void* ph, int dims, int traditional, float scale, void* fh, void** out) {
  dbc_tensor *x, *pos, *f, *o;
  int rc;
  if ((rc = dbc_check(xh, "rope x", &x)) || (rc = dbc_check(ph, "rope positions", &pos)) || (rc = dbc_check(fh, "rope inv_freq", &f)))
    return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "rope: out is null");
  if (x->dtype != DBC_F32 || x->ndim != 3) return dbc_fail(DBC_E_ARG, "rope: x must be f32 [rows, heads, head_dim]");
  if (pos->dtype != DBC_I32 || dbc_numel(pos) != x->shape[0]) return dbc_fail(DBC_E_ARG, "rope: positions must be i32 [rows]");
  if (dims < 2 || dims % 2 || dims > x->shape[2]) return dbc_fail(DBC_E_ARG, "rope: dims %d must be even and <= head_dim %lld", dims, (long long)x->shape[2]);
  if (f->dtype != DBC_F32 || dbc_numel(f) != dims / 2) return dbc_fail(DBC_E_ARG, "rope: inv_freq must be f32 [dims/2]");
  if ((rc = dbc_new(DBC_F32, 3, x->shape, &o))) return rc;
  rope_ctx c = {tdata(x), tdata(pos), tdata(f), x->shape[1], x->shape[2], dims, traditional, scale, tdata(o)};
  dbc_parallel_for(x->shape[0], 4, rope_range, &c);
  *out = o;
  return DBC_OK;
}

/* ---------- embedding gather (float tables) ---------- */

int dbc_embedding(void* th, void* ih, void** out) {
  dbc_tensor *t, *ids, *o;
  int rc;
  if ((rc = dbc_check(th, "embedding table", &t)) || (rc = dbc_check(ih, "embedding ids", &ids))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "embedding: out is null");
  if ((rc = dbc_check_float(t, "embedding table"))) return rc;
  if (t->ndim != 2) return dbc_fail(DBC_E_ARG, "embedding: table must be [vocab, hidden]");
  if (ids->dtype != DBC_I32 || ids->ndim >= DBC_MAX_DIMS) return dbc_fail(DBC_E_ARG, "embedding: ids must be i32");
  int64_t vocab = t->shape[0], hidden = t->shape[1], n = dbc_numel(ids), shape[DBC_MAX_DIMS];
  const int32_t* id = tdata(ids);
  for (int64_t i = 0; i < n; i++)
    if (id[i] < 0 || id[i] >= vocab) return dbc_fail(DBC_E_ARG, "embedding: token id %d outside vocab of %lld", id[i], (long long)vocab);
  for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
  shape[ids->ndim] = hidden;
  if ((rc = dbc_new(DBC_F32, ids->ndim + 1, shape, &o))) return rc;
  const char* base = tdata(t);
  size_t es = dbc_dtype_size(t->dtype);
  for (int64_t i = 0; i < n; i++) dbc_to_f32(base + (size_t)id[i] * (size_t)hidden * es, t->dtype, (float*)tdata(o) + i * hidden, hidden);
  *out = o;
  return DBC_OK;
}
