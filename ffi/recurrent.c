/* recurrent.c — the cpu shim's entry points for linear-attention recurrences (kernels in recurrent.h): a causal
 * depthwise conv1d and the gated delta rule, each over a per-slot state updated in place. */
#include <stdlib.h>
#include "internal.h"
#include "recurrent.h"

static int check_rows(dbc_tensor* slots, dbc_tensor* pos, int64_t rows, int64_t nslots, const char* name) {
  if (slots->dtype != DBC_I32 || pos->dtype != DBC_I32 || dbc_numel(slots) != rows || dbc_numel(pos) != rows)
    return dbc_fail(DBC_E_ARG, "%s: slots and positions must be i32 [rows]", name);
  const int32_t *sl = tdata(slots), *ps = tdata(pos);
  for (int64_t r = 0; r < rows; r++) {
    if (sl[r] < 0 || sl[r] >= nslots) return dbc_fail(DBC_E_ARG, "%s: slot %d outside 0..%lld", name, sl[r], (long long)nslots - 1);
    if (ps[r] < 0) return dbc_fail(DBC_E_ARG, "%s: negative position %d", name, ps[r]);
  }
  return DBC_OK;
}

/* A float tensor's values as f32 (a copy when it is stored narrower); *owned says whether to free it. */
static float* as_f32(dbc_tensor* t, int* owned) {
  if (t->dtype == DBC_F32) return *owned = 0, (float*)tdata(t);
  float* out = malloc(sizeof(float) * (size_t)dbc_numel(t));
  if (out) dbc_to_f32(tdata(t), t->dtype, out, dbc_numel(t));
  *owned = 1;
  return out;
}

int dbc_causal_conv(void* xh, void* wh, void* sth, void* sh, void* ph, void** out) {
  dbc_tensor *x, *w, *st, *slots, *pos, *o;
  int rc;
  if ((rc = dbc_check(xh, "causal_conv x", &x)) || (rc = dbc_check(wh, "causal_conv weight", &w)) || (rc = dbc_check(sth, "causal_conv state", &st)) ||
      (rc = dbc_check(sh, "causal_conv slots", &slots)) || (rc = dbc_check(ph, "causal_conv positions", &pos)))
    return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "causal_conv: out is null");
  if (x->dtype != DBC_F32 || x->ndim != 2) return dbc_fail(DBC_E_ARG, "causal_conv: x must be f32 [rows, channels]");
  int64_t rows = x->shape[0], C = x->shape[1];
  if ((rc = dbc_check_float(w, "causal_conv weight"))) return rc;
  if (w->ndim != 2 || w->shape[0] != C) return dbc_fail(DBC_E_ARG, "causal_conv: weight must be [%lld, kernel]", (long long)C);
  int64_t K = w->shape[1];
  if (st->dtype != DBC_F32 || st->ndim != 3 || st->shape[1] != K - 1 || st->shape[2] != C)
    return dbc_fail(DBC_E_ARG, "causal_conv: state must be f32 [slots, %lld, %lld]", (long long)(K - 1), (long long)C);
  if ((rc = check_rows(slots, pos, rows, st->shape[0], "causal_conv"))) return rc;
  if ((rc = dbc_new(DBC_F32, 2, x->shape, &o))) return rc;
  int owned;
  float* wf = as_f32(w, &owned);
  if (!wf) return dbc_tensor_free(o), dbc_fail(DBC_E_NOMEM, "causal_conv: out of memory");
  dbc_conv_rows(tdata(x), wf, tdata(st), tdata(slots), tdata(pos), rows, C, K, tdata(o));
  if (owned) free(wf);
  *out = o;
  return DBC_OK;
}

typedef struct {
  const float *q, *k, *v, *a, *b, *a_log, *dt_bias;
  float* state;
  const int32_t *slots, *pos;
  int64_t rows, Hk, Hv, Dk, Dv;
  float* y;
} delta_ctx;

static void delta_range(void* p, int64_t h0, int64_t h1) {
  const delta_ctx* c = p;
  dbc_gated_delta_heads(c->q, c->k, c->v, c->a, c->b, c->a_log, c->dt_bias, c->state, c->slots, c->pos, c->rows, c->Hk, c->Hv, c->Dk, c->Dv, h0, h1, c->y);
}

int dbc_gated_delta(void* qh, void* kh, void* vh, void* ah, void* bh, void* alh, void* dth, void* sth, void* sh, void* ph, void** out) {
  dbc_tensor *q, *k, *v, *a, *b, *al, *dt, *st, *slots, *pos, *o;
  int rc;
  if ((rc = dbc_check(qh, "gated_delta q", &q)) || (rc = dbc_check(kh, "gated_delta k", &k)) || (rc = dbc_check(vh, "gated_delta v", &v)) ||
      (rc = dbc_check(ah, "gated_delta a", &a)) || (rc = dbc_check(bh, "gated_delta b", &b)) || (rc = dbc_check(alh, "gated_delta a_log", &al)) ||
      (rc = dbc_check(dth, "gated_delta dt_bias", &dt)) || (rc = dbc_check(sth, "gated_delta state", &st)) ||
      (rc = dbc_check(sh, "gated_delta slots", &slots)) || (rc = dbc_check(ph, "gated_delta positions", &pos)))
    return rc;
  if (!out) return dbc_fail(DBC_E_ARG, "gated_delta: out is null");
  if (q->dtype != DBC_F32 || k->dtype != DBC_F32 || v->dtype != DBC_F32 || a->dtype != DBC_F32 || b->dtype != DBC_F32 || q->ndim != 3 ||
      k->ndim != 3 || v->ndim != 3)
    return dbc_fail(DBC_E_ARG, "gated_delta: q, k [rows, Hk, Dk], v [rows, Hv, Dv], a and b [rows, Hv] must be f32");
  int64_t rows = q->shape[0], Hk = q->shape[1], Dk = q->shape[2], Hv = v->shape[1], Dv = v->shape[2];
  if (k->shape[0] != rows || k->shape[1] != Hk || k->shape[2] != Dk || v->shape[0] != rows || Hk == 0 || Hv % Hk)
    return dbc_fail(DBC_E_ARG, "gated_delta: q and k must match, and value heads %lld must be a multiple of key heads %lld", (long long)Hv, (long long)Hk);
  if (dbc_numel(a) != rows * Hv || dbc_numel(b) != rows * Hv) return dbc_fail(DBC_E_ARG, "gated_delta: a and b must be [rows, %lld]", (long long)Hv);
  if ((rc = dbc_check_float(al, "gated_delta a_log")) || (rc = dbc_check_float(dt, "gated_delta dt_bias"))) return rc;
  if (dbc_numel(al) != Hv || dbc_numel(dt) != Hv) return dbc_fail(DBC_E_ARG, "gated_delta: a_log and dt_bias must have %lld values", (long long)Hv);
  if (st->dtype != DBC_F32 || st->ndim != 4 || st->shape[1] != Hv || st->shape[2] != Dv || st->shape[3] != Dk)
    return dbc_fail(DBC_E_ARG, "gated_delta: state must be f32 [slots, %lld, %lld, %lld]", (long long)Hv, (long long)Dv, (long long)Dk);
  if ((rc = check_rows(slots, pos, rows, st->shape[0], "gated_delta"))) return rc;
  if ((rc = dbc_new(DBC_F32, 3, v->shape, &o))) return rc;
  int own_al, own_dt;
  float *alf = as_f32(al, &own_al), *dtf = as_f32(dt, &own_dt);
  if (alf && dtf) {
    delta_ctx c = {tdata(q), tdata(k), tdata(v), tdata(a), tdata(b), alf, dtf, tdata(st), tdata(slots), tdata(pos), rows, Hk, Hv, Dk, Dv, tdata(o)};
    dbc_parallel_for(Hv, 1, delta_range, &c);
  }
  int ok = alf && dtf;
  if (own_al) free(alf);
  if (own_dt) free(dtf);
  if (!ok) return dbc_tensor_free(o), dbc_fail(DBC_E_NOMEM, "gated_delta: out of memory");
  *out = o;
  return DBC_OK;
}
