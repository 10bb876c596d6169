/** Free disk space where files are about to land, checked before a download or transfer starts. */
import { existsSync, statfsSync } from 'node:fs'
import { dirname } from 'node:path'
import { DistributionError } from './errors.ts'

/** Bytes an unprivileged user may still write on the file system that holds `path` (or its nearest existing parent). */
export function freeBytes(path: string): number {
  let at = path
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at)
  const s = statfsSync(at)
  return s.bavail * s.bsize
}

export const formatBytes = (n: number): string =>
  n >= 1024 ** 3
    ? `${(n / 1024 ** 3).toFixed(2)} GiB`
    : n >= 1024 ** 2
      ? `${(n / 1024 ** 2).toFixed(1)} MiB`
      : n >= 1024
        ? `${(n / 1024).toFixed(1)} KiB`
        : `${n} B`

/** Throws, naming how much is missing, when `needed` bytes do not fit on the file system of `dir`. */
export function ensureFreeSpace(dir: string, needed: number, what: string): void {
  const free = freeBytes(dir)
  if (needed > free) {
    throw new DistributionError(
      'E_DISK_SPACE',
      `${what} needs ${formatBytes(needed)} on ${dir} but only ${formatBytes(free)} is free: ${formatBytes(needed - free)} missing`,
      'free some space (or choose another folder) and run it again; finished files are kept',
    )
  }
}
