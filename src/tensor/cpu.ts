/** The `cpu` Backend: eager ops over the C shim (ffi/), multithreaded. Always built; the parity reference for `mlx`. */
import type { Backend, BackendProbe, Precision } from './backend.ts'
import { shim } from './native.ts'
import { ShimBackend } from './shim-backend.ts'

export function probe(): BackendProbe {
  try {
    shim()
    return { available: true }
  } catch (error) {
    return { available: false, reason: (error as Error).message }
  }
}

export function openCpuBackend(options: { threads?: number; precision?: Precision } = {}): Backend {
  return new ShimBackend('cpu', shim(), options.threads ?? 0, options.precision)
}
