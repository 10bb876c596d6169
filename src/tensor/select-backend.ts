/** `--backend cpu|mlx|auto`: auto takes mlx where it is available and says why when it is not. */
import { UsageError } from '../errors.ts'
import type { Backend } from './backend.ts'
import { openCpuBackend } from './cpu.ts'
import { openMlxBackend, probe as probeMlx } from './mlx.ts'

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

export function selectBackend(choice: BackendChoice, options: { threads?: number } = {}): SelectedBackend {
  if (choice === 'cpu') return { backend: openCpuBackend(options), reason: 'cpu backend (chosen)' }
  const mlx = probeMlx()
  if (choice === 'mlx') {
    if (!mlx.available)
      throw new UsageError(mlx.reason, "install mlx-c and run 'bash scripts/build-mlx-shim.sh', or use --backend cpu")
    return { backend: openMlxBackend(), reason: 'mlx backend (chosen)' }
  }
  if (mlx.available) return { backend: openMlxBackend(), reason: 'mlx backend (auto: mlx-c found)' }
  return { backend: openCpuBackend(options), reason: `cpu backend (auto: ${mlx.reason})` }
}
