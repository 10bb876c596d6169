/* mlx_glue.c — the same ABI as the CPU shim (dbc.h), implemented over mlx-c, so the `mlx` backend is the `cpu`
 * backend's TypeScript over another library. Built only where mlx-c is installed (scripts/build-mlx-shim.sh).
 * Rules from design/mlx-c.md: an error handler before any other call (MLX's default one exits the process); one
 * last-error string; every call from one thread; handles are opaque; the graph stays lazy until data is read. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mlx_internal.h"

#define MLX_PINNED_VERSION "0.31.2"
#define MAGIC MLX_TENSOR_MAGIC
#define MAX_DIMS 8

typedef mlx_tensor tensor;

static char last_error[1024];
static char backend_name[128] = "mlx";
static mlx_stream stream;
static int initialised;
static int mlx_failed;

static int fail(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return code;
}

static void on_mlx_error(const char* msg, void* data) {
  (void)data;
  snprintf(last_error, sizeof last_error, "mlx: %s", msg);
  mlx_failed = 1;
}

const char* dbc_last_error(void) { return last_error; }
int dbc_abi_version(void) { return DBC_ABI_VERSION; }
const char* dbc_backend_name(void) { return backend_name; }

int dbc_init(int threads) {
  (void)threads;
  if (initialised) return DBC_OK;
  mlx_set_error_handler(on_mlx_error, NULL, NULL);
  mlx_string version = mlx_string_new();
  if (mlx_version(&version) != 0) return fail(DBC_E_STATE, "cannot read the MLX version");
  const char* v = mlx_string_data(version);
  /* DBCLUSTER_MLX_EXPECT_VERSION exists so tests can exercise the refusal without a second MLX install */
  const char* expected = getenv("DBCLUSTER_MLX_EXPECT_VERSION") ? getenv("DBCLUSTER_MLX_EXPECT_VERSION") : MLX_PINNED_VERSION;
  if (strcmp(v, expected) != 0) {
    fail(DBC_E_STATE, "libmlx is version %s but this dbcluster targets MLX %s (mlx-c fba4470); install that release or use --backend cpu",
         v, expected);
    mlx_string_free(version);
    return DBC_E_STATE;
  }
  mlx_failed = 0;
  mlx_stream gpu = mlx_default_gpu_stream_new();
  int use_gpu = gpu.ctx != NULL && !mlx_failed;
  stream = use_gpu ? gpu : mlx_default_cpu_stream_new();
  snprintf(backend_name, sizeof backend_name, "mlx %s (%s)", v, use_gpu ? "gpu" : "cpu");
  mlx_string_free(version);
  last_error[0] = 0;
  initialised = 1;
  return DBC_OK;
}

int dbc_thread_count(void) { return 1; }

int64_t dbc_live_bytes(void) {
  size_t active = 0;
  mlx_get_active_memory(&active);
  return (int64_t)active;
}

/* ---------- handles and dtypes ---------- */

static mlx_dtype to_mlx(int dtype) {
  switch (dtype) {
    case DBC_F32: return MLX_FLOAT32;
    case DBC_F16: return MLX_FLOAT16;
    case DBC_BF16: return MLX_BFLOAT16;
    case DBC_U32: return MLX_UINT32;
    case DBC_I32: return MLX_INT32;
    default: return MLX_UINT8;
  }
}

static int from_mlx(mlx_dtype d) {
  switch (d) {
    case MLX_FLOAT32: return DBC_F32;
    case MLX_FLOAT16: return DBC_F16;
    case MLX_BFLOAT16: return DBC_BF16;
    case MLX_UINT32: return DBC_U32;
    case MLX_INT32: return DBC_I32;
    case MLX_UINT8: return DBC_U8;
    default: return -1;
  }
}

static const char* dtype_name(int dtype) {
  static const char* names[] = {"f32", "f16", "bf16", "u32", "i32", "u8"};
  return dtype >= 0 && dtype <= DBC_U8 ? names[dtype] : "unknown";
}

static size_t dtype_size(int dtype) { return dtype == DBC_F16 || dtype == DBC_BF16 ? 2 : dtype == DBC_U8 ? 1 : 4; }

static int is_float(int dtype) { return dtype == DBC_F32 || dtype == DBC_F16 || dtype == DBC_BF16; }

static int get(void* h, const char* what, tensor** out) {
  tensor* t = h;
  *out = NULL;
  if (!initialised) return fail(DBC_E_STATE, "%s: mlx backend not initialised", what);
  if (!t) return fail(DBC_E_ARG, "%s: null tensor handle", what);
  if (t->magic != MAGIC) return fail(DBC_E_ARG, "%s: not a live tensor handle (freed twice?)", what);
  *out = t;
  return DBC_OK;
}

static int ndim(const tensor* t) { return (int)mlx_array_ndim(t->a); }
static int dim(const tensor* t, int i) { return mlx_array_dim(t->a, i < 0 ? i + ndim(t) : i); }
static int64_t numel(const tensor* t) { return (int64_t)mlx_array_size(t->a); }

/* Wraps a result array; the dtype is read back from MLX. */
static int wrap(mlx_array a, void** out) {
  int d = from_mlx(mlx_array_dtype(a));
  if (d < 0) {
    mlx_array_free(a);
    return fail(DBC_E_ARG, "mlx produced an unsupported dtype %d", (int)mlx_array_dtype(a));
  }
  tensor* t = calloc(1, sizeof *t);
  t->magic = MAGIC;
  t->dtype = d;
  t->a = a;
  *out = t;
  return DBC_OK;
}

/* Runs an mlx-c call; a nonzero return means the error handler already wrote the message. */
#define MLX(call)                                                     \
  do {                                                                \
    if ((call) != 0) return DBC_E_ARG;                                \
  } while (0)

static mlx_array empty(void) { return mlx_array_new(); }

static int as_f32(mlx_array a, mlx_array* out) {
  *out = empty();
  MLX(mlx_astype(out, a, MLX_FLOAT32, stream));
  return DBC_OK;
}

static int eval_host(mlx_array a) {
  MLX(mlx_array_eval(a));
  return DBC_OK;
}

/* Reads a small i32 tensor to the host (positions, slots, ids). */
static int read_i32(const tensor* t, int32_t** out, int64_t* n) {
  mlx_array c = empty();
  MLX(mlx_contiguous(&c, t->a, false, stream));
  if (eval_host(c)) return DBC_E_ARG;
  *n = numel(t);
  *out = malloc(sizeof(int32_t) * (size_t)(*n ? *n : 1));
  memcpy(*out, mlx_array_data_int32(c), sizeof(int32_t) * (size_t)*n);
  mlx_array_free(c);
  return DBC_OK;
}

/* ---------- tensors ---------- */

static int check_shape(int dtype, int nd, const int64_t* shape, int* ishape) {
  if (dtype < 0 || dtype > DBC_U8) return fail(DBC_E_ARG, "unsupported dtype %d", dtype);
  if (nd < 0 || nd > MAX_DIMS) return fail(DBC_E_ARG, "ndim %d out of range 0..%d", nd, MAX_DIMS);
  for (int i = 0; i < nd; i++) {
    if (shape[i] < 0) return fail(DBC_E_ARG, "negative dimension %lld at axis %d", (long long)shape[i], i);
    ishape[i] = (int)shape[i];
  }
  return DBC_OK;
}

int dbc_tensor_new(int dtype, int nd, const int64_t* shape, void** out) {
  int ishape[MAX_DIMS];
  int rc = check_shape(dtype, nd, shape, ishape);
  if (rc || !initialised) return rc ? rc : fail(DBC_E_STATE, "mlx backend not initialised");
  mlx_array a = empty();
  MLX(mlx_zeros(&a, ishape, (size_t)nd, to_mlx(dtype), stream));
  return wrap(a, out);
}

int dbc_tensor_wrap(int dtype, int nd, const int64_t* shape, void* data, int64_t nbytes, void** out) {
  int ishape[MAX_DIMS];
  int rc = check_shape(dtype, nd, shape, ishape);
  if (rc) return rc;
  int64_t need = (int64_t)dtype_size(dtype);
  for (int i = 0; i < nd; i++) need *= shape[i];
  if (need != nbytes) return fail(DBC_E_ARG, "tensor_wrap: shape needs %lld bytes, buffer has %lld", (long long)need, (long long)nbytes);
  /* mlx_array_new_data copies (design/mlx-c.md §1): the caller's buffer need not outlive the tensor */
  return wrap(mlx_array_new_data(data, ishape, nd, to_mlx(dtype)), out);
}

int dbc_tensor_view(void* h, int nd, const int64_t* shape, int64_t offset_elems, void** out) {
  tensor* t;
  int ishape[MAX_DIMS], rc;
  if ((rc = get(h, "tensor_view", &t)) || (rc = check_shape(t->dtype, nd, shape, ishape))) return rc;
  int64_t count = 1;
  for (int i = 0; i < nd; i++) count *= shape[i];
  if (offset_elems < 0 || offset_elems + count > numel(t))
    return fail(DBC_E_ARG, "tensor_view: view of %lld elements at %lld exceeds the source", (long long)count, (long long)offset_elems);
  mlx_array flat = empty(), part = empty(), res = empty();
  int total = (int)numel(t), start = (int)offset_elems, stop = (int)(offset_elems + count), one = 1;
  MLX(mlx_reshape(&flat, t->a, &total, 1, stream));
  MLX(mlx_slice(&part, flat, &start, 1, &stop, 1, &one, 1, stream));
  MLX(mlx_reshape(&res, part, ishape, (size_t)nd, stream));
  mlx_array_free(flat), mlx_array_free(part);
  return wrap(res, out);
}

int dbc_tensor_free(void* h) {
  tensor* t;
  int rc = get(h, "tensor_free", &t);
  if (rc) return rc;
  t->magic = 0;
  mlx_array_free(t->a);
  free(t);
  return DBC_OK;
}

int dbc_tensor_write(void* h, const void* src, int64_t nbytes, int64_t offset) {
  tensor* t;
  int rc = get(h, "tensor_write", &t);
  if (rc) return rc;
  int64_t size = numel(t) * (int64_t)dtype_size(t->dtype);
  if (offset != 0 || nbytes != size) return fail(DBC_E_ARG, "tensor_write: the mlx backend writes whole tensors only");
  int shape[MAX_DIMS];
  for (int i = 0; i < ndim(t); i++) shape[i] = dim(t, i);
  mlx_array a = mlx_array_new_data(src, shape, ndim(t), to_mlx(t->dtype));
  mlx_array_free(t->a);
  t->a = a;
  return DBC_OK;
}

int dbc_tensor_read(void* h, void* dst, int64_t nbytes, int64_t offset) {
  tensor* t;
  int rc = get(h, "tensor_read", &t);
  if (rc) return rc;
  int64_t size = numel(t) * (int64_t)dtype_size(t->dtype);
  if (nbytes < 0 || offset < 0 || offset + nbytes > size)
    return fail(DBC_E_ARG, "range [%lld, %lld) outside the tensor's %lld bytes", (long long)offset, (long long)(offset + nbytes), (long long)size);
  mlx_array c = empty();
  MLX(mlx_contiguous(&c, t->a, false, stream));
  if (eval_host(c)) return DBC_E_ARG;
  const char* p = t->dtype == DBC_F32 ? (const char*)mlx_array_data_float32(c)
                  : t->dtype == DBC_I32 ? (const char*)mlx_array_data_int32(c)
                  : t->dtype == DBC_U32 ? (const char*)mlx_array_data_uint32(c)
                  : t->dtype == DBC_U8 ? (const char*)mlx_array_data_uint8(c)
                                        : (const char*)mlx_array_data_uint16(c); /* f16/bf16 bits */
  if (!p) return fail(DBC_E_STATE, "tensor_read: mlx returned no data");
  memcpy(dst, p + offset, (size_t)nbytes);
  mlx_array_free(c);
  return DBC_OK;
}

int dbc_tensor_info(void* h, int64_t* info) {
  tensor* t;
  int rc = get(h, "tensor_info", &t);
  if (rc) return rc;
  info[0] = t->dtype;
  info[1] = ndim(t);
  for (int i = 0; i < MAX_DIMS; i++) info[2 + i] = i < ndim(t) ? dim(t, i) : 0;
  return DBC_OK;
}

/* ---------- layout ---------- */

int dbc_astype(void* h, int dtype, void** out) {
  tensor* x;
  int rc = get(h, "astype", &x);
  if (rc) return rc;
  int ints = (x->dtype == DBC_I32 || x->dtype == DBC_U32) && (dtype == DBC_I32 || dtype == DBC_U32);
  if (x->dtype != dtype && !ints && (!is_float(x->dtype) || !is_float(dtype)))
    return fail(DBC_E_ARG, "astype: only float dtypes convert (%s -> %s)", dtype_name(x->dtype), dtype_name(dtype));
  mlx_array a = empty();
  if (ints && x->dtype != dtype) MLX(mlx_view(&a, x->a, to_mlx(dtype), stream));
  else MLX(mlx_astype(&a, x->a, to_mlx(dtype), stream));
  return wrap(a, out);
}

int dbc_transpose(void* h, int nd, const int64_t* perm, void** out) {
  tensor* x;
  int rc = get(h, "transpose", &x);
  if (rc) return rc;
  if (nd != ndim(x)) return fail(DBC_E_ARG, "transpose: perm has %d axes, tensor has %d", nd, ndim(x));
  int axes[MAX_DIMS], seen[MAX_DIMS] = {0};
  for (int i = 0; i < nd; i++) {
    if (perm[i] < 0 || perm[i] >= nd || seen[perm[i]]++) return fail(DBC_E_ARG, "transpose: perm is not a permutation");
    axes[i] = (int)perm[i];
  }
  mlx_array a = empty(), c = empty();
  MLX(mlx_transpose_axes(&a, x->a, axes, (size_t)nd, stream));
  MLX(mlx_contiguous(&c, a, false, stream));
  mlx_array_free(a);
  return wrap(c, out);
}

static int concat2(mlx_array a, mlx_array b, int axis, mlx_array* out) {
  mlx_array both[2] = {a, b};
  mlx_vector_array v = mlx_vector_array_new_data(both, 2);
  *out = empty();
  int rc = mlx_concatenate_axis(out, v, axis, stream);
  mlx_vector_array_free(v);
  return rc ? DBC_E_ARG : DBC_OK;
}

int dbc_concat(void* ah, void* bh, int axis, void** out) {
  tensor *a, *b;
  int rc;
  if ((rc = get(ah, "concat a", &a)) || (rc = get(bh, "concat b", &b))) return rc;
  if (a->dtype != b->dtype || ndim(a) != ndim(b)) return fail(DBC_E_ARG, "concat: dtype or rank differ");
  if (axis < 0) axis += ndim(a);
  if (axis < 0 || axis >= ndim(a)) return fail(DBC_E_ARG, "concat: axis out of range");
  for (int i = 0; i < ndim(a); i++)
    if (i != axis && dim(a, i) != dim(b, i)) return fail(DBC_E_ARG, "concat: shapes differ at axis %d (%d vs %d)", i, dim(a, i), dim(b, i));
  mlx_array r;
  if ((rc = concat2(a->a, b->a, axis, &r))) return rc;
  return wrap(r, out);
}

static int slice_axis(mlx_array a, int nd, const int* shape, int axis, int start, int stop, mlx_array* out) {
  int s0[MAX_DIMS], s1[MAX_DIMS], st[MAX_DIMS];
  for (int i = 0; i < nd; i++) s0[i] = 0, s1[i] = shape[i], st[i] = 1;
  s0[axis] = start, s1[axis] = stop;
  *out = empty();
  return mlx_slice(out, a, s0, (size_t)nd, s1, (size_t)nd, st, (size_t)nd, stream) ? DBC_E_ARG : DBC_OK;
}

int dbc_slice(void* h, int axis, int64_t start, int64_t end, void** out) {
  tensor* x;
  int rc = get(h, "slice", &x);
  if (rc) return rc;
  if (axis < 0) axis += ndim(x);
  if (axis < 0 || axis >= ndim(x)) return fail(DBC_E_ARG, "slice: axis out of range");
  if (start < 0 || end > dim(x, axis) || start > end)
    return fail(DBC_E_ARG, "slice: [%lld, %lld) outside axis %d of size %d", (long long)start, (long long)end, axis, dim(x, axis));
  int shape[MAX_DIMS];
  for (int i = 0; i < ndim(x); i++) shape[i] = dim(x, i);
  mlx_array r;
  if ((rc = slice_axis(x->a, ndim(x), shape, axis, (int)start, (int)end, &r))) return rc;
  return wrap(r, out);
}

/* ---------- linear algebra ---------- */

static int linear_check(const tensor* x, int N, int K, const tensor* bias, const char* name) {
  if (x->dtype != DBC_F32 || ndim(x) < 1) return fail(DBC_E_ARG, "%s: x must be f32 [..., K]", name);
  if (dim(x, -1) != K) return fail(DBC_E_ARG, "%s: shape mismatch: x has %d features, the weight expects %d", name, dim(x, -1), K);
  if (bias && (!is_float(bias->dtype) || numel(bias) != N)) return fail(DBC_E_ARG, "%s: bias must be a float [%d]", name, N);
  return DBC_OK;
}

static int add_bias(mlx_array* y, const tensor* bias) {
  if (!bias) return DBC_OK;
  mlx_array b32, r = empty();
  if (as_f32(bias->a, &b32)) return DBC_E_ARG;
  MLX(mlx_add(&r, *y, b32, stream));
  mlx_array_free(b32), mlx_array_free(*y);
  *y = r;
  return DBC_OK;
}

int dbc_matmul(void* ah, void* bh, void** out) {
  tensor *a, *b;
  int rc;
  if ((rc = get(ah, "matmul a", &a)) || (rc = get(bh, "matmul b", &b))) return rc;
  if (a->dtype != DBC_F32 || b->dtype != DBC_F32 || ndim(a) != 2 || ndim(b) != 2) return fail(DBC_E_ARG, "matmul: a and b must be f32 matrices");
  if (dim(a, 1) != dim(b, 0)) return fail(DBC_E_ARG, "matmul: shape mismatch [%d, %d] x [%d, %d]", dim(a, 0), dim(a, 1), dim(b, 0), dim(b, 1));
  mlx_array r = empty();
  MLX(mlx_matmul(&r, a->a, b->a, stream));
  return wrap(r, out);
}

int dbc_linear(void* xh, void* wh, void* bh, void** out) {
  tensor *x, *w, *b = NULL;
  int rc;
  if ((rc = get(xh, "linear x", &x)) || (rc = get(wh, "linear weight", &w))) return rc;
  if (bh && (rc = get(bh, "linear bias", &b))) return rc;
  if (!is_float(w->dtype)) return fail(DBC_E_ARG, "linear weight: expected a float tensor (f32/f16/bf16), got %s", dtype_name(w->dtype));
  if (ndim(w) != 2) return fail(DBC_E_ARG, "linear: weight must be [N, K]");
  if ((rc = linear_check(x, dim(w, 0), dim(w, 1), b, "linear"))) return rc;
  mlx_array w32, wt = empty(), y = empty();
  if (as_f32(w->a, &w32)) return DBC_E_ARG;
  MLX(mlx_transpose(&wt, w32, stream));
  MLX(mlx_matmul(&y, x->a, wt, stream));
  mlx_array_free(w32), mlx_array_free(wt);
  if ((rc = add_bias(&y, b))) return rc;
  return wrap(y, out);
}

/* MLX affine (scales and biases in a float dtype) or, when biases are absent, mxfp4 (bits 4, group 32, u8 E8M0 scales).
 * `experts`: w is [E, N, K·bits/32] with scales/biases [E, N, K/gs]. */
static int quant_check_nd(tensor* w, tensor* s, tensor* b, int gs, int bits, const char* name, int experts, int* N, int* K) {
  if (!b && (bits != 4 || gs != 32)) return fail(DBC_E_ARG, "%s: mxfp4 (no biases) needs bits 4 and group size 32, got %d and %d", name, bits, gs);
  if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8)
    return fail(DBC_E_ARG, "%s: unsupported bits %d (2, 3, 4, 5, 6 or 8)", name, bits);
  if (gs != 32 && gs != 64 && gs != 128) return fail(DBC_E_ARG, "%s: unsupported group size %d (32, 64 or 128)", name, gs);
  int nd = experts ? 3 : 2;
  if (w->dtype != DBC_U32 || ndim(w) != nd) return fail(DBC_E_ARG, "%s: packed weight must be u32 [%sN, K*bits/32], got %s", name, experts ? "E, " : "", dtype_name(w->dtype));
  if (b && (!is_float(s->dtype) || s->dtype != b->dtype)) return fail(DBC_E_ARG, "%s: scales and biases must share a float dtype", name);
  if (!b && s->dtype != DBC_U8) return fail(DBC_E_ARG, "%s: mxfp4 scales must be u8 (E8M0), got %s", name, dtype_name(s->dtype));
  *N = dim(w, nd - 2);
  *K = dim(w, nd - 1) * 32 / bits;
  if (*K % gs) return fail(DBC_E_ARG, "%s: input size %d is not a multiple of group size %d", name, *K, gs);
  for (tensor* t = s; t; t = (t == s ? b : NULL))
    if (ndim(t) != nd || dim(t, nd - 2) != *N || dim(t, nd - 1) != *K / gs || (experts && dim(t, 0) != dim(w, 0)))
      return fail(DBC_E_ARG, "%s: scales/biases must be [%s%d, %d] for a [%d, %d] matrix at group size %d", name, experts ? "E, " : "", *N, *K / gs, *N, *K, gs);
  return DBC_OK;
}

static int quant_check(tensor* w, tensor* s, tensor* b, int gs, int bits, const char* name, int* N, int* K) {
  return quant_check_nd(w, s, b, gs, bits, name, 0, N, K);
}

static mlx_optional_int opt_int(int v) { return (mlx_optional_int){v, true}; }

/* The scales/biases MLX's quantized ops take, and the mode: affine in f32, or mxfp4's u8 scales as they are. */
static int quant_params(mlx_array s, const mlx_array* b, mlx_array* s_out, mlx_array* b_out, const char** mode) {
  *b_out = empty();
  if (!b) {
    *s_out = empty();
    *mode = "mxfp4";
    MLX(mlx_array_set(s_out, s));
    return DBC_OK;
  }
  *mode = "affine";
  if (as_f32(s, s_out) || as_f32(*b, b_out)) return DBC_E_ARG;
  return DBC_OK;
}

int dbc_quantized_linear(void* xh, void* wh, void* sh, void* bh, void* biash, int gs, int bits, int precise, void** out) {
  (void)precise; /* MLX keeps activations in float: always precise */
  tensor *x, *w, *s, *b = NULL, *bias = NULL;
  int rc, N, K;
  if ((rc = get(xh, "quantized_linear x", &x)) || (rc = get(wh, "quantized_linear", &w)) || (rc = get(sh, "quantized_linear", &s))) return rc;
  if (bh && (rc = get(bh, "quantized_linear", &b))) return rc;
  if (biash && (rc = get(biash, "quantized_linear bias", &bias))) return rc;
  if ((rc = quant_check(w, s, b, gs, bits, "quantized_linear", &N, &K)) || (rc = linear_check(x, N, K, bias, "quantized_linear"))) return rc;
  mlx_array s32, b32, y = empty();
  const char* mode;
  if (quant_params(s->a, b ? &b->a : NULL, &s32, &b32, &mode)) return DBC_E_ARG;
  MLX(mlx_quantized_matmul(&y, x->a, w->a, s32, b32, true, opt_int(gs), opt_int(bits), mode, stream));
  mlx_array_free(s32), mlx_array_free(b32);
  if ((rc = add_bias(&y, bias))) return rc;
  return wrap(y, out);
}

static int dequant(tensor* w, mlx_array s, const mlx_array* b, int gs, int bits, mlx_array* out) {
  mlx_array s32, b32;
  const char* mode;
  if (quant_params(s, b, &s32, &b32, &mode)) return DBC_E_ARG;
  *out = empty();
  int rc = mlx_dequantize(out, w->a, s32, b32, opt_int(gs), opt_int(bits), mode, empty(), (mlx_optional_dtype){MLX_FLOAT32, true}, stream);
  mlx_array_free(s32), mlx_array_free(b32);
  return rc ? DBC_E_ARG : DBC_OK;
}

int dbc_quantized_prepare(void* wh, void* sh, void* bh, int gs, int bits) {
  tensor *w, *s, *b = NULL;
  int rc, N, K;
  if ((rc = get(wh, "quantized_prepare", &w)) || (rc = get(sh, "quantized_prepare", &s))) return rc;
  if (bh && (rc = get(bh, "quantized_prepare", &b))) return rc;
  return quant_check(w, s, b, gs, bits, "quantized_prepare", &N, &K); /* MLX's kernels read the MLX layout itself */
}

int dbc_dequantize(void* wh, void* sh, void* bh, int gs, int bits, void** out) {
  tensor *w, *s, *b = NULL;
  int rc, N, K;
  if ((rc = get(wh, "dequantize", &w)) || (rc = get(sh, "dequantize", &s))) return rc;
  if (bh && (rc = get(bh, "dequantize", &b))) return rc;
  if ((rc = quant_check(w, s, b, gs, bits, "dequantize", &N, &K))) return rc;
  mlx_array r;
  if ((rc = dequant(w, s->a, b ? &b->a : NULL, gs, bits, &r))) return rc;
  return wrap(r, out);
}

/* ---------- mixture of experts ---------- */

int dbc_gather_linear(void* xh, void* wh, void* sh, void* bh, void* biash, void* ih, int gs, int bits, void** out) {
  tensor *x, *w, *s = NULL, *b = NULL, *bias = NULL, *idx;
  int rc, E, N, K;
  if ((rc = get(xh, "gather_linear x", &x)) || (rc = get(wh, "gather_linear weight", &w)) || (rc = get(ih, "gather_linear indices", &idx))) return rc;
  if (sh && (rc = get(sh, "gather_linear scales", &s))) return rc;
  if (bh && (rc = get(bh, "gather_linear biases", &b))) return rc;
  if (biash && (rc = get(biash, "gather_linear bias", &bias))) return rc;
  if (s) {
    if ((rc = quant_check_nd(w, s, b, gs, bits, "gather_linear", 1, &N, &K))) return rc;
  } else {
    if (!is_float(w->dtype) || ndim(w) != 3) return fail(DBC_E_ARG, "gather_linear: expert weights must be float [experts, N, K]");
    N = dim(w, 1), K = dim(w, 2);
  }
  E = dim(w, 0);
  if (idx->dtype != DBC_I32 || ndim(idx) != 2) return fail(DBC_E_ARG, "gather_linear: indices must be i32 [rows, k]");
  int R = dim(idx, 0), k = dim(idx, 1);
  if (x->dtype != DBC_F32) return fail(DBC_E_ARG, "gather_linear: x must be f32");
  int per_pair = ndim(x) == 3;
  if (!(ndim(x) == 2 && dim(x, 0) == R && dim(x, 1) == K) && !(per_pair && dim(x, 0) == R && dim(x, 1) == k && dim(x, 2) == K))
    return fail(DBC_E_ARG, "gather_linear: x must be [%d, %d] or [%d, %d, %d]", R, K, R, k, K);
  if (bias && (!is_float(bias->dtype) || ndim(bias) != 2 || dim(bias, 0) != E || dim(bias, 1) != N))
    return fail(DBC_E_ARG, "gather_linear: bias must be [%d, %d]", E, N);
  int32_t* ids;
  int64_t n;
  if (read_i32(idx, &ids, &n)) return DBC_E_ARG;
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= E) {
      int bad = ids[i];
      free(ids);
      return fail(DBC_E_ARG, "gather_linear: expert %d outside 0..%d", bad, E - 1);
    }
  free(ids);
  /* as mlx-lm SwitchLinear: x [R, 1 or k, 1, K] against w[indices] transposed → [R, k, 1, N] */
  int xshape[4] = {R, per_pair ? k : 1, 1, K}, oshape[3] = {R, k, N};
  mlx_array x4 = empty(), y = empty(), y3 = empty();
  MLX(mlx_reshape(&x4, x->a, xshape, 4, stream));
  if (s) {
    mlx_array s32, b32;
    const char* mode;
    if (quant_params(s->a, b ? &b->a : NULL, &s32, &b32, &mode)) return DBC_E_ARG;
    rc = mlx_gather_qmm(&y, x4, w->a, s32, b32, empty(), idx->a, true, opt_int(gs), opt_int(bits), mode, false, stream);
    mlx_array_free(s32), mlx_array_free(b32);
  } else {
    mlx_array w32, wt = empty();
    if (as_f32(w->a, &w32)) return DBC_E_ARG;
    rc = mlx_swapaxes(&wt, w32, -1, -2, stream) || mlx_gather_mm(&y, x4, wt, empty(), idx->a, false, stream);
    mlx_array_free(w32), mlx_array_free(wt);
  }
  mlx_array_free(x4);
  if (rc) return mlx_array_free(y), fail(DBC_E_ARG, "gather_linear: mlx failed");
  MLX(mlx_reshape(&y3, y, oshape, 3, stream));
  mlx_array_free(y);
  if (bias) {
    mlx_array b32, picked = empty(), sum = empty();
    if (as_f32(bias->a, &b32)) return DBC_E_ARG;
    rc = mlx_take_axis(&picked, b32, idx->a, 0, stream) || mlx_add(&sum, y3, picked, stream);
    mlx_array_free(b32), mlx_array_free(picked), mlx_array_free(y3);
    if (rc) return mlx_array_free(sum), fail(DBC_E_ARG, "gather_linear: mlx failed");
    y3 = sum;
  }
  return wrap(y3, out);
}

int dbc_weighted_sum(void* xh, void* wh, void** out) {
  tensor *x, *w;
  int rc;
  if ((rc = get(xh, "weighted_sum x", &x)) || (rc = get(wh, "weighted_sum weights", &w))) return rc;
  if (x->dtype != DBC_F32 || ndim(x) != 3 || w->dtype != DBC_F32 || ndim(w) != 2 || dim(w, 0) != dim(x, 0) || dim(w, 1) != dim(x, 1))
    return fail(DBC_E_ARG, "weighted_sum: x must be f32 [rows, k, N] and weights f32 [rows, k]");
  int wshape[3] = {dim(w, 0), dim(w, 1), 1};
  mlx_array w3 = empty(), p = empty(), r = empty();
  rc = mlx_reshape(&w3, w->a, wshape, 3, stream) || mlx_multiply(&p, x->a, w3, stream) || mlx_sum_axis(&r, p, 1, false, stream);
  mlx_array_free(w3), mlx_array_free(p);
  if (rc) return mlx_array_free(r), fail(DBC_E_ARG, "weighted_sum: mlx failed");
  return wrap(r, out);
}

static int check_ids(const tensor* ids, int vocab, const char* name) {
  if (ids->dtype != DBC_I32) return fail(DBC_E_ARG, "%s: ids must be i32", name);
  int32_t* v;
  int64_t n;
  if (read_i32(ids, &v, &n)) return DBC_E_ARG;
  for (int64_t i = 0; i < n; i++)
    if (v[i] < 0 || v[i] >= vocab) {
      int bad = v[i];
      free(v);
      return fail(DBC_E_ARG, "%s: token id %d outside vocab of %d", name, bad, vocab);
    }
  free(v);
  return DBC_OK;
}

int dbc_embedding(void* th, void* ih, void** out) {
  tensor *t, *ids;
  int rc;
  if ((rc = get(th, "embedding table", &t)) || (rc = get(ih, "embedding ids", &ids))) return rc;
  if (!is_float(t->dtype)) return fail(DBC_E_ARG, "embedding table: expected a float tensor (f32/f16/bf16), got %s", dtype_name(t->dtype));
  if (ndim(t) != 2) return fail(DBC_E_ARG, "embedding: table must be [vocab, hidden]");
  if ((rc = check_ids(ids, dim(t, 0), "embedding"))) return rc;
  mlx_array g = empty(), r;
  MLX(mlx_take_axis(&g, t->a, ids->a, 0, stream));
  if (as_f32(g, &r)) return DBC_E_ARG;
  mlx_array_free(g);
  return wrap(r, out);
}

int dbc_quantized_embedding(void* wh, void* sh, void* bh, int gs, int bits, void* ih, void** out) {
  tensor *w, *s, *b = NULL, *ids;
  int rc, N, K;
  if ((rc = get(wh, "quantized_embedding", &w)) || (rc = get(sh, "quantized_embedding", &s)) || (rc = get(ih, "quantized_embedding ids", &ids)))
    return rc;
  if (bh && (rc = get(bh, "quantized_embedding", &b))) return rc;
  if ((rc = quant_check(w, s, b, gs, bits, "quantized_embedding", &N, &K)) || (rc = check_ids(ids, N, "quantized_embedding"))) return rc;
  mlx_array gw = empty(), gs_ = empty(), gb = empty(), r;
  MLX(mlx_take_axis(&gw, w->a, ids->a, 0, stream));
  MLX(mlx_take_axis(&gs_, s->a, ids->a, 0, stream));
  if (b) MLX(mlx_take_axis(&gb, b->a, ids->a, 0, stream));
  tensor rows = {MAGIC, DBC_U32, gw};
  if ((rc = dequant(&rows, gs_, b ? &gb : NULL, gs, bits, &r))) return rc;
  mlx_array_free(gw), mlx_array_free(gs_), mlx_array_free(gb);
  return wrap(r, out);
}

/* ---------- normalisation, position, attention ---------- */

int dbc_rms_norm(void* xh, void* wh, float eps, void** out) {
  tensor *x, *w;
  int rc;
  if ((rc = get(xh, "rms_norm x", &x)) || (rc = get(wh, "rms_norm weight", &w))) return rc;
  if (x->dtype != DBC_F32 || ndim(x) < 1) return fail(DBC_E_ARG, "rms_norm: x must be f32 with at least one axis");
  if (!is_float(w->dtype) || numel(w) != dim(x, -1))
    return fail(DBC_E_ARG, "rms_norm: weight has %lld elements, last axis is %d", (long long)numel(w), dim(x, -1));
  mlx_array w32, r = empty();
  if (as_f32(w->a, &w32)) return DBC_E_ARG;
  MLX(mlx_fast_rms_norm(&r, x->a, w32, eps, stream));
  mlx_array_free(w32);
  return wrap(r, out);
}

int dbc_rope(void* xh, void* ph, int dims, int traditional, float scale, void* fh, void** out) {
  tensor *x, *pos, *f;
  int rc;
  if ((rc = get(xh, "rope x", &x)) || (rc = get(ph, "rope positions", &pos)) || (rc = get(fh, "rope inv_freq", &f))) return rc;
  if (x->dtype != DBC_F32 || ndim(x) != 3) return fail(DBC_E_ARG, "rope: x must be f32 [rows, heads, head_dim]");
  if (pos->dtype != DBC_I32 || numel(pos) != dim(x, 0)) return fail(DBC_E_ARG, "rope: positions must be i32 [rows]");
  if (dims < 2 || dims % 2 || dims > dim(x, 2)) return fail(DBC_E_ARG, "rope: dims %d must be even and <= head_dim %d", dims, dim(x, 2));
  if (f->dtype != DBC_F32 || numel(f) != dims / 2) return fail(DBC_E_ARG, "rope: inv_freq must be f32 [dims/2]");
  /* MLX rotates along axis -2 from a per-batch offset: make each row its own batch of length 1 */
  int shape4[4] = {dim(x, 0), dim(x, 1), 1, dim(x, 2)}, shape3[3] = {dim(x, 0), dim(x, 1), dim(x, 2)};
  mlx_array x4 = empty(), periods = empty(), r = empty(), r3 = empty();
  MLX(mlx_reshape(&x4, x->a, shape4, 4, stream));
  MLX(mlx_reciprocal(&periods, f->a, stream));
  MLX(mlx_fast_rope_dynamic(&r, x4, dims, traditional != 0, (mlx_optional_float){0, false}, scale, pos->a, periods, stream));
  MLX(mlx_reshape(&r3, r, shape3, 3, stream));
  mlx_array_free(x4), mlx_array_free(periods), mlx_array_free(r);
  return wrap(r3, out);
}

/* Rows of a step grouped into runs that share a slot and have consecutive positions (a prefill chunk is one run). */
typedef struct { int start, count, slot, pos; } run;

static int runs_of(const int32_t* slots, const int32_t* pos, int64_t rows, run* out) {
  int n = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (n > 0 && out[n - 1].slot == slots[r] && out[n - 1].pos + out[n - 1].count == pos[r]) out[n - 1].count++;
    else out[n++] = (run){(int)r, 1, slots[r], pos[r]};
  }
  return n;
}

/* maxlen 0: positions are not bounded by the cache (a ring cache wraps them) */
static int read_rows(const tensor* slots, const tensor* pos, int64_t rows, int nslots, int maxlen, const char* name, int32_t** sl, int32_t** ps) {
  int64_t n1, n2;
  if (slots->dtype != DBC_I32 || pos->dtype != DBC_I32 || numel(slots) != rows || numel(pos) != rows)
    return fail(DBC_E_ARG, "%s: slots and positions must be i32 [rows]", name);
  if (read_i32(slots, sl, &n1) || read_i32(pos, ps, &n2)) return DBC_E_ARG;
  for (int64_t r = 0; r < rows; r++) {
    if ((*sl)[r] < 0 || (*sl)[r] >= nslots) return fail(DBC_E_ARG, "%s: slot %d outside 0..%d", name, (*sl)[r], nslots - 1);
    if ((*ps)[r] < 0 || (maxlen > 0 && (*ps)[r] >= maxlen)) return fail(DBC_E_ARG, "%s: position %d outside the cache length %d", name, (*ps)[r], maxlen);
  }
  return DBC_OK;
}

int dbc_kv_write(void* ch, void* xh, void* sh, void* ph, int ring) {
  tensor *cache, *x, *slots, *pos;
  int rc;
  if ((rc = get(ch, "kv_write cache", &cache)) || (rc = get(xh, "kv_write x", &x)) || (rc = get(sh, "kv_write slots", &slots)) ||
      (rc = get(ph, "kv_write positions", &pos)))
    return rc;
  if (cache->dtype != DBC_F32 || ndim(cache) != 4) return fail(DBC_E_ARG, "kv_write: cache must be f32 [slots, kv_heads, max_len, head_dim]");
  int H = dim(cache, 1), L = dim(cache, 2), D = dim(cache, 3);
  if (x->dtype != DBC_F32 || ndim(x) != 3 || dim(x, 1) != H || dim(x, 2) != D) return fail(DBC_E_ARG, "kv_write: x must be f32 [rows, %d, %d]", H, D);
  int64_t rows = dim(x, 0);
  int32_t *sl = NULL, *ps = NULL;
  if ((rc = read_rows(slots, pos, rows, dim(cache, 0), ring ? 0 : L, "kv_write", &sl, &ps))) return free(sl), free(ps), rc;
  /* a ring cache stores position p at p % L: split runs where they wrap, so each piece is one contiguous update */
  run* runs = malloc(sizeof(run) * (size_t)(rows ? 2 * rows : 1));
  int n = runs_of(sl, ps, rows, runs);
  if (ring) {
    int m = 0;
    run* pieces = malloc(sizeof(run) * (size_t)(2 * rows + 1));
    for (int i = 0; i < n; i++)
      for (int done = 0; done < runs[i].count;) {
        int at = (runs[i].pos + done) % L, take = runs[i].count - done < L - at ? runs[i].count - done : L - at;
        pieces[m++] = (run){runs[i].start + done, take, runs[i].slot, at};
        done += take;
      }
    free(runs), runs = pieces, n = m;
  }
  int xshape[3] = {(int)rows, H, D};
  for (int i = 0; i < n && rc == 0; i++) {
    run g = runs[i];
    if (g.pos + g.count > L) { rc = fail(DBC_E_ARG, "kv_write: position %d outside the cache length %d", g.pos + g.count - 1, L); break; }
    mlx_array part, t = empty(), upd = empty(), next = empty();
    int ushape[4] = {1, H, g.count, D}, perm[3] = {1, 0, 2};
    int start[4] = {g.slot, 0, g.pos, 0}, stop[4] = {g.slot + 1, H, g.pos + g.count, D}, strides[4] = {1, 1, 1, 1};
    if (slice_axis(x->a, 3, xshape, 0, g.start, g.start + g.count, &part) || mlx_transpose_axes(&t, part, perm, 3, stream) ||
        mlx_reshape(&upd, t, ushape, 4, stream) || mlx_slice_update(&next, cache->a, upd, start, 4, stop, 4, strides, 4, stream)) {
      rc = DBC_E_ARG;
      break;
    }
    mlx_array_free(part), mlx_array_free(t), mlx_array_free(upd);
    mlx_array_free(cache->a); /* the update is the only reference left, so MLX can donate the buffer in place */
    cache->a = next;
  }
  free(runs), free(sl), free(ps);
  return rc;
}

int dbc_attention(void* qh, void* kh, void* vh, void* sh, void* ph, float scale, void* mh, int causal, int kv_length, int window,
                  int ring, void* sinkh, void** out) {
  tensor *q, *k, *v, *slots, *pos, *mask = NULL, *sinks = NULL;
  int rc;
  if ((rc = get(qh, "attention q", &q)) || (rc = get(kh, "attention k_cache", &k)) || (rc = get(vh, "attention v_cache", &v)) ||
      (rc = get(sh, "attention slots", &slots)) || (rc = get(ph, "attention positions", &pos)))
    return rc;
  if (mh && (rc = get(mh, "attention mask", &mask))) return rc;
  if (sinkh && (rc = get(sinkh, "attention sinks", &sinks))) return rc;
  if (q->dtype != DBC_F32 || ndim(q) != 3) return fail(DBC_E_ARG, "attention: q must be f32 [rows, heads, head_dim]");
  if (k->dtype != DBC_F32 || v->dtype != DBC_F32 || ndim(k) != 4 || ndim(v) != 4)
    return fail(DBC_E_ARG, "attention: caches must be f32 [slots, kv_heads, max_len, head_dim]");
  int rows = dim(q, 0), H = dim(q, 1), D = dim(q, 2), KH = dim(k, 1), L = dim(k, 2);
  if (dim(k, 3) != D) return fail(DBC_E_ARG, "attention: q head_dim %d != cache head_dim %d", D, dim(k, 3));
  if (KH == 0 || H % KH) return fail(DBC_E_ARG, "attention: %d query heads do not divide into %d kv heads", H, KH);
  if (!causal && (kv_length < 0 || kv_length > L)) return fail(DBC_E_ARG, "attention: kv_length %d outside the cache length %d", kv_length, L);
  if (window < 0) return fail(DBC_E_ARG, "attention: negative window");
  if (ring && (!causal || mh || window < 1 || window > L))
    return fail(DBC_E_ARG, "attention: a ring cache needs causal rows, no mask and a window in 1..%d, got window %d", L, window);
  int width = 0;
  float* host_mask = NULL;
  if (mask) {
    if (mask->dtype != DBC_F32 || ndim(mask) != 2 || dim(mask, 0) != rows) return fail(DBC_E_ARG, "attention: mask must be f32 [rows, keys]");
    width = dim(mask, 1);
    host_mask = malloc(sizeof(float) * (size_t)rows * (size_t)width);
    if (dbc_tensor_read(mask, host_mask, (int64_t)rows * width * 4, 0)) return free(host_mask), DBC_E_ARG;
  }
  if (sinks && (sinks->dtype != DBC_F32 || numel(sinks) != H)) return free(host_mask), fail(DBC_E_ARG, "attention: sinks must be f32 [heads]");
  int32_t *sl = NULL, *ps = NULL;
  if ((rc = read_rows(slots, pos, rows, dim(k, 0), ring ? 0 : L, "attention", &sl, &ps))) return free(sl), free(ps), free(host_mask), rc;
  if (ring) /* every key a row needs must still be in the ring after this call's writes: rows of one slot span <= L - window */
    for (int r = 0; r < rows; r++)
      for (int t = 0; t < rows; t++)
        if (sl[t] == sl[r] && ps[t] - ps[r] > L - window) {
          rc = fail(DBC_E_ARG, "attention: rows of slot %d span positions %d..%d, more than the ring of %d holds with window %d", sl[r], ps[r], ps[t], L, window);
          return free(sl), free(ps), rc;
        }
  run* runs = malloc(sizeof(run) * (size_t)(rows ? rows : 1));
  /* non-causal rows all see the same keys, so any rows of one slot form a run */
  int n = runs_of(sl, ps, rows, runs);
  int qshape[3] = {rows, H, D}, kshape[4] = {dim(k, 0), KH, L, D};
  mlx_array result = empty();
  int have = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    run g = runs[i];
    int keys = causal ? g.pos + g.count : kv_length;
    if (ring && keys > L) keys = L;
    if (mask && width < (causal ? g.pos + g.count : kv_length)) {
      rc = fail(DBC_E_ARG, "attention: mask width %d < keys attended %d", width, keys);
      break;
    }
    mlx_array qpart, qt = empty(), q4 = empty(), kslot, vslot, kk, vv, o = empty(), ot = empty(), o3 = empty(), maskarr = empty();
    int perm[3] = {1, 0, 2}, q4shape[4] = {1, H, g.count, D};
    if (slice_axis(q->a, 3, qshape, 0, g.start, g.start + g.count, &qpart) || mlx_transpose_axes(&qt, qpart, perm, 3, stream) ||
        mlx_reshape(&q4, qt, q4shape, 4, stream) || slice_axis(k->a, 4, kshape, 0, g.slot, g.slot + 1, &kslot) ||
        slice_axis(v->a, 4, kshape, 0, g.slot, g.slot + 1, &vslot)) {
      rc = DBC_E_ARG;
      break;
    }
    int kslot_shape[4] = {1, KH, L, D};
    if (slice_axis(kslot, 4, kslot_shape, 2, 0, keys, &kk) || slice_axis(vslot, 4, kslot_shape, 2, 0, keys, &vv)) { rc = DBC_E_ARG; break; }
    const char* mode = causal ? "causal" : "";
    if (ring) { /* ring index i holds the latest position <= the run's last that is i mod L; mask what is outside each row's window */
      float* m = malloc(sizeof(float) * (size_t)g.count * (size_t)keys);
      int last = g.pos + g.count - 1;
      for (int r = 0; r < g.count; r++)
        for (int i = 0; i < keys; i++) {
          int p = g.pos + r, at = last - ((last - i) % L + L) % L;
          m[(size_t)r * (size_t)keys + (size_t)i] = at >= 0 && at <= p && at > p - window ? 0.0f : -INFINITY;
        }
      int mshape[4] = {1, 1, g.count, keys};
      maskarr = mlx_array_new_data(m, mshape, 4, MLX_FLOAT32);
      free(m);
      mode = "array";
    } else if (mask || window > 0) { /* explicit additive mask [1, 1, count, keys]: causal and window folded in */
      float* m = malloc(sizeof(float) * (size_t)g.count * (size_t)keys);
      for (int r = 0; r < g.count; r++)
        for (int j = 0; j < keys; j++) {
          int p = g.pos + r;
          float val = host_mask ? host_mask[(size_t)(g.start + r) * (size_t)width + (size_t)j] : 0.0f;
          if (causal && j > p) val = -INFINITY;
          if (window > 0 && j <= (causal ? p : kv_length - 1) - window) val = -INFINITY;
          m[(size_t)r * (size_t)keys + (size_t)j] = val;
        }
      int mshape[4] = {1, 1, g.count, keys};
      maskarr = mlx_array_new_data(m, mshape, 4, MLX_FLOAT32);
      free(m);
      mode = "array";
    }
    if (mlx_fast_scaled_dot_product_attention(&o, q4, kk, vv, scale, mode, maskarr, sinks ? sinks->a : empty(), stream) ||
        mlx_transpose_axes(&ot, o, (int[]){0, 2, 1, 3}, 4, stream) || mlx_reshape(&o3, ot, (int[]){g.count, H, D}, 3, stream)) {
      rc = DBC_E_ARG;
      break;
    }
    if (!have) result = o3, have = 1;
    else {
      mlx_array joined;
      if (concat2(result, o3, 0, &joined)) { rc = DBC_E_ARG; break; }
      mlx_array_free(result), mlx_array_free(o3);
      result = joined;
    }
    mlx_array_free(qpart), mlx_array_free(qt), mlx_array_free(q4), mlx_array_free(kslot), mlx_array_free(vslot);
    mlx_array_free(kk), mlx_array_free(vv), mlx_array_free(o), mlx_array_free(ot), mlx_array_free(maskarr);
  }
  free(runs), free(sl), free(ps), free(host_mask);
  if (rc) return rc;
  if (!have) MLX(mlx_zeros(&result, qshape, 3, MLX_FLOAT32, stream));
  return wrap(result, out);
}

/* ---------- elementwise and reductions ---------- */

static int f32_input(void* h, const char* name, tensor** t) {
  int rc = get(h, name, t);
  if (rc) return rc;
  if ((*t)->dtype != DBC_F32) return fail(DBC_E_ARG, "%s: activations must be f32, got %s", name, dtype_name((*t)->dtype));
  return DBC_OK;
}

static int binary(void* ah, void* bh, int mul, const char* name, void** out) {
  tensor *a, *b;
  int rc;
  if ((rc = get(ah, name, &a)) || (rc = get(bh, name, &b))) return rc;
  if (a->dtype != DBC_F32) return fail(DBC_E_ARG, "%s: first operand must be f32, got %s", name, dtype_name(a->dtype));
  if (!is_float(b->dtype)) return fail(DBC_E_ARG, "%s: expected a float tensor (f32/f16/bf16), got %s", name, dtype_name(b->dtype));
  if (ndim(b) > ndim(a)) return fail(DBC_E_ARG, "%s: second operand has more axes than the first", name);
  for (int i = 1; i <= ndim(b); i++)
    if (dim(b, -i) != dim(a, -i))
      return fail(DBC_E_ARG, "%s: shape mismatch: operand b must match the trailing axes of a (axis %d: %d vs %d)", name, ndim(a) - i, dim(b, -i), dim(a, -i));
  mlx_array b32, r = empty();
  if (as_f32(b->a, &b32)) return DBC_E_ARG;
  MLX(mul ? mlx_multiply(&r, a->a, b32, stream) : mlx_add(&r, a->a, b32, stream));
  mlx_array_free(b32);
  return wrap(r, out);
}

int dbc_add(void* a, void* b, void** out) { return binary(a, b, 0, "add", out); }
int dbc_mul(void* a, void* b, void** out) { return binary(a, b, 1, "mul", out); }

int dbc_scale(void* h, float s, void** out) {
  tensor* x;
  int rc = f32_input(h, "scale", &x);
  if (rc) return rc;
  mlx_array f = mlx_array_new_float32(s), r = empty();
  MLX(mlx_multiply(&r, x->a, f, stream));
  mlx_array_free(f);
  return wrap(r, out);
}

/* activation: 0 silu, 1 gelu (erf), 2 gelu (tanh) */
static int activate(mlx_array x, int activation, mlx_array* out) {
  *out = empty();
  mlx_array t = empty(), u = empty(), w = empty();
  if (activation == 0) {
    MLX(mlx_sigmoid(&t, x, stream));
    MLX(mlx_multiply(out, x, t, stream));
  } else if (activation == 1) {
    mlx_array c = mlx_array_new_float32(0.70710678118654752f), half = mlx_array_new_float32(0.5f), one = mlx_array_new_float32(1.0f);
    MLX(mlx_multiply(&t, x, c, stream));
    MLX(mlx_erf(&u, t, stream));
    MLX(mlx_add(&w, u, one, stream));
    mlx_array hx = empty();
    MLX(mlx_multiply(&hx, x, half, stream));
    MLX(mlx_multiply(out, hx, w, stream));
    mlx_array_free(c), mlx_array_free(half), mlx_array_free(one), mlx_array_free(hx);
  } else {
    mlx_array k = mlx_array_new_float32(0.044715f), c = mlx_array_new_float32(0.79788456080286536f), half = mlx_array_new_float32(0.5f),
              one = mlx_array_new_float32(1.0f), x3 = empty(), inner = empty(), th = empty(), hx = empty();
    MLX(mlx_multiply(&t, x, x, stream));
    MLX(mlx_multiply(&x3, t, x, stream));
    MLX(mlx_multiply(&u, x3, k, stream));
    MLX(mlx_add(&inner, x, u, stream));
    MLX(mlx_multiply(&w, inner, c, stream));
    MLX(mlx_tanh(&th, w, stream));
    mlx_array onep = empty();
    MLX(mlx_add(&onep, th, one, stream));
    MLX(mlx_multiply(&hx, x, half, stream));
    MLX(mlx_multiply(out, hx, onep, stream));
    mlx_array_free(k), mlx_array_free(c), mlx_array_free(half), mlx_array_free(one), mlx_array_free(x3), mlx_array_free(inner);
    mlx_array_free(th), mlx_array_free(hx), mlx_array_free(onep);
  }
  mlx_array_free(t), mlx_array_free(u), mlx_array_free(w);
  return DBC_OK;
}

int dbc_silu(void* h, void** out) {
  tensor* x;
  mlx_array r;
  int rc = f32_input(h, "silu", &x);
  if (rc || (rc = activate(x->a, 0, &r))) return rc;
  return wrap(r, out);
}

int dbc_tanh(void* h, void** out) {
  tensor* x;
  int rc = f32_input(h, "tanh", &x);
  if (rc) return rc;
  mlx_array r = empty();
  MLX(mlx_tanh(&r, x->a, stream));
  return wrap(r, out);
}

int dbc_gelu(void* h, int approximate, void** out) {
  tensor* x;
  mlx_array r;
  int rc = f32_input(h, "gelu", &x);
  if (rc || (rc = activate(x->a, approximate ? 2 : 1, &r))) return rc;
  return wrap(r, out);
}

/* GPT-OSS's SwiGLU (mlx-lm gpt_oss.swiglu): min(g, 7)·sigmoid(1.702·min(g, 7))·(clip(u, -7, 7) + 1) */
static int glu_clipped(mlx_array g, mlx_array u, void** out) {
  mlx_array lim = mlx_array_new_float(7.0f), nlim = mlx_array_new_float(-7.0f), one = mlx_array_new_float(1.0f), alpha = mlx_array_new_float(1.702f);
  mlx_array gc = empty(), uc = empty(), ucl = empty(), up1 = empty(), ga = empty(), sig = empty(), t = empty(), r = empty();
  int rc = mlx_minimum(&gc, g, lim, stream) || mlx_maximum(&uc, u, nlim, stream) || mlx_minimum(&ucl, uc, lim, stream) ||
           mlx_add(&up1, ucl, one, stream) || mlx_multiply(&ga, gc, alpha, stream) || mlx_sigmoid(&sig, ga, stream) ||
           mlx_multiply(&t, gc, sig, stream) || mlx_multiply(&r, t, up1, stream);
  mlx_array arrays[] = {lim, nlim, one, alpha, gc, uc, ucl, up1, ga, sig, t};
  for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) mlx_array_free(arrays[i]);
  if (rc) return mlx_array_free(r), fail(DBC_E_ARG, "glu: mlx failed");
  return wrap(r, out);
}

int dbc_glu(void* gh, void* uh, int activation, void** out) {
  tensor *g, *u;
  int rc;
  if ((rc = f32_input(gh, "glu gate", &g)) || (rc = f32_input(uh, "glu up", &u))) return rc;
  if (numel(g) != numel(u)) return fail(DBC_E_ARG, "glu: gate and up differ in size");
  if (activation < 0 || activation > 4)
    return fail(DBC_E_ARG, "glu: activation must be 0 (silu), 1 (gelu), 2 (gelu tanh), 3 (clipped swiglu) or 4 (sigmoid)");
  mlx_array a, r = empty();
  if (activation == 3) return glu_clipped(g->a, u->a, out);
  if (activation == 4) {
    a = empty();
    MLX(mlx_sigmoid(&a, g->a, stream));
    MLX(mlx_multiply(&r, a, u->a, stream));
    mlx_array_free(a);
    return wrap(r, out);
  }
  if ((rc = activate(g->a, activation, &a))) return rc;
  MLX(mlx_multiply(&r, a, u->a, stream));
  mlx_array_free(a);
  return wrap(r, out);
}

int dbc_softmax(void* h, void** out) {
  tensor* x;
  int rc = f32_input(h, "softmax", &x);
  if (rc) return rc;
  mlx_array r = empty();
  MLX(mlx_softmax_axis(&r, x->a, -1, true, stream));
  return wrap(r, out);
}

int dbc_argmax(void* h, void** out) {
  tensor* x;
  int rc = f32_input(h, "argmax", &x);
  if (rc) return rc;
  if (ndim(x) < 1 || dim(x, -1) == 0) return fail(DBC_E_ARG, "argmax: empty last axis");
  mlx_array i = empty(), r = empty();
  MLX(mlx_argmax_axis(&i, x->a, -1, false, stream));
  MLX(mlx_astype(&r, i, MLX_INT32, stream));
  mlx_array_free(i);
  return wrap(r, out);
}

int dbc_topk(void* h, int k, void** values, void** indices) {
  tensor* x;
  int rc = f32_input(h, "topk", &x);
  if (rc) return rc;
  int cols = dim(x, -1);
  if (k < 1 || k > cols) return fail(DBC_E_ARG, "topk: k=%d outside 1..%d", k, cols);
  /* stable sort of -x puts equal values in index order, as the cpu backend does */
  mlx_array neg = empty(), order = empty(), top, idx = empty(), vals = empty();
  MLX(mlx_negative(&neg, x->a, stream));
  MLX(mlx_argsort_axis(&order, neg, -1, stream));
  int shape[MAX_DIMS];
  for (int i = 0; i < ndim(x); i++) shape[i] = dim(x, i);
  if ((rc = slice_axis(order, ndim(x), shape, ndim(x) - 1, 0, k, &top))) return rc;
  MLX(mlx_astype(&idx, top, MLX_INT32, stream));
  MLX(mlx_take_along_axis(&vals, x->a, top, -1, stream));
  mlx_array_free(neg), mlx_array_free(order), mlx_array_free(top);
  if ((rc = wrap(vals, values))) return rc;
  return wrap(idx, indices);
}

int dbc_memory_read_bench(int64_t bytes, int iterations, int threads, double* seconds) {
  (void)bytes, (void)iterations, (void)threads, (void)seconds;
  return fail(DBC_E_STATE, "memory_read_bench runs in the cpu shim (the roofline is the machine's, not the backend's)");
}

/* ---------- linear-attention recurrences ---------- */
/* Built from MLX ops (lazy, on the stream's device): consecutive rows of one slot form a run; a run starting at
 * position 0 starts from a zero state; each run's new state is written back into the slot with slice_update. The
 * recurrence unrolls one row at a time, as mlx-lm's gated_delta_ops does. */

/* Temporaries of one call, freed together at its end (the lazy graph keeps what the results still need). Each lives in
 * its own allocation, so a pointer handed out stays valid while the list grows. */
typedef struct {
  mlx_array** a;
  int n, cap;
} arena;

static mlx_array* fresh(arena* z) {
  if (z->n == z->cap) {
    z->cap = z->cap ? 2 * z->cap : 64;
    z->a = realloc(z->a, sizeof(mlx_array*) * (size_t)z->cap);
  }
  mlx_array* slot = malloc(sizeof(mlx_array));
  *slot = empty();
  return z->a[z->n++] = slot;
}

static void arena_free(arena* z) {
  for (int i = 0; i < z->n; i++) mlx_array_free(*z->a[i]), free(z->a[i]);
  free(z->a);
}

static int recurrent_rows(const tensor* slots, const tensor* pos, int64_t rows, int nslots, const char* name, int32_t** sl, int32_t** ps) {
  int64_t n1, n2;
  if (slots->dtype != DBC_I32 || pos->dtype != DBC_I32 || numel(slots) != rows || numel(pos) != rows)
    return fail(DBC_E_ARG, "%s: slots and positions must be i32 [rows]", name);
  if (read_i32(slots, sl, &n1) || read_i32(pos, ps, &n2)) return DBC_E_ARG;
  for (int64_t r = 0; r < rows; r++) {
    if ((*sl)[r] < 0 || (*sl)[r] >= nslots) return fail(DBC_E_ARG, "%s: slot %d outside 0..%d", name, (*sl)[r], nslots - 1);
    if ((*ps)[r] < 0) return fail(DBC_E_ARG, "%s: negative position %d", name, (*ps)[r]);
  }
  return DBC_OK;
}

/* The slot's state as an array of `shape` (zeros when the run starts the sequence). */
static int slot_state(arena* z, const tensor* st, int slot, int fresh_start, const int* shape, int nd, mlx_array* out) {
  int full[4] = {dim(st, 0), dim(st, 1), dim(st, 2), ndim(st) > 3 ? dim(st, 3) : 1};
  if (fresh_start) return mlx_zeros(out, shape, (size_t)nd, MLX_FLOAT32, stream) ? DBC_E_ARG : DBC_OK;
  mlx_array* one = fresh(z);
  if (slice_axis(st->a, ndim(st), full, 0, slot, slot + 1, one)) return DBC_E_ARG;
  return mlx_reshape(out, *one, shape, (size_t)nd, stream) ? DBC_E_ARG : DBC_OK;
}

/* Writes a run's final state back into the slot. */
static int store_state(tensor* st, int slot, mlx_array value) {
  int nd = ndim(st), shape[4], start[4] = {slot, 0, 0, 0}, stop[4], strides[4] = {1, 1, 1, 1};
  for (int i = 0; i < nd; i++) shape[i] = dim(st, i), stop[i] = shape[i];
  shape[0] = 1, stop[0] = slot + 1;
  mlx_array upd = empty(), next = empty();
  int rc = mlx_reshape(&upd, value, shape, (size_t)nd, stream) || mlx_slice_update(&next, st->a, upd, start, (size_t)nd, stop, (size_t)nd, strides, (size_t)nd, stream);
  mlx_array_free(upd);
  if (rc) return mlx_array_free(next), DBC_E_ARG;
  mlx_array_free(st->a);
  st->a = next;
  return DBC_OK;
}

/* Concatenates the row outputs in order and hands them out. */
static int finish_rows(mlx_vector_array parts, void** out) {
  mlx_array r = empty();
  int rc = mlx_concatenate_axis(&r, parts, 0, stream);
  mlx_vector_array_free(parts);
  if (rc) return mlx_array_free(r), DBC_E_ARG;
  return wrap(r, out);
}

int dbc_causal_conv(void* xh, void* wh, void* sth, void* sh, void* ph, void** out) {
  tensor *x, *w, *st, *slots, *pos;
  int rc;
  if ((rc = get(xh, "causal_conv x", &x)) || (rc = get(wh, "causal_conv weight", &w)) || (rc = get(sth, "causal_conv state", &st)) ||
      (rc = get(sh, "causal_conv slots", &slots)) || (rc = get(ph, "causal_conv positions", &pos)))
    return rc;
  if (x->dtype != DBC_F32 || ndim(x) != 2) return fail(DBC_E_ARG, "causal_conv: x must be f32 [rows, channels]");
  int rows = dim(x, 0), C = dim(x, 1);
  if (!is_float(w->dtype) || ndim(w) != 2 || dim(w, 0) != C) return fail(DBC_E_ARG, "causal_conv: weight must be [%d, kernel]", C);
  int K = dim(w, 1);
  if (K < 2) return fail(DBC_E_ARG, "causal_conv: the mlx backend needs a kernel of at least 2, got %d", K);
  if (st->dtype != DBC_F32 || ndim(st) != 3 || dim(st, 1) != K - 1 || dim(st, 2) != C) return fail(DBC_E_ARG, "causal_conv: state must be f32 [slots, %d, %d]", K - 1, C);
  int32_t *sl = NULL, *ps = NULL;
  if ((rc = recurrent_rows(slots, pos, rows, dim(st, 0), "causal_conv", &sl, &ps))) return free(sl), free(ps), rc;
  run* runs = malloc(sizeof(run) * (size_t)(rows ? rows : 1));
  int n = runs_of(sl, ps, rows, runs);
  arena z = {0};
  mlx_vector_array parts = mlx_vector_array_new();
  mlx_array *w32 = fresh(&z), *wt = fresh(&z);
  int xshape[2] = {rows, C}, wtshape[2] = {K, C};
  rc = mlx_astype(w32, w->a, MLX_FLOAT32, stream) || mlx_transpose(wt, *w32, stream);
  for (int i = 0; i < n && !rc; i++) {
    run g = runs[i];
    int stshape[2] = {K - 1, C}, catshape[2] = {K - 1 + g.count, C};
    mlx_array *prev = fresh(&z), *xin = fresh(&z), *cat = fresh(&z), *acc = NULL;
    rc = slot_state(&z, st, g.slot, g.pos == 0, stshape, 2, prev) || slice_axis(x->a, 2, xshape, 0, g.start, g.start + g.count, xin) ||
         concat2(*prev, *xin, 0, cat);
    /* out = Σ_j cat[j : j + count] · w[:, j] */
    for (int j = 0; j < K && !rc; j++) {
      mlx_array *part = fresh(&z), *wj = fresh(&z), *prod = fresh(&z);
      rc = slice_axis(*cat, 2, catshape, 0, j, j + g.count, part) || slice_axis(*wt, 2, wtshape, 0, j, j + 1, wj) || mlx_multiply(prod, *part, *wj, stream);
      if (!rc && acc) {
        mlx_array* sum = fresh(&z);
        rc = mlx_add(sum, *acc, *prod, stream);
        acc = sum;
      } else acc = prod;
    }
    mlx_array* tail = fresh(&z);
    if (!rc) rc = slice_axis(*cat, 2, catshape, 0, g.count, g.count + K - 1, tail) || store_state(st, g.slot, *tail) || mlx_vector_array_append_value(parts, *acc);
  }
  free(runs), free(sl), free(ps);
  if (rc) return arena_free(&z), mlx_vector_array_free(parts), fail(DBC_E_ARG, "causal_conv: mlx failed");
  rc = finish_rows(parts, out);
  arena_free(&z);
  return rc;
}

int dbc_gated_delta(void* qh, void* kh, void* vh, void* ah, void* bh, void* alh, void* dth, void* sth, void* sh, void* ph, void** out) {
  tensor *q, *k, *v, *a, *b, *al, *dt, *st, *slots, *pos;
  int rc;
  if ((rc = get(qh, "gated_delta q", &q)) || (rc = get(kh, "gated_delta k", &k)) || (rc = get(vh, "gated_delta v", &v)) ||
      (rc = get(ah, "gated_delta a", &a)) || (rc = get(bh, "gated_delta b", &b)) || (rc = get(alh, "gated_delta a_log", &al)) ||
      (rc = get(dth, "gated_delta dt_bias", &dt)) || (rc = get(sth, "gated_delta state", &st)) || (rc = get(sh, "gated_delta slots", &slots)) ||
      (rc = get(ph, "gated_delta positions", &pos)))
    return rc;
  if (q->dtype != DBC_F32 || k->dtype != DBC_F32 || v->dtype != DBC_F32 || a->dtype != DBC_F32 || b->dtype != DBC_F32 || ndim(q) != 3 ||
      ndim(k) != 3 || ndim(v) != 3)
    return fail(DBC_E_ARG, "gated_delta: q, k [rows, Hk, Dk], v [rows, Hv, Dv], a and b [rows, Hv] must be f32");
  int rows = dim(q, 0), Hk = dim(q, 1), Dk = dim(q, 2), Hv = dim(v, 1), Dv = dim(v, 2);
  if (dim(k, 0) != rows || dim(k, 1) != Hk || dim(k, 2) != Dk || dim(v, 0) != rows || Hk == 0 || Hv % Hk)
    return fail(DBC_E_ARG, "gated_delta: q and k must match, and value heads %d must be a multiple of key heads %d", Hv, Hk);
  if (numel(a) != (int64_t)rows * Hv || numel(b) != (int64_t)rows * Hv) return fail(DBC_E_ARG, "gated_delta: a and b must be [rows, %d]", Hv);
  if (!is_float(al->dtype) || !is_float(dt->dtype) || numel(al) != Hv || numel(dt) != Hv)
    return fail(DBC_E_ARG, "gated_delta: a_log and dt_bias must have %d values", Hv);
  if (st->dtype != DBC_F32 || ndim(st) != 4 || dim(st, 1) != Hv || dim(st, 2) != Dv || dim(st, 3) != Dk)
    return fail(DBC_E_ARG, "gated_delta: state must be f32 [slots, %d, %d, %d]", Hv, Dv, Dk);
  int32_t *sl = NULL, *ps = NULL;
  if ((rc = recurrent_rows(slots, pos, rows, dim(st, 0), "gated_delta", &sl, &ps))) return free(sl), free(ps), rc;
  run* runs = malloc(sizeof(run) * (size_t)(rows ? rows : 1));
  int n = runs_of(sl, ps, rows, runs);
  arena z = {0};
  mlx_vector_array parts = mlx_vector_array_new();
  /* decay rates exp(A_log) and dt_bias in f32, once */
  mlx_array *al32 = fresh(&z), *decay = fresh(&z), *dt32 = fresh(&z), *zero = fresh(&z);
  *zero = mlx_array_new_float(0.0f);
  rc = mlx_astype(al32, al->a, MLX_FLOAT32, stream) || mlx_exp(decay, *al32, stream) || mlx_astype(dt32, dt->a, MLX_FLOAT32, stream);
  int qshape[3] = {rows, Hk, Dk}, vshape[3] = {rows, Hv, Dv}, abshape[2] = {rows, Hv};
  int sshape[3] = {Hv, Dv, Dk}, khd[2] = {Hk, Dk}, g3[3] = {Hv, 1, 1}, k3[3] = {Hv, 1, Dk}, d3[3] = {Hv, Dv, 1}, b2[2] = {Hv, 1}, hv2[2] = {Hv, Dv}, y3[3] = {1, Hv, Dv};
  for (int i = 0; i < n && !rc; i++) {
    run g = runs[i];
    mlx_array* S = fresh(&z);
    rc = slot_state(&z, st, g.slot, g.pos == 0, sshape, 3, S);
    for (int t = 0; t < g.count && !rc; t++) {
      int r = g.start + t;
      mlx_array *qr = fresh(&z), *kr = fresh(&z), *vr = fresh(&z), *ar = fresh(&z), *br = fresh(&z);
      mlx_array *q2 = fresh(&z), *k2 = fresh(&z), *qh2 = fresh(&z), *kh2 = fresh(&z), *v2 = fresh(&z);
      rc = slice_axis(q->a, 3, qshape, 0, r, r + 1, qr) || slice_axis(k->a, 3, qshape, 0, r, r + 1, kr) || slice_axis(v->a, 3, vshape, 0, r, r + 1, vr) ||
           slice_axis(a->a, 2, abshape, 0, r, r + 1, ar) || slice_axis(b->a, 2, abshape, 0, r, r + 1, br) || mlx_reshape(q2, *qr, khd, 2, stream) ||
           mlx_reshape(k2, *kr, khd, 2, stream) || mlx_reshape(v2, *vr, hv2, 2, stream);
      /* key heads shared by Hv / Hk value heads each, consecutively (mlx.repeat on the head axis) */
      if (!rc && Hv != Hk) rc = mlx_repeat_axis(qh2, *q2, Hv / Hk, 0, stream) || mlx_repeat_axis(kh2, *k2, Hv / Hk, 0, stream);
      else if (!rc) rc = mlx_array_set(qh2, *q2) || mlx_array_set(kh2, *k2);
      /* g = exp(−exp(A_log)·softplus(a + dt_bias)), β = σ(b) */
      mlx_array *x1 = fresh(&z), *sp = fresh(&z), *e1 = fresh(&z), *ne = fresh(&z), *gg = fresh(&z), *g3a = fresh(&z), *bb = fresh(&z), *beta = fresh(&z);
      mlx_array *ar1 = fresh(&z), *br1 = fresh(&z);
      int hv1[1] = {Hv};
      if (!rc)
        rc = mlx_reshape(ar1, *ar, hv1, 1, stream) || mlx_reshape(br1, *br, hv1, 1, stream) || mlx_add(x1, *ar1, *dt32, stream) ||
             mlx_logaddexp(sp, *x1, *zero, stream) || mlx_multiply(e1, *decay, *sp, stream) || mlx_negative(ne, *e1, stream) || mlx_exp(gg, *ne, stream) ||
             mlx_reshape(g3a, *gg, g3, 3, stream) || mlx_sigmoid(bb, *br1, stream) || mlx_reshape(beta, *bb, b2, 2, stream);
      /* S ← g·S;  δ = (v − Σ S·k)·β;  S ← S + δ ⊗ k;  y = Σ S·q */
      mlx_array *Sd = fresh(&z), *kk = fresh(&z), *sk = fresh(&z), *mem = fresh(&z), *diff = fresh(&z), *delta = fresh(&z), *dd = fresh(&z);
      mlx_array *outer = fresh(&z), *Sn = fresh(&z), *qq = fresh(&z), *sq = fresh(&z), *y = fresh(&z), *yr = fresh(&z);
      if (!rc)
        rc = mlx_multiply(Sd, *S, *g3a, stream) || mlx_reshape(kk, *kh2, k3, 3, stream) || mlx_multiply(sk, *Sd, *kk, stream) ||
             mlx_sum_axis(mem, *sk, 2, false, stream) || mlx_subtract(diff, *v2, *mem, stream) || mlx_multiply(delta, *diff, *beta, stream) ||
             mlx_reshape(dd, *delta, d3, 3, stream) || mlx_multiply(outer, *dd, *kk, stream) || mlx_add(Sn, *Sd, *outer, stream) ||
             mlx_reshape(qq, *qh2, k3, 3, stream) || mlx_multiply(sq, *Sn, *qq, stream) || mlx_sum_axis(y, *sq, 2, false, stream) ||
             mlx_reshape(yr, *y, y3, 3, stream) || mlx_vector_array_append_value(parts, *yr);
      S = Sn;
    }
    if (!rc) rc = store_state(st, g.slot, *S);
  }
  free(runs), free(sl), free(ps);
  if (rc) return arena_free(&z), mlx_vector_array_free(parts), fail(DBC_E_ARG, "gated_delta: mlx failed");
  rc = finish_rows(parts, out);
  arena_free(&z);
  return rc;
}

/* ---------- prefix-cache blocks (dbc.h; the cpu shim's ffi/kv_block.c) ---------- */

/* The run [start, start + n) of `slot` in cache [slots, H, L, D], split where a ring wraps: `first` at index `at`, the rest at 0. */
static int block_run(const tensor* cache, int slot, int64_t start, int64_t n, int ring, const char* name, int* at, int* first) {
  if (ndim(cache) != 4) return fail(DBC_E_ARG, "%s: cache must be [slots, kv_heads, length, head_dim]", name);
  const int64_t L = dim(cache, 2);
  if (slot < 0 || slot >= dim(cache, 0)) return fail(DBC_E_ARG, "%s: slot %d outside 0..%d", name, slot, dim(cache, 0) - 1);
  if (start < 0 || n < 0 || n > L || (!ring && start + n > L))
    return fail(DBC_E_ARG, "%s: positions [%lld, %lld) do not fit a cache of length %lld%s", name, (long long)start, (long long)(start + n),
                (long long)L, ring ? " (ring)" : "");
  *at = (int)(ring && L ? start % L : start);
  *first = (int)(n < L - *at ? n : L - *at);
  return DBC_OK;
}

/* The block gets bytes of its own: a lazy slice would keep the whole cache array (every slot) alive while the block is
 * kept, so the next kv_write could no longer update the cache in place. */
int dbc_kv_block_read(void* ch, int slot, int64_t start, int64_t end, int ring, void** out) {
  tensor* cache;
  int rc, at = 0, first = 0;
  if ((rc = get(ch, "kv_block_read cache", &cache)) || (rc = block_run(cache, slot, start, end - start, ring, "kv_block_read", &at, &first)))
    return rc;
  const int H = dim(cache, 1), L = dim(cache, 2), D = dim(cache, 3), n = (int)(end - start);
  /* the cache itself where it is row-contiguous (a kv_write made it so), else a contiguous copy; evaluated either way */
  mlx_array c = empty();
  bool row_contiguous = false;
  if (eval_host(cache->a) || _mlx_array_is_row_contiguous(&row_contiguous, cache->a)) return DBC_E_ARG;
  if (!row_contiguous) {
    MLX(mlx_contiguous(&c, cache->a, false, stream));
    if (eval_host(c)) return mlx_array_free(c), DBC_E_ARG;
  }
  const mlx_array src = row_contiguous ? cache->a : c;
  const int dt = cache->dtype;
  const char* p = dt == DBC_F32 ? (const char*)mlx_array_data_float32(src)
                  : dt == DBC_I32 ? (const char*)mlx_array_data_int32(src)
                  : dt == DBC_U32 ? (const char*)mlx_array_data_uint32(src)
                  : dt == DBC_U8 ? (const char*)mlx_array_data_uint8(src)
                                 : (const char*)mlx_array_data_uint16(src); /* f16/bf16 bits */
  const size_t row = (size_t)D * dtype_size(dt);
  char* buf = malloc((size_t)H * (size_t)n * row + 1);
  if (!p || !buf) return free(buf), mlx_array_free(c), fail(p ? DBC_E_NOMEM : DBC_E_STATE, "kv_block_read: no data from mlx");
  for (int h = 0; h < H; h++) {
    const char* head = p + ((size_t)slot * H + h) * (size_t)L * row;
    char* dst = buf + (size_t)h * (size_t)n * row;
    memcpy(dst, head + (size_t)at * row, (size_t)first * row);
    memcpy(dst + (size_t)first * row, head, (size_t)(n - first) * row);
  }
  int shape[3] = {H, n, D};
  mlx_array b = mlx_array_new_data(buf, shape, 3, to_mlx(dt)); /* copies */
  free(buf), mlx_array_free(c);
  return wrap(b, out);
}

int dbc_kv_block_write(void* ch, void* bh, int slot, int64_t start, int ring) {
  tensor *cache, *block;
  int rc, at = 0, first = 0;
  if ((rc = get(ch, "kv_block_write cache", &cache)) || (rc = get(bh, "kv_block_write block", &block))) return rc;
  if (ndim(block) != 3 || block->dtype != cache->dtype || (ndim(cache) == 4 && (dim(block, 0) != dim(cache, 1) || dim(block, 2) != dim(cache, 3))))
    return fail(DBC_E_ARG, "kv_block_write: block must be %s [kv_heads, n, head_dim] of the cache's heads and head_dim", dtype_name(cache->dtype));
  if ((rc = block_run(cache, slot, start, dim(block, 1), ring, "kv_block_write", &at, &first))) return rc;
  const int H = dim(cache, 1), D = dim(cache, 3), n = dim(block, 1);
  int bshape[3] = {H, n, D};
  /* one slice_update per piece: the run at `at`, then what wrapped to index 0 */
  const int pieces[2][3] = {{0, first, at}, {first, n, 0}};
  for (int i = 0; i < 2; i++) {
    const int lo = pieces[i][0], hi = pieces[i][1], pos = pieces[i][2];
    if (hi <= lo) continue;
    mlx_array part, upd = empty(), next = empty();
    int ushape[4] = {1, H, hi - lo, D}, s0[4] = {slot, 0, pos, 0}, s1[4] = {slot + 1, H, pos + hi - lo, D}, st[4] = {1, 1, 1, 1};
    if (slice_axis(block->a, 3, bshape, 1, lo, hi, &part)) return DBC_E_ARG;
    rc = mlx_reshape(&upd, part, ushape, 4, stream) || mlx_slice_update(&next, cache->a, upd, s0, 4, s1, 4, st, 4, stream);
    mlx_array_free(part), mlx_array_free(upd);
    if (rc) return mlx_array_free(next), DBC_E_ARG;
    mlx_array_free(cache->a); /* as in kv_write: the update holds the only reference, so MLX can donate the buffer */
    cache->a = next;
  }
  return DBC_OK;
}

/* ---------- for mlx_distributed.c (mlx_internal.h) ---------- */

int mlx_glue_get(void* h, const char* what, tensor** out) { return get(h, what, out); }
int mlx_glue_wrap(mlx_array a, void** out) { return wrap(a, out); }
mlx_dtype mlx_glue_dtype(int dbc_dtype) { return to_mlx(dbc_dtype); }
size_t mlx_glue_dtype_size(int dbc_dtype) { return dtype_size(dbc_dtype); }
int mlx_glue_fail(int code, const char* msg) { return fail(code, "%s", msg); }
int mlx_glue_initialised(void) { return initialised; }
