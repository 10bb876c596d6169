/* bench.c — measures the machine's streaming memory read bandwidth: the roofline for decode, which reads every weight once per token. */
#include <stdlib.h>
#include <time.h>
#include "internal.h"

typedef struct { const float* buf; int64_t n; float* partial; int64_t parts; } read_ctx;

static void read_range(void* p, int64_t b, int64_t e) {
  read_ctx* c = p;
  int64_t per = c->n / c->parts;
  for (int64_t part = b; part < e; part++) {
    const float* x = c->buf + part * per;
#ifdef DBC_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i + 32 <= per; i += 32) {
      a0 = _mm256_add_ps(a0, _mm256_load_ps(x + i));
      a1 = _mm256_add_ps(a1, _mm256_load_ps(x + i + 8));
      a2 = _mm256_add_ps(a2, _mm256_load_ps(x + i + 16));
      a3 = _mm256_add_ps(a3, _mm256_load_ps(x + i + 24));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    float s = 0;
    for (int j = 0; j < 8; j++) s += lanes[j];
#else
    float lanes[16] = {0};
    for (int64_t i = 0; i + 16 <= per; i += 16)
      for (int j = 0; j < 16; j++) lanes[j] += x[i + j];
    float s = 0;
    for (int j = 0; j < 16; j++) s += lanes[j];
#endif
    c->partial[part] = s;
  }
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int dbc_memory_read_bench(int64_t bytes, int iterations, int threads, double* seconds) {
  if (!seconds || bytes < (1 << 20) || iterations < 1) return dbc_fail(DBC_E_ARG, "memory_read_bench: need >= 1 MiB, >= 1 iteration");
  int64_t n = bytes / 4;
  n -= n % 4096;
  float* buf = dbc_scratch_alloc((size_t)n * 4);
  if (!buf) return dbc_fail(DBC_E_NOMEM, "memory_read_bench: cannot allocate %lld bytes", (long long)bytes);
  for (int64_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
  int64_t parts = 64;
  float partial[64];
  read_ctx c = {buf, n, partial, parts};
  double best = 1e30;
  for (int it = 0; it < iterations + 1; it++) { /* first pass warms page tables */
    double t0 = now_seconds();
    if (threads == 1) read_range(&c, 0, parts);
    else dbc_parallel_for(parts, 1, read_range, &c);
    double dt = now_seconds() - t0;
    if (it > 0 && dt < best) best = dt;
  }
  volatile float sink = 0;
  for (int i = 0; i < parts; i++) sink += partial[i];
  (void)sink;
  dbc_scratch_free(buf);
  *seconds = best * ((double)bytes / (double)(n * 4)); /* report for the bytes asked */
  return DBC_OK;
}
