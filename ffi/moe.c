/* moe.c — mixture-of-experts kernels: a linear through the expert each row picked (MLX gather_mm / gather_qmm with the
 * weights transposed) and the router-weighted sum of the experts' outputs. Rows are grouped by expert so each weight row
 * of an expert in use is read (and dequantized) once per call, whatever the number of rows that picked it. */
#include <stdlib.h>
#include "internal.h"

typedef struct {
  const float* x;
  int64_t K, N, k, x_per_pair; /* x_per_pair: x is [R, k, K] (1) or [R, K] shared by a row's k picks (0) */
  const void* w; int wdtype;   /* dense experts [E, N, K] */
  const qmatrix* q;            /* or quantized experts, seen as [E·N, K] */
  const void* bias; int bias_dtype; /* [E, N] or NULL */
  const int32_t* used;         /* experts in use */
  const int64_t* start;        /* pairs of used[u] are order[start[u] .. start[u + 1]) */
  const int64_t* order;        /* (row, pick) pairs r·k + j, grouped by expert */
  float* out;                  /* [R, k, N] */
} gather_ctx;

static void gather_range(void* p, int64_t b, int64_t e) {
  const gather_ctx* c = p;
  float* w = dbc_scratch_alloc((size_t)c->K * sizeof(float));
  for (int64_t t = b; t < e; t++) {
    int64_t u = t / c->N, n = t % c->N, ex = c->used[u], row = ex * c->N + n;
    int64_t pairs = c->start[u + 1] - c->start[u];
    float bias = c->bias ? load_f32(c->bias, c->bias_dtype, row) : 0.0f;
    /* few rows picked this expert (decode): dot the packed row directly; many (prefill): unpack it once */
    int direct = c->q && pairs <= 2;
    if (!direct) {
      if (c->q) dbc_dequant_row(c->q, row, w);
      else dbc_to_f32((const char*)c->w + (size_t)row * (size_t)c->K * dbc_dtype_size(c->wdtype), c->wdtype, w, c->K);
    }
    for (int64_t i = c->start[u]; i < c->start[u + 1]; i++) {
      int64_t pair = c->order[i];
      const float* x = c->x + (c->x_per_pair ? pair : pair / c->k) * c->K;
      c->out[pair * c->N + n] = (direct ? dbc_qrow_dot(c->q, row, x) : dbc_dot_f32(w, x, c->K)) + bias;
    }
  }
  dbc_scratch_free(w);
}

int dbc_gather_linear(void* xh, void* wh, void* sh, void* bh, void* biash, void* ih, int gs, int bits, void** out) {
  dbc_tensor *x, *idx, *w = NULL, *bias = NULL, *o;
  qmatrix q;
  int64_t E, N, K;
  int rc;
  if ((rc = dbc_check(xh, "gather_linear x", &x)) || (rc = dbc_check(ih, "gather_linear indices", &idx))) return rc;
  if (biash && (rc = dbc_check(biash, "gather_linear bias", &bias))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "gather_linear: out is null");
  if (sh) {
    if ((rc = dbc_qmatrix_check(wh, sh, bh, gs, bits, "gather_linear", &E, &q))) return rc;
    N = q.N / E, K = q.K;
  } else {
    if ((rc = dbc_check(wh, "gather_linear weight", &w)) || (rc = dbc_check_float(w, "gather_linear weight"))) return rc;
    if (w->ndim != 3) return dbc_fail(DBC_E_ARG, "gather_linear: expert weights must be [experts, N, K]");
    E = w->shape[0], N = w->shape[1], K = w->shape[2];
  }
  if (idx->dtype != DBC_I32 || idx->ndim != 2) return dbc_fail(DBC_E_ARG, "gather_linear: indices must be i32 [rows, k]");
  int64_t R = idx->shape[0], k = idx->shape[1];
  if (x->dtype != DBC_F32) return dbc_fail(DBC_E_ARG, "gather_linear: x must be f32");
  int per_pair = x->ndim == 3;
  if (!(x->ndim == 2 && x->shape[0] == R && x->shape[1] == K) && !(per_pair && x->shape[0] == R && x->shape[1] == k && x->shape[2] == K))
    return dbc_fail(DBC_E_ARG, "gather_linear: x must be [%lld, %lld] or [%lld, %lld, %lld]", (long long)R, (long long)K, (long long)R, (long long)k, (long long)K);
  if (bias) {
    if ((rc = dbc_check_float(bias, "gather_linear bias"))) return rc;
    if (bias->ndim != 2 || bias->shape[0] != E || bias->shape[1] != N)
      return dbc_fail(DBC_E_ARG, "gather_linear: bias must be [%lld, %lld]", (long long)E, (long long)N);
  }
  const int32_t* id = tdata(idx);
  for (int64_t i = 0; i < R * k; i++)
    if (id[i] < 0 || id[i] >= E) return dbc_fail(DBC_E_ARG, "gather_linear: expert %d outside 0..%lld", id[i], (long long)E - 1);
  int64_t shape[3] = {R, k, N};
  if ((rc = dbc_new(DBC_F32, 3, shape, &o))) return rc;
  /* counting sort of the (row, pick) pairs by expert */
  int64_t* count = calloc((size_t)E + 1, sizeof(int64_t));
  int64_t* order = malloc(sizeof(int64_t) * (size_t)(R * k + 1));
  int32_t* used = malloc(sizeof(int32_t) * (size_t)(E + 1));
  int64_t* start = malloc(sizeof(int64_t) * (size_t)(E + 2));
  if (!count || !order || !used || !start) {
    free(count), free(order), free(used), free(start), dbc_tensor_free(o);
    return dbc_fail(DBC_E_NOMEM, "gather_linear: out of memory");
  }
  for (int64_t i = 0; i < R * k; i++) count[id[i]]++;
  int64_t nused = 0, at = 0;
  for (int64_t ex = 0; ex < E; ex++) {
    if (!count[ex]) continue;
    used[nused] = (int32_t)ex, start[nused++] = at;
    int64_t c = count[ex];
    count[ex] = at; /* becomes the fill cursor */
    at += c;
  }
  start[nused] = at;
  for (int64_t i = 0; i < R * k; i++) order[count[id[i]]++] = i;
  gather_ctx c = {tdata(x), K, N, k, per_pair, w ? tdata(w) : NULL, w ? w->dtype : 0, sh ? &q : NULL, bias ? tdata(bias) : NULL,
                  bias ? bias->dtype : 0, used, start, order, tdata(o)};
  dbc_parallel_for(nused * N, 16, gather_range, &c);
  free(count), free(order), free(used), free(start);
  *out = o;
  return DBC_OK;
}

int dbc_weighted_sum(void* xh, void* wh, void** out) {
  dbc_tensor *x, *w, *o;
  int rc;
  if ((rc = dbc_check(xh, "weighted_sum x", &x)) || (rc = dbc_check(wh, "weighted_sum weights", &w))) return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "weighted_sum: out is null");
  if (x->dtype != DBC_F32 || x->ndim != 3 || w->dtype != DBC_F32 || w->ndim != 2 || w->shape[0] != x->shape[0] || w->shape[1] != x->shape[1])
    return dbc_fail(DBC_E_ARG, "weighted_sum: x must be f32 [rows, k, N] and weights f32 [rows, k]");
  int64_t R = x->shape[0], k = x->shape[1], N = x->shape[2], shape[2] = {R, N};
  if ((rc = dbc_new(DBC_F32, 2, shape, &o))) return rc;
  const float *xp = tdata(x), *wp = tdata(w);
  float* op = tdata(o);
  for (int64_t r = 0; r < R; r++)
    for (int64_t n = 0; n < N; n++) {
      float s = 0;
      for (int64_t j = 0; j < k; j++) s += wp[r * k + j] * xp[(r * k + j) * N + n];
      op[r * N + n] = s;
    }
  *out = o;
  return DBC_OK;
}
