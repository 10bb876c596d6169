/** The linear with bf16 weights on every kernel path this machine can select, against the float64 reference on odd
 * shapes (rows of x below and past the matrix-vector limit of 16, row tails past the GEMM's tiles, K not a multiple of
 * 32 and across its blocks). The path is chosen per process (DBC_NO_AVX512, DBCLUSTER_SHIM), so each runs
 * bf16-linear.cases.ts in its own. With AVX-512 BF16, 16 rows and more take the VDPBF16PS kernel (x split into two bf16
 * terms): measured (Zen 5, 2026-12-08) rms 2–4e-6 of the output, against 3e-7 for sgemm on converted weights (AVX2,
 * generic); both far inside the float models' 1e-4. */
import { describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { cpuFlags, ensureGenericShim, pathEnvironment, type KernelPath } from '../../src/bench/accuracy.ts'
import type { Bf16Cases } from './bf16-linear.cases.ts'

const ROOT = join(import.meta.dir, '..', '..')
const flags = cpuFlags()
const genericShim = ensureGenericShim(ROOT)

function casesFor(path: KernelPath): Bf16Cases | string {
  const how = pathEnvironment(path, { cpuFlags: flags, genericShim, mlx: { available: false } })
  if ('unavailable' in how) return how.unavailable
  const run = Bun.spawnSync([process.execPath, join(import.meta.dir, 'bf16-linear.cases.ts')], {
    env: { ...process.env, DBC_NO_AVX512: '', ...how.env },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  if (run.exitCode !== 0) throw new Error(`${path}: ${run.stderr.toString()}`)
  return JSON.parse(run.stdout.toString()) as Bf16Cases
}

describe('linear with bf16 weights per kernel path', () => {
  for (const path of ['avx512', 'avx2', 'generic'] as const) {
    const result = casesFor(path)
    if (typeof result === 'string') {
      test.skip(`${path} (skipped: ${result})`, () => {})
      continue
    }
    test(`${path}: within 1e-5 of the float64 reference on every shape and row count`, () => {
      expect(result.cases.length).toBe(84)
      for (const c of result.cases)
        if (!(c.rms < 1e-5 && c.max < 2e-5))
          throw new Error(`${path} ${c.N}x${c.K}, ${c.M} rows, ${c.x}: rms ${c.rms}, max ${c.max}`)
    })
    // our kernel sums each output in one order wherever its row falls (sgemm need not)
    if (path === 'avx512' && flags.has('avx512_bf16'))
      test(`${path}: from 16 rows on, a row's result does not depend on how many rows came with it`, () => {
        expect(result.rowsIndependentOfM).toEqual(
          Object.fromEntries(Object.keys(result.rowsIndependentOfM).map((k) => [k, true])),
        )
      })
  }
})
