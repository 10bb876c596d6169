/* mlx_internal.h — what ffi/mlx_glue.c shares with ffi/mlx_distributed.c: the tensor handle and a few helpers.
 * Not part of the ABI (hidden from bun:ffi by the dbc_ prefix rule: none of these start with dbc_). */
#ifndef DBC_MLX_INTERNAL_H
#define DBC_MLX_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include "dbc.h"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "mlx/c/mlx.h"
#pragma GCC diagnostic pop

#define MLX_TENSOR_MAGIC 0xdbc3a1a0u

typedef struct {
  uint32_t magic;
  int dtype; /* DBC_* */
  mlx_array a;
} mlx_tensor;

#define HIDDEN __attribute__((visibility("hidden")))
/* A live tensor handle, or DBC_E_* with the last error set. */
HIDDEN int mlx_glue_get(void* h, const char* what, mlx_tensor** out);
/* Wraps a result array as a new handle (its dtype read back from MLX). */
HIDDEN int mlx_glue_wrap(mlx_array a, void** out);
HIDDEN mlx_dtype mlx_glue_dtype(int dbc_dtype);
HIDDEN size_t mlx_glue_dtype_size(int dbc_dtype);
/* Sets the last error to msg and returns code. */
HIDDEN int mlx_glue_fail(int code, const char* msg);
HIDDEN int mlx_glue_initialised(void);
#endif
