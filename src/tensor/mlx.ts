/** The `mlx` Backend: the same ShimBackend over ffi/mlx_glue.c, which maps dbc.h onto mlx-c (Metal on Macs, CPU elsewhere).
 * Available only where the glue library was built against an installed mlx-c (scripts/build-mlx-shim.sh). */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { DbcError } from '../errors.ts'
import type { Backend, BackendProbe, Precision } from './backend.ts'
import { openShimLibrary, type ShimSymbols } from './native.ts'
import { ShimBackend } from './shim-backend.ts'

const GLUE = 'libdbc_mlx.so'

/** Where the glue may live: DBCLUSTER_MLX_SHIM, beside the executable, or the source tree's build/ folder. */
export function mlxGlueCandidates(): string[] {
  return [
    process.env.DBCLUSTER_MLX_SHIM,
    join(dirname(process.execPath), GLUE),
    // the source tree's build/ (not inside a compiled binary, whose modules live in Bun's embedded file system)
    import.meta.dir.includes('$bunfs') ? undefined : join(import.meta.dir, '..', '..', 'build', GLUE),
  ].filter((p): p is string => Boolean(p))
}

let opened: ShimSymbols | undefined

/** The glue library's path, or an error naming where it was looked for. */
export function mlxGluePath(): string {
  const path = mlxGlueCandidates().find((p) => existsSync(p))
  if (!path) {
    throw new DbcError(
      'E_MLX_UNAVAILABLE',
      `mlx backend unavailable: ${GLUE} not found at ${mlxGlueCandidates().join(', ')}`,
      "install mlx-c (macOS: 'brew install mlx-c'), run 'bash scripts/build-mlx-shim.sh', or use --backend cpu",
    )
  }
  return path
}

function openGlue(): ShimSymbols {
  if (opened) return opened
  opened = openShimLibrary(mlxGluePath(), "rebuild it with 'bash scripts/build-mlx-shim.sh'")
  return opened
}

export function probe(): BackendProbe {
  try {
    const lib = openGlue()
    const rc = lib.dbc_init(0)
    if (rc !== 0) return { available: false, reason: String(lib.dbc_last_error()) }
    return { available: true }
  } catch (error) {
    return { available: false, reason: (error as Error).message }
  }
}

/** Where MLX runs here once initialised: its GPU stream (Metal, or CUDA) or, without one, the CPU (from the glue's name). */
export function mlxDevice(): 'gpu' | 'cpu' {
  return String(openGlue().dbc_backend_name()).endsWith('(gpu)') ? 'gpu' : 'cpu'
}

/** `precision` is only recorded: MLX multiplies quantized weights in float whatever it says. */
export function openMlxBackend(precision: Precision = 'fast'): Backend {
  return new ShimBackend('mlx', openGlue(), 0, precision)
}
