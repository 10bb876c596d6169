/** The 4/8-bit quantized linear of every kernel path this machine can select, against the float64 reference on odd
 * shapes (row tails, 1/3/5 groups, group sizes 32/64/128, 1–11 rows of x). The path is chosen per process
 * (DBC_NO_AVX512, DBCLUSTER_SHIM), so each runs quant-fidelity.cases.ts in its own. Measured (Zen 5, 2026-12-07): int8
 * paths rms 0.6% (≤ 1%) of the output on N(0, 1) inputs, 1.1–1.7% (≤ 2.8%) with outliers; the generic C build keeps x in float
 * (≤ 1e-6). AVX-512 and AVX2 quantize x alike (per 64; AVX2 per 128 at group 128), so they agree. */
import { describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { cpuFlags, ensureGenericShim, pathEnvironment, type KernelPath } from '../../src/bench/accuracy.ts'
import type { FidelityCase } from './quant-fidelity.cases.ts'

const ROOT = join(import.meta.dir, '..', '..')
const flags = cpuFlags()
const genericShim = ensureGenericShim(ROOT)

function casesFor(path: KernelPath): FidelityCase[] | string {
  const how = pathEnvironment(path, { cpuFlags: flags, genericShim, mlx: { available: false } })
  if ('unavailable' in how) return how.unavailable
  const run = Bun.spawnSync([process.execPath, join(import.meta.dir, 'quant-fidelity.cases.ts')], {
    env: { ...process.env, DBC_NO_AVX512: '', ...how.env },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  if (run.exitCode !== 0) throw new Error(`${path}: ${run.stderr.toString()}`)
  return JSON.parse(run.stdout.toString()) as FidelityCase[]
}

const results = new Map<KernelPath, FidelityCase[] | string>()
for (const path of ['avx512', 'avx2', 'generic'] as const) results.set(path, casesFor(path))
const key = (c: FidelityCase) => `${c.bits}/${c.groupSize}/${c.N}x${c.K}/${c.M}/${c.x}`

describe('quantized linear fidelity per kernel path', () => {
  for (const [path, cases] of results) {
    if (typeof cases === 'string') {
      test.skip(`${path} (skipped: ${cases})`, () => {})
      continue
    }
    test(`${path}: within the int8-activation bound (float x: exact) on every shape`, () => {
      expect(cases.length).toBeGreaterThan(100)
      const int8 = path !== 'generic'
      for (const c of cases) {
        const bound = int8 ? (c.x === 'gauss' ? 0.012 : 0.035) : 1e-6
        if (c.rms >= bound || c.max >= (int8 ? 0.06 : 1e-5))
          throw new Error(`${path} ${key(c)}: rms ${c.rms}, max ${c.max}`)
      }
    })
  }

  const avx512 = results.get('avx512'),
    avx2 = results.get('avx2')
  const both = typeof avx512 !== 'string' && typeof avx2 !== 'string'
  test.skipIf(!both)('AVX-512 is no less faithful than AVX2', () => {
    const theirs = new Map((avx2 as FidelityCase[]).map((c) => [key(c), c]))
    const mean = new Map<string, [number, number]>()
    for (const c of avx512 as FidelityCase[]) {
      const other = theirs.get(key(c))!
      // groups ≤ 64: the same int8 x, only the float summation order differs, so case by case
      if (c.groupSize <= 64) expect(c.rms).toBeLessThanOrEqual(other.rms * 1.02 + 1e-6)
      const at = `${c.bits}/${c.groupSize}/${c.x}`
      const [a, b] = mean.get(at) ?? [0, 0]
      mean.set(at, [a + c.rms, b + other.rms])
    }
    // group 128: AVX-512 scales 4-bit x per 64, AVX2 per 128 (other roundings, so compared on average)
    for (const [at, [ours, theirs]] of mean) expect(ours, at).toBeLessThanOrEqual(theirs * 1.02)
  })
})
