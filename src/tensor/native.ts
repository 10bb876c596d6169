/** Opens the C shim (embedded in the binary) and declares ffi/dbc.h's symbols in header order; the tensor-parallel socket calls of the same library are declared in src/tensor-parallel/native-socket.ts. */
import { dlopen, FFIType, ptr, type Pointer } from 'bun:ffi'
import { DbcError } from '../errors.ts'
import { shimLocation } from '../shim-location.ts'

export { shimLocation }

const { ptr: P, i32, i64, f32 } = FFIType

/** ffi/dbc.h, in order. test/tensor/native-abi.test.ts checks names and arity against the header. */
export const SYMBOLS = {
  dbc_last_error: { args: [], returns: FFIType.cstring },
  dbc_abi_version: { args: [], returns: i32 },
  dbc_backend_name: { args: [], returns: FFIType.cstring },
  dbc_init: { args: [i32], returns: i32 },
  dbc_thread_count: { args: [], returns: i32 },
  dbc_live_bytes: { args: [], returns: i64 },

  dbc_tensor_new: { args: [i32, i32, P, P], returns: i32 },
  dbc_tensor_wrap: { args: [i32, i32, P, P, i64, P], returns: i32 },
  dbc_tensor_view: { args: [P, i32, P, i64, P], returns: i32 },
  dbc_tensor_free: { args: [P], returns: i32 },
  dbc_tensor_write: { args: [P, P, i64, i64], returns: i32 },
  dbc_tensor_read: { args: [P, P, i64, i64], returns: i32 },
  dbc_tensor_info: { args: [P, P], returns: i32 },

  dbc_astype: { args: [P, i32, P], returns: i32 },
  dbc_transpose: { args: [P, i32, P, P], returns: i32 },
  dbc_concat: { args: [P, P, i32, P], returns: i32 },
  dbc_slice: { args: [P, i32, i64, i64, P], returns: i32 },

  dbc_matmul: { args: [P, P, P], returns: i32 },
  dbc_linear: { args: [P, P, P, P], returns: i32 },
  dbc_quantized_linear: { args: [P, P, P, P, P, i32, i32, i32, P], returns: i32 },
  dbc_quantized_prepare: { args: [P, P, P, i32, i32], returns: i32 },
  dbc_dequantize: { args: [P, P, P, i32, i32, P], returns: i32 },
  dbc_embedding: { args: [P, P, P], returns: i32 },
  dbc_quantized_embedding: { args: [P, P, P, i32, i32, P, P], returns: i32 },
  dbc_gather_linear: { args: [P, P, P, P, P, P, i32, i32, P], returns: i32 },
  dbc_weighted_sum: { args: [P, P, P], returns: i32 },
  dbc_causal_conv: { args: [P, P, P, P, P, P], returns: i32 },
  dbc_gated_delta: { args: [P, P, P, P, P, P, P, P, P, P, P], returns: i32 },

  dbc_rms_norm: { args: [P, P, f32, P], returns: i32 },
  dbc_rope: { args: [P, P, i32, i32, f32, P, P], returns: i32 },
  dbc_kv_write: { args: [P, P, P, P, i32], returns: i32 },
  dbc_attention: { args: [P, P, P, P, P, f32, P, i32, i32, i32, i32, P, P], returns: i32 },

  dbc_add: { args: [P, P, P], returns: i32 },
  dbc_mul: { args: [P, P, P], returns: i32 },
  dbc_scale: { args: [P, f32, P], returns: i32 },
  dbc_silu: { args: [P, P], returns: i32 },
  dbc_tanh: { args: [P, P], returns: i32 },
  dbc_gelu: { args: [P, i32, P], returns: i32 },
  dbc_glu: { args: [P, P, i32, P], returns: i32 },
  dbc_softmax: { args: [P, P], returns: i32 },
  dbc_argmax: { args: [P, P], returns: i32 },
  dbc_topk: { args: [P, i32, P, P], returns: i32 },

  dbc_memory_read_bench: { args: [i64, i32, i32, P], returns: i32 },

  dbc_kv_block_read: { args: [P, i32, i64, i64, i32, P], returns: i32 },
  dbc_kv_block_write: { args: [P, P, i32, i64, i32], returns: i32 },
} as const

export const ABI_VERSION = 2

/** ffi/mlx_distributed.h, in order: MLX distributed groups, in libdbc_mlx only (test/tensor/native-abi.test.ts checks it). */
export const MLX_DISTRIBUTED_SYMBOLS = {
  dbc_dist_setenv: { args: [P, P], returns: i32 },
  dbc_dist_available: { args: [P], returns: i32 },
  dbc_dist_init: { args: [P, i32, i32, P], returns: i32 },
  dbc_dist_info: { args: [P, P], returns: i32 },
  dbc_dist_all_sum_host: { args: [P, P, i64, i32], returns: i32 },
  dbc_dist_all_sum: { args: [P, P, P], returns: i32 },
  dbc_dist_free: { args: [P], returns: i32 },
  dbc_dist_watchdog_listen: { args: [i32, P, P], returns: i32 },
  dbc_dist_watchdog_connect: { args: [P, i32, P], returns: i32 },
  dbc_dist_watchdog_disarm: { args: [], returns: i32 },
  dbc_last_error: { args: [], returns: FFIType.cstring },
} as const

export type MlxDistributedSymbols = ReturnType<typeof dlopen<typeof MLX_DISTRIBUTED_SYMBOLS>>['symbols']

/** ffi/sample.h, in order: a grammar's mask applied where a logit row is sampled, in libdbc.so only (sampling runs on the
 * host whatever the backend; test/tensor/native-abi.test.ts checks it). */
export const SAMPLE_SYMBOLS = {
  dbc_masked_argmax: { args: [P, i64, P, i64], returns: i32 },
  dbc_masked_candidates: { args: [P, i64, P, i64, FFIType.f64, P], returns: i32 },
  dbc_last_error: { args: [], returns: FFIType.cstring },
} as const

export type SampleSymbols = ReturnType<typeof dlopen<typeof SAMPLE_SYMBOLS>>['symbols']

/** Opens the masked-sampling calls of a cpu shim (a second handle on the same library, so one last-error string). */
export function openSampleLibrary(path: string = shimLocation()): SampleSymbols {
  try {
    return dlopen(path, SAMPLE_SYMBOLS).symbols
  } catch (error) {
    throw new DbcError(
      'E_SHIM_MISSING',
      `cannot load the masked-sampling calls from ${path}: ${(error as Error).message}`,
      "rebuild the compute shim with 'bash scripts/build-shim.sh' (or 'bash scripts/setup.sh')",
    )
  }
}

/** Opens the distributed half of the mlx glue (a second handle on the same library, so one last-error string). */
export function openMlxDistributedLibrary(path: string, hint: string): MlxDistributedSymbols {
  try {
    return dlopen(path, MLX_DISTRIBUTED_SYMBOLS).symbols
  } catch (error) {
    throw new DbcError('E_SHIM_MISSING', `cannot load MLX distributed from ${path}: ${(error as Error).message}`, hint)
  }
}

/** A failed shim call: the C side's code and its last-error message. */
export class NativeError extends DbcError {
  constructor(
    readonly nativeCode: number,
    message: string,
  ) {
    super('E_NATIVE', message)
  }
}

export type ShimSymbols = ReturnType<typeof dlopen<typeof SYMBOLS>>['symbols']

/** Opens a library that implements ffi/dbc.h (the cpu shim, or the mlx glue) and checks its ABI version. */
export function openShimLibrary(path: string, hint: string): ShimSymbols {
  let lib
  try {
    lib = dlopen(path, SYMBOLS)
  } catch (error) {
    throw new DbcError('E_SHIM_MISSING', `cannot load ${path}: ${(error as Error).message}`, hint)
  }
  const version = lib.symbols.dbc_abi_version()
  if (version !== ABI_VERSION) {
    throw new DbcError('E_SHIM_VERSION', `${path} has ABI ${version}, this build expects ${ABI_VERSION}`, hint)
  }
  return lib.symbols
}

let cpuShim: ShimSymbols | undefined
/** The cpu shim, opened once. */
export function shim(): ShimSymbols {
  cpuShim ??= openShimLibrary(
    shimLocation(),
    "rebuild the compute shim with 'bash scripts/build-shim.sh' (or 'bash scripts/setup.sh')",
  )
  return cpuShim
}

/** Throws NativeError when a shim call returned a negative code, with that library's last error. */
export function check(rc: number, lib: ShimSymbols = shim()): void {
  if (rc !== 0) throw new NativeError(rc, String(lib.dbc_last_error()))
}

export { ptr, type Pointer }
