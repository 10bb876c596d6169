/* tensor.c — tensor handles, storage refcounts, the last-error string and dtype conversion. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include "internal.h"

static _Thread_local char last_error[512];
static int64_t live_bytes; /* bytes owned by live storages (atomic) */

const char* dbc_last_error(void) { return last_error; }
int dbc_abi_version(void) { return DBC_ABI_VERSION; }
const char* dbc_backend_name(void) { return "cpu"; }
int64_t dbc_live_bytes(void) { return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED); }

int dbc_fail(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return code;
}

size_t dbc_dtype_size(int dtype) {
  switch (dtype) {
    case DBC_F32: case DBC_U32: case DBC_I32: return 4;
    case DBC_F16: case DBC_BF16: return 2;
    case DBC_U8: return 1;
    default: return 0;
  }
}

const char* dbc_dtype_name(int dtype) {
  static const char* names[] = {"f32", "f16", "bf16", "u32", "i32", "u8"};
  return dtype >= 0 && dtype <= DBC_U8 ? names[dtype] : "unknown";
}

int64_t dbc_numel(const dbc_tensor* t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

void* dbc_scratch_alloc(size_t bytes) {
  void* p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
  return p;
}
void dbc_scratch_free(void* p) { free(p); }

/* Memory a kernel streams through once per step (repacked weights): on 2 MiB pages where the kernel gives them, so that
 * reading it misses the TLB once per 2 MiB instead of once per 4 KiB (in a virtual machine each miss walks two page
 * tables). */
static void* alloc_huge(size_t bytes) {
  const size_t huge = (size_t)2 << 20;
  void* p = NULL;
  if (posix_memalign(&p, bytes >= huge ? huge : 64, bytes ? bytes : 64) != 0) return NULL;
#ifdef MADV_HUGEPAGE
  if (bytes >= huge) madvise(p, bytes, MADV_HUGEPAGE); /* a hint: ignored where unsupported */
#endif
  return p;
}

const void* dbc_derived_get(const dbc_tensor* t, int kind, int64_t nbytes, const void* const with[2], int64_t size,
                            void (*build)(const void* src, void* dst, void* ctx), void* ctx) {
  dbc_storage* s = t->storage;
  for (dbc_derived* d = __atomic_load_n(&s->derived, __ATOMIC_ACQUIRE); d; d = d->next)
    if (d->kind == kind && d->offset == t->offset && d->nbytes == nbytes && d->with[0] == with[0] && d->with[1] == with[1]) return d->data;
  dbc_derived* d = calloc(1, sizeof *d);
  void* data = alloc_huge((size_t)size);
  if (!d || !data) {
    free(d), free(data);
    dbc_fail(DBC_E_NOMEM, "out of memory making a %lld-byte kernel layout of a weight", (long long)size);
    return NULL;
  }
  build(tdata(t), data, ctx);
  *d = (dbc_derived){.kind = kind, .offset = t->offset, .nbytes = nbytes, .with = {with[0], with[1]}, .data = data, .size = size};
  __atomic_add_fetch(&live_bytes, size, __ATOMIC_RELAXED);
  /* two threads that raced both add theirs: equal copies, both freed with the storage */
  d->next = __atomic_load_n(&s->derived, __ATOMIC_ACQUIRE);
  while (!__atomic_compare_exchange_n(&s->derived, &d->next, d, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    ;
  return d->data;
}

static void drop_derived(dbc_storage* s) {
  dbc_derived* d = __atomic_exchange_n(&s->derived, NULL, __ATOMIC_ACQ_REL);
  while (d) {
    dbc_derived* next = d->next;
    __atomic_sub_fetch(&live_bytes, d->size, __ATOMIC_RELAXED);
    free(d->data);
    free(d);
    d = next;
  }
}

static int check_shape(int dtype, int ndim, const int64_t* shape) {
  if (dbc_dtype_size(dtype) == 0) return dbc_fail(DBC_E_ARG, "unsupported dtype %d", dtype);
  if (ndim < 0 || ndim > DBC_MAX_DIMS) return dbc_fail(DBC_E_ARG, "ndim %d out of range 0..%d", ndim, DBC_MAX_DIMS);
  if (ndim > 0 && !shape) return dbc_fail(DBC_E_ARG, "shape is null");
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0) return dbc_fail(DBC_E_ARG, "negative dimension %lld at axis %d", (long long)shape[i], i);
  return DBC_OK;
}

static dbc_tensor* header(int dtype, int ndim, const int64_t* shape) {
  dbc_tensor* t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->magic = DBC_TENSOR_MAGIC;
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  return t;
}

int dbc_new(int dtype, int ndim, const int64_t* shape, dbc_tensor** out) {
  int rc = check_shape(dtype, ndim, shape);
  if (rc) return rc;
  dbc_tensor* t = header(dtype, ndim, shape);
  dbc_storage* s = calloc(1, sizeof *s);
  int64_t nbytes = dbc_numel(t) * (int64_t)dbc_dtype_size(dtype);
  void* data = dbc_scratch_alloc((size_t)nbytes);
  if (!t || !s || !data) {
    free(t), free(s), free(data);
    return dbc_fail(DBC_E_NOMEM, "out of memory allocating %lld bytes", (long long)nbytes);
  }
  s->data = data;
  s->nbytes = nbytes;
  s->refcount = 1;
  s->owned = 1;
  t->storage = s;
  __atomic_add_fetch(&live_bytes, nbytes, __ATOMIC_RELAXED);
  *out = t;
  return DBC_OK;
}

int dbc_check(void* handle, const char* what, dbc_tensor** out) {
  dbc_tensor* t = handle;
  if (!t) return dbc_fail(DBC_E_ARG, "%s: null tensor handle", what);
  if (t->magic != DBC_TENSOR_MAGIC) return dbc_fail(DBC_E_ARG, "%s: not a live tensor handle (freed twice?)", what);
  *out = t;
  return DBC_OK;
}

int dbc_check_float(const dbc_tensor* t, const char* what) {
  if (t->dtype == DBC_F32 || t->dtype == DBC_F16 || t->dtype == DBC_BF16) return DBC_OK;
  return dbc_fail(DBC_E_ARG, "%s: expected a float tensor (f32/f16/bf16), got %s", what, dbc_dtype_name(t->dtype));
}

/* Zeroed tensors of 32 MiB and more (KV caches; glibc maps anything that large anyway) are mapped straight from the kernel
 * and populated by it in one call: zeroing them with memset took a page fault per 4 KiB (in a VM, 5 GB of KV kept a
 * 2-node head busy for over 15 s at load, its links unanswered), and leaving them to fault in as decoding writes them
 * put those faults into every step (serving at c=8 lost a third of its throughput). Smaller ones come from the heap,
 * which keeps freed memory for the next step (threads.c). */
#define MAPPED_ZEROS_MIN (32 << 20)

static void populate(void* data, size_t bytes) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(data, bytes, MADV_POPULATE_WRITE) == 0) return;
#endif
  memset(data, 0, bytes); /* older kernels, other systems: fault them in here */
}

int dbc_tensor_new(int dtype, int ndim, const int64_t* shape, void** out) {
  if (!out) return dbc_fail(DBC_E_ARG, "tensor_new: out is null");
  int rc = check_shape(dtype, ndim, shape);
  if (rc) return rc;
  dbc_tensor* t = header(dtype, ndim, shape);
  const int64_t nbytes = t ? dbc_numel(t) * (int64_t)dbc_dtype_size(dtype) : 0;
  if (t && nbytes >= MAPPED_ZEROS_MIN) {
    dbc_storage* s = calloc(1, sizeof *s);
    void* data = mmap(NULL, (size_t)nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!s || data == MAP_FAILED) {
      free(t), free(s);
      if (data != MAP_FAILED) munmap(data, (size_t)nbytes);
      return dbc_fail(DBC_E_NOMEM, "out of memory mapping %lld zeroed bytes", (long long)nbytes);
    }
    populate(data, (size_t)nbytes);
    *s = (dbc_storage){.data = data, .nbytes = nbytes, .refcount = 1, .owned = DBC_OWNED_MAPPED};
    t->storage = s;
    __atomic_add_fetch(&live_bytes, nbytes, __ATOMIC_RELAXED);
    *out = t;
    return DBC_OK;
  }
  free(t);
  if ((rc = dbc_new(dtype, ndim, shape, &t))) return rc;
  memset(tdata(t), 0, (size_t)t->storage->nbytes);
  *out = t;
  return DBC_OK;
}

int dbc_tensor_wrap(int dtype, int ndim, const int64_t* shape, void* data, int64_t nbytes, void** out) {
  if (!out || !data) return dbc_fail(DBC_E_ARG, "tensor_wrap: null data or out");
  int rc = check_shape(dtype, ndim, shape);
  if (rc) return rc;
  dbc_tensor* t = header(dtype, ndim, shape);
  int64_t need = dbc_numel(t) * (int64_t)dbc_dtype_size(dtype);
  if (need != nbytes) {
    free(t);
    return dbc_fail(DBC_E_ARG, "tensor_wrap: shape needs %lld bytes, buffer has %lld", (long long)need, (long long)nbytes);
  }
  dbc_storage* s = calloc(1, sizeof *s);
  s->data = data;
  s->nbytes = nbytes;
  s->refcount = 1;
  s->owned = 0;
  t->storage = s;
  *out = t;
  return DBC_OK;
}

int dbc_tensor_view(void* handle, int ndim, const int64_t* shape, int64_t offset_elems, void** out) {
  dbc_tensor* src;
  int rc = dbc_check(handle, "tensor_view", &src);
  if (rc) return rc;
  if ((rc = check_shape(src->dtype, ndim, shape))) return rc;
  dbc_tensor* t = header(src->dtype, ndim, shape);
  int64_t es = (int64_t)dbc_dtype_size(src->dtype);
  int64_t start = src->offset + offset_elems * es;
  int64_t count = dbc_numel(t);
  if (offset_elems < 0 || start + count * es > src->storage->nbytes) {
    free(t);
    return dbc_fail(DBC_E_ARG, "tensor_view: view of %lld elements at %lld exceeds the source", (long long)count,
                    (long long)offset_elems);
  }
  t->offset = start;
  t->storage = src->storage;
  __atomic_add_fetch(&src->storage->refcount, 1, __ATOMIC_RELAXED);
  *out = t;
  return DBC_OK;
}

int dbc_tensor_free(void* handle) {
  dbc_tensor* t;
  int rc = dbc_check(handle, "tensor_free", &t);
  if (rc) return rc;
  dbc_storage* s = t->storage;
  t->magic = 0;
  free(t);
  if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
    drop_derived(s);
    if (s->owned) {
      __atomic_sub_fetch(&live_bytes, s->nbytes, __ATOMIC_RELAXED);
      if (s->owned == DBC_OWNED_MAPPED) munmap(s->data, (size_t)s->nbytes);
      else free(s->data);
    }
    free(s);
  }
  return DBC_OK;
}

static int rw_check(dbc_tensor* t, int64_t nbytes, int64_t offset) {
  int64_t size = dbc_numel(t) * (int64_t)dbc_dtype_size(t->dtype);
  if (nbytes < 0 || offset < 0 || offset + nbytes > size)
    return dbc_fail(DBC_E_ARG, "range [%lld, %lld) outside the tensor's %lld bytes", (long long)offset,
                    (long long)(offset + nbytes), (long long)size);
  return DBC_OK;
}

int dbc_tensor_write(void* handle, const void* src, int64_t nbytes, int64_t offset) {
  dbc_tensor* t;
  int rc = dbc_check(handle, "tensor_write", &t);
  if (rc || (rc = rw_check(t, nbytes, offset))) return rc;
  if (nbytes && !src) return dbc_fail(DBC_E_ARG, "tensor_write: null source");
  drop_derived(t->storage); /* made from the old bytes */
  memcpy((char*)tdata(t) + offset, src, (size_t)nbytes);
  return DBC_OK;
}

int dbc_tensor_read(void* handle, void* dst, int64_t nbytes, int64_t offset) {
  dbc_tensor* t;
  int rc = dbc_check(handle, "tensor_read", &t);
  if (rc || (rc = rw_check(t, nbytes, offset))) return rc;
  if (nbytes && !dst) return dbc_fail(DBC_E_ARG, "tensor_read: null destination");
  memcpy(dst, (char*)tdata(t) + offset, (size_t)nbytes);
  return DBC_OK;
}

/* info = [dtype, ndim, shape[0..7]] */
int dbc_tensor_info(void* handle, int64_t* info) {
  dbc_tensor* t;
  int rc = dbc_check(handle, "tensor_info", &t);
  if (rc) return rc;
  if (!info) return dbc_fail(DBC_E_ARG, "tensor_info: null info");
  info[0] = t->dtype;
  info[1] = t->ndim;
  for (int i = 0; i < DBC_MAX_DIMS; i++) info[2 + i] = i < t->ndim ? t->shape[i] : 0;
  return DBC_OK;
}

float f16_to_f32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#elif defined(__aarch64__)
  __fp16 v;
  memcpy(&v, &h, 2);
  return (float)v;
#else
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else { /* subnormal */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) man <<= 1, exp--;
      u = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}

uint16_t f32_to_f16(float f) {
#if defined(__F16C__)
  return _cvtss_sh(f, 0);
#elif defined(__aarch64__)
  __fp16 v = (__fp16)f;
  uint16_t h;
  memcpy(&h, &v, 2);
  return h;
#else
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to inf */
  if (a < 0x38800000u) { /* subnormal or zero: round via float arithmetic */
    float v;
    memcpy(&v, &a, 4);
    return (uint16_t)(sign | (uint32_t)(v * 16777216.0f + 0.5f));
  }
  uint32_t r = a + 0xfff + ((a >> 13) & 1);
  return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
#endif
}

void dbc_f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i*)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

void dbc_to_f32(const void* src, int dtype, float* dst, int64_t n) {
  if (dtype == DBC_F32) {
    memcpy(dst, src, (size_t)n * 4);
  } else if (dtype == DBC_BF16) {
    const uint16_t* s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
  } else {
    const uint16_t* s = src;
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + i))));
#endif
    for (; i < n; i++) dst[i] = f16_to_f32(s[i]);
  }
}
