/* internal.h — shared pieces of the CPU shim: tensor struct, errors, dtype conversion, the thread pool. Not part of the ABI. */
#ifndef DBC_INTERNAL_H
#define DBC_INTERNAL_H
#include "dbc.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DBC_AVX2 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#define DBC_MAX_DIMS 8

/* A buffer made from a range of a storage's bytes for a kernel (4-bit weights repacked into its layout), kept with the
 * storage so that it is made once per weight and not once per call. */
typedef struct dbc_derived {
  struct dbc_derived* next;
  int kind;
  int64_t offset, nbytes; /* the source range */
  const void* with[2];    /* other data it was made from (a weight's scales and biases) */
  void* data;
  int64_t size;
} dbc_derived;

#define DBC_OWNED_MAPPED 2

typedef struct dbc_storage {
  void* data;
  int64_t nbytes;
  int64_t refcount;
  int owned; /* 1: malloc'd by us; DBC_OWNED_MAPPED: mapped by us (large zeroed tensors); 0: borrowed (mmap'd weights kept alive by the caller) */
  dbc_derived* derived; /* freed with the storage, dropped when it is written */
} dbc_storage;

typedef struct dbc_tensor {
  uint32_t magic;
  int dtype;
  int ndim;
  int64_t shape[DBC_MAX_DIMS];
  int64_t offset; /* bytes into storage */
  dbc_storage* storage;
} dbc_tensor;

#define DBC_TENSOR_MAGIC 0xdbc7e450u

int dbc_fail(int code, const char* fmt, ...);
size_t dbc_dtype_size(int dtype);
const char* dbc_dtype_name(int dtype);
int64_t dbc_numel(const dbc_tensor* t);
static inline void* tdata(const dbc_tensor* t) { return (char*)t->storage->data + t->offset; }
int dbc_new(int dtype, int ndim, const int64_t* shape, dbc_tensor** out);
int dbc_check(void* handle, const char* what, dbc_tensor** out);
int dbc_check_float(const dbc_tensor* t, const char* what);
void* dbc_scratch_alloc(size_t bytes);
void dbc_scratch_free(void* p);
/* The buffer of `kind` derived from t's bytes [0, nbytes) and the data at with[0..1]: made by build(src, dst, ctx) into
 * `size` bytes the first time it is asked for, then the same one until t's storage is freed or written. NULL (error
 * set) when out of memory. */
enum { DBC_DERIVED_ROWS16_Q4 = 1 };
const void* dbc_derived_get(const dbc_tensor* t, int kind, int64_t nbytes, const void* const with[2], int64_t size,
                            void (*build)(const void* src, void* dst, void* ctx), void* ctx);

/* float16 / bfloat16 <-> float32 */
static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
  return (uint16_t)(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
/* Converts n elements of any float dtype to f32. */
void dbc_to_f32(const void* src, int dtype, float* dst, int64_t n);
/* n floats to f16, rounded to nearest even (as the scalar f32_to_f16). */
void dbc_f32_to_f16(const float* src, uint16_t* dst, int64_t n);
/* Reads element i of a float tensor's data as f32. */
static inline float load_f32(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case DBC_F32: return ((const float*)p)[i];
    case DBC_BF16: return bf16_to_f32(((const uint16_t*)p)[i]);
    default: return f16_to_f32(((const uint16_t*)p)[i]);
  }
}

/* A quantized matrix [N, K] as quant.c reads it (experts [E, N, K] appear as [E·N, K]); mx: mxfp4 (u8 scales, no biases). */
typedef struct {
  const uint32_t* w;
  const void* scales;
  const void* biases;
  int sdtype;
  int64_t N, K, words_per_row, groups;
  int gs, bits, mx;
} qmatrix;
int dbc_qmatrix_check(void* wh, void* sh, void* bh, int gs, int bits, const char* name, int64_t* experts, qmatrix* m);
/* Row n of a quantized matrix as K floats, or dotted with K floats of x. */
void dbc_dequant_row(const qmatrix* m, int64_t n, float* out);
float dbc_qrow_dot(const qmatrix* m, int64_t n, const float* x);
static inline float dbc_dot_f32(const float* a, const float* b, int64_t n) {
  float lanes[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) lanes[j] += a[i + j] * b[i + j];
  float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* Thread pool: parallel_for runs fn(ctx, begin, end) over [0, n) in chunks on every worker and the caller. */
typedef void (*dbc_range_fn)(void* ctx, int64_t begin, int64_t end);
void dbc_parallel_for(int64_t n, int64_t min_chunk, dbc_range_fn fn, void* ctx);
int dbc_pool_threads(void);
int dbc_pool_start(int threads);

#endif
