/** How much memory a node offers the model (weights + KV cache): `--memory SIZE`, or three quarters of its RAM — the
 * share MLX lets the GPU wire on a Mac by default, and on Linux a margin for the OS and page cache. */
import { totalmem } from 'node:os'
import { UsageError } from '../errors.ts'

export const DEFAULT_MEMORY_FRACTION = 0.75

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }

/** Parses sizes like 12G, 512M, 1.5T, 64GiB or plain bytes. */
export function parseSize(value: string, flag = 'memory'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(value)
  const bytes = m ? Number(m[1]) * UNITS[m[2]!.toUpperCase()]! : NaN
  if (!(bytes >= 1)) throw new UsageError(`--${flag} must be a size like 12G, 512M or a byte count, got '${value}'`)
  return Math.floor(bytes)
}

export function usableMemoryBytes(override?: string): number {
  return override !== undefined ? parseSize(override) : Math.floor(totalmem() * DEFAULT_MEMORY_FRACTION)
}
