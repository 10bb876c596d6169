/* mlx_distributed.c — MLX distributed groups and all_sum for bun:ffi (ffi/mlx_distributed.h), over mlx-c.
 * Errors go through the glue's error handler and last-error string (never MLX's default handler, which exits). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mlx_distributed.h"
#include "mlx_internal.h"

#define GROUP_MAGIC 0xdbc3d157u

typedef struct {
  uint32_t magic;
  mlx_distributed_group g;
} group;

static mlx_stream cpu_stream;
static int have_cpu_stream;

static int ready(void) {
  if (!mlx_glue_initialised()) {
    int rc = dbc_init(0); /* installs the error handler and checks the MLX version */
    if (rc) return rc;
  }
  if (!have_cpu_stream) {
    cpu_stream = mlx_default_cpu_stream_new();
    have_cpu_stream = 1;
  }
  return DBC_OK;
}

static int get_group(void* h, const char* what, group** out) {
  group* g = h;
  *out = NULL;
  char msg[160];
  if (!g || g->magic != GROUP_MAGIC) {
    snprintf(msg, sizeof msg, "%s: not a live distributed group (freed already?)", what);
    return mlx_glue_fail(DBC_E_ARG, msg);
  }
  *out = g;
  return DBC_OK;
}

static const char* backend_arg(const char* backend) {
  return backend && strcmp(backend, "any") != 0 ? backend : NULL;
}

int dbc_dist_setenv(const char* name, const char* value) {
  if (!name || !*name || strchr(name, '=')) return mlx_glue_fail(DBC_E_ARG, "setenv: bad variable name");
  int rc = value && *value ? setenv(name, value, 1) : unsetenv(name);
  return rc ? mlx_glue_fail(DBC_E_ARG, "setenv failed") : DBC_OK;
}

int dbc_dist_available(const char* backend) {
  if (ready()) return 0;
  return mlx_distributed_is_available(backend_arg(backend)) ? 1 : 0;
}

int dbc_dist_init(const char* backend, int strict, void** out) {
  *out = NULL;
  int rc = ready();
  if (rc) return rc;
  mlx_distributed_group g = mlx_distributed_group_new();
  if (mlx_distributed_init(&g, strict != 0, backend_arg(backend)) != 0) return DBC_E_STATE; /* the handler wrote why */
  if (!g.ctx) return mlx_glue_fail(DBC_E_STATE, "mlx distributed init returned no group");
  group* h = calloc(1, sizeof *h);
  if (!h) return mlx_glue_fail(DBC_E_NOMEM, "out of memory");
  h->magic = GROUP_MAGIC;
  h->g = g;
  *out = h;
  return DBC_OK;
}

int dbc_dist_info(void* h, int32_t* out) {
  group* g;
  int rc = get_group(h, "dist_info", &g);
  if (rc) return rc;
  out[0] = mlx_distributed_group_rank(g->g);
  out[1] = mlx_distributed_group_size(g->g);
  return DBC_OK;
}

int dbc_dist_all_sum_host(void* h, void* data, int64_t count, int dtype) {
  group* g;
  int rc = get_group(h, "all_sum", &g);
  if (rc) return rc;
  if (dtype < 0 || dtype > DBC_U8) return mlx_glue_fail(DBC_E_ARG, "all_sum: unsupported dtype");
  if (count < 1 || count > 0x7fffffff) return mlx_glue_fail(DBC_E_ARG, "all_sum: element count out of range 1..2^31-1");
  if (!data) return mlx_glue_fail(DBC_E_ARG, "all_sum: null buffer");
  int shape = (int)count;
  mlx_array x = mlx_array_new_data(data, &shape, 1, mlx_glue_dtype(dtype)); /* copies */
  mlx_array y = mlx_array_new();
  rc = DBC_OK;
  if (mlx_distributed_all_sum(&y, x, g->g, cpu_stream) != 0 || mlx_array_eval(y) != 0) rc = DBC_E_STATE;
  if (!rc) {
    /* the raw bytes: every data_* accessor is a reinterpret of the same buffer (design/mlx-c.md §1) */
    const void* p = mlx_array_data_uint8(y);
    if (!p) rc = mlx_glue_fail(DBC_E_STATE, "all_sum: mlx returned no data");
    else memcpy(data, p, (size_t)count * mlx_glue_dtype_size(dtype));
  }
  mlx_array_free(x);
  mlx_array_free(y);
  return rc;
}

int dbc_dist_all_sum(void* h, void* xh, void** out) {
  group* g;
  mlx_tensor* x;
  int rc;
  if ((rc = get_group(h, "all_sum", &g)) || (rc = mlx_glue_get(xh, "all_sum x", &x))) return rc;
  mlx_array y = mlx_array_new();
  if (mlx_distributed_all_sum(&y, x->a, g->g, cpu_stream) != 0) return DBC_E_STATE;
  return mlx_glue_wrap(y, out);
}

int dbc_dist_free(void* h) {
  group* g;
  int rc = get_group(h, "dist_free", &g);
  if (rc) return rc;
  g->magic = 0;
  mlx_distributed_group_free(g->g);
  free(g);
  return DBC_OK;
}
