/* mlx_distributed.c — MLX distributed groups and all_sum for bun:ffi (ffi/mlx_distributed.h), over mlx-c.
 * Errors go through the glue's error handler and last-error string (never MLX's default handler, which exits). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/* One join at a time; shared with the helper thread, which may outlive a timed-out call (so it is never freed). */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t done_cv;
  int done, rc, abandoned;
  char backend[32];
  int has_backend, strict;
  mlx_distributed_group g;
} join_job;

static void* join_thread(void* arg) {
  join_job* j = arg;
  mlx_distributed_group g = mlx_distributed_group_new();
  int rc = mlx_distributed_init(&g, j->strict != 0, j->has_backend ? j->backend : NULL);
  pthread_mutex_lock(&j->lock);
  j->rc = rc, j->g = g, j->done = 1;
  pthread_cond_signal(&j->done_cv);
  int abandoned = j->abandoned;
  pthread_mutex_unlock(&j->lock);
  if (abandoned && rc == 0) mlx_distributed_group_free(g);
  return NULL;
}

static int join_pending;

int dbc_dist_init(const char* backend, int strict, int timeout_ms, void** out) {
  *out = NULL;
  int rc = ready();
  if (rc) return rc;
  if (join_pending) return mlx_glue_fail(DBC_E_STATE, "an earlier MLX group join timed out and is still blocked: restart the process");
  const char* bk = backend_arg(backend);
  if (bk && strlen(bk) >= sizeof((join_job*)0)->backend) return mlx_glue_fail(DBC_E_ARG, "dist_init: backend name too long");
  join_job* j = calloc(1, sizeof *j);
  if (!j) return mlx_glue_fail(DBC_E_NOMEM, "out of memory");
  pthread_mutex_init(&j->lock, NULL);
  pthread_cond_init(&j->done_cv, NULL);
  j->strict = strict;
  if (bk) strcpy(j->backend, bk), j->has_backend = 1;
  pthread_t t;
  if (pthread_create(&t, NULL, join_thread, j) != 0) {
    free(j);
    return mlx_glue_fail(DBC_E_STATE, "dist_init: cannot start a thread");
  }
  pthread_detach(t);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
  pthread_mutex_lock(&j->lock);
  int waited = 0;
  while (!j->done && waited != ETIMEDOUT) waited = timeout_ms > 0 ? pthread_cond_timedwait(&j->done_cv, &j->lock, &until) : pthread_cond_wait(&j->done_cv, &j->lock);
  int done = j->done;
  if (!done) j->abandoned = 1;
  pthread_mutex_unlock(&j->lock);
  if (!done) {
    join_pending = 1;
    char msg[200];
    snprintf(msg, sizeof msg, "no group within %g s: a rank did not come or cannot reach its neighbour", timeout_ms / 1000.0);
    return mlx_glue_fail(DBC_E_STATE, msg);
  }
  mlx_distributed_group g = j->g;
  rc = j->rc;
  pthread_mutex_destroy(&j->lock);
  pthread_cond_destroy(&j->done_cv);
  free(j);
  if (rc != 0) return DBC_E_STATE; /* the error handler wrote why */
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
