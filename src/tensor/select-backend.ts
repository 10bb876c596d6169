/** `--backend cpu|mlx|auto`: auto takes mlx where it runs on a GPU (Metal or CUDA) and the cpu backend otherwise — an
 * MLX on the CPU alone (Linux without a GPU) is far slower than our kernels — and says why either way. */
import { UsageError } from '../errors.ts'
import type { Backend, Precision } from './backend.ts'
import { openCpuBackend } from './cpu.ts'
import { mlxDevice, openMlxBackend, probe as probeMlx } from './mlx.ts'

export type BackendChoice = 'cpu' | 'mlx' | 'auto'

export interface SelectedBackend {
  backend: Backend
  /** One line for the log: which backend runs and, for auto, why. */
  reason: string
}

export function parseBackendChoice(value: string | undefined): BackendChoice {
  const v = (value ?? 'auto').toLowerCase()
  if (v === 'cpu' || v === 'mlx' || v === 'auto') return v
  throw new UsageError(`unknown backend '${value}'`, 'use cpu, mlx or auto')
}

export function parsePrecision(value: string | undefined): Precision {
  const v = (value ?? 'fast').toLowerCase()
  if (v === 'fast' || v === 'exact') return v
  throw new UsageError(`unknown precision '${value}'`, 'use fast (int8 activations, the default) or exact (float)')
}

export function selectBackend(
  choice: BackendChoice,
  options: { threads?: number; precision?: Precision } = {},
): SelectedBackend {
  if (choice === 'cpu') return { backend: openCpuBackend(options), reason: 'cpu backend (chosen)' }
  const mlx = probeMlx()
  if (choice === 'mlx') {
    if (!mlx.available)
      throw new UsageError(mlx.reason, "install mlx-c and run 'bash scripts/build-mlx-shim.sh', or use --backend cpu")
    return { backend: openMlxBackend(options.precision), reason: 'mlx backend (chosen)' }
  }
  const pick = autoBackend(mlx, mlx.available ? mlxDevice() : undefined)
  return {
    backend: pick.backend === 'mlx' ? openMlxBackend(options.precision) : openCpuBackend(options),
    reason: pick.reason,
  }
}

/** auto's rule as a pure function of what the probe found: mlx only where it has a GPU. */
export function autoBackend(
  mlx: { available: true } | { available: false; reason: string },
  device: 'gpu' | 'cpu' | undefined,
): { backend: 'cpu' | 'mlx'; reason: string } {
  if (!mlx.available) return { backend: 'cpu', reason: `cpu backend (auto: ${mlx.reason})` }
  if (device === 'gpu') return { backend: 'mlx', reason: 'mlx backend (auto: mlx-c found, running on its GPU)' }
  return {
    backend: 'cpu',
    reason:
      'cpu backend (auto: mlx-c found, but MLX has no GPU here (no Metal or CUDA) and runs far slower on the CPU than this backend; --backend mlx forces it)',
  }
}
