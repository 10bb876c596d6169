/* recurrent.h — the per-sequence recurrences of linear-attention layers (Qwen3.5's Gated DeltaNet), on plain float
 * buffers, for the cpu shim (recurrent.c; the mlx glue builds the same from MLX ops). Not part of the ABI.
 * Rows are processed in order; each row belongs to a slot whose state it reads and updates. A row at position 0 starts
 * its slot from a zero state, so a slot needs no reset when it is reused. */
#ifndef DBC_RECURRENT_H
#define DBC_RECURRENT_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Causal depthwise conv1d (mlx-lm Conv1d with groups = channels over [state; x]): out[c] = Σ_j w[c·K + j]·in_j[c], the
 * window in_0 … in_{K−1} being the slot's last K−1 inputs then this row. state: [slots, K−1, C]. */
static inline void dbc_conv_rows(const float* x, const float* w, float* state, const int32_t* slots, const int32_t* pos, int64_t rows,
                                 int64_t C, int64_t K, float* out) {
  for (int64_t r = 0; r < rows; r++) {
    float* st = state + (int64_t)slots[r] * (K - 1) * C;
    if (pos[r] == 0) memset(st, 0, sizeof(float) * (size_t)((K - 1) * C));
    const float* xr = x + r * C;
    float* o = out + r * C;
    for (int64_t c = 0; c < C; c++) {
      float s = w[c * K + K - 1] * xr[c];
      for (int64_t j = 0; j < K - 1; j++) s += w[c * K + j] * st[j * C + c];
      o[c] = s;
    }
    if (K > 1) {
      memmove(st, st + C, sizeof(float) * (size_t)((K - 2) * C));
      memcpy(st + (K - 2) * C, xr, sizeof(float) * (size_t)C);
    }
  }
}

/* Gated delta rule (mlx-lm gated_delta_ops), per row and value head h (key head h / (Hv/Hk)), for heads [h0, h1):
 *   g = exp(−exp(a_log[h])·softplus(a[h] + dt_bias[h])), β = σ(b[h]);  S ← g·S;  δ = (v − S·k)·β;  S ← S + δ ⊗ k;  y = S·q
 * with S the slot's [Dv, Dk] state of head h. q, k: [rows, Hk, Dk]; v, y: [rows, Hv, Dv]; a, b: [rows, Hv];
 * a_log, dt_bias: [Hv]; state: [slots, Hv, Dv, Dk]. */
static inline void dbc_gated_delta_heads(const float* q, const float* k, const float* v, const float* a, const float* b, const float* a_log,
                                         const float* dt_bias, float* state, const int32_t* slots, const int32_t* pos, int64_t rows,
                                         int64_t Hk, int64_t Hv, int64_t Dk, int64_t Dv, int64_t h0, int64_t h1, float* y) {
  /* value heads [h0, h1): each head's state is its own, so heads may run in parallel; rows stay in order */
  for (int64_t r = 0; r < rows; r++) {
    float* st = state + (int64_t)slots[r] * Hv * Dv * Dk;
    for (int64_t h = h0; h < h1; h++) {
      int64_t hk = h / (Hv / Hk);
      const float* qh = q + (r * Hk + hk) * Dk;
      const float* kh = k + (r * Hk + hk) * Dk;
      const float* vh = v + (r * Hv + h) * Dv;
      float* S = st + h * Dv * Dk;
      if (pos[r] == 0) memset(S, 0, sizeof(float) * (size_t)(Dv * Dk));
      float* yh = y + (r * Hv + h) * Dv;
      float x = a[r * Hv + h] + dt_bias[h];
      float softplus = x > 20.0f ? x : log1pf(expf(x));
      float g = expf(-expf(a_log[h]) * softplus);
      float beta = 1.0f / (1.0f + expf(-b[r * Hv + h]));
      for (int64_t dv = 0; dv < Dv; dv++) {
        float* Srow = S + dv * Dk;
        float mem = 0;
        for (int64_t d = 0; d < Dk; d++) {
          Srow[d] *= g;
          mem += Srow[d] * kh[d];
        }
        float delta = (vh[dv] - mem) * beta, out = 0;
        for (int64_t d = 0; d < Dk; d++) {
          Srow[d] += kh[d] * delta;
          out += Srow[d] * qh[d];
        }
        yh[dv] = out;
      }
    }
  }
}

#endif
