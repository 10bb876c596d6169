/** The backend suite on the mlx backend: CPU backend == MLX backend on the same inputs. Skipped, with the reason, where
 * mlx-c and the glue (scripts/build-mlx-shim.sh) are not installed — CI has no MLX. */
import { expect, test } from 'bun:test'
import { openMlxBackend, probe } from '../../src/tensor/mlx.ts'
import { runBackendSuite } from './backend.suite.ts'

const availability = probe()
if (availability.available) {
  runBackendSuite('mlx', () => openMlxBackend())
} else {
  test.skip(`mlx backend suite (skipped: ${availability.reason})`, () => {})
}

test.skipIf(!availability.available)(
  `a libmlx of another version is refused with a clear message${availability.available ? '' : ` (skipped: ${availability.reason})`}`,
  () => {
    const script = `import { probe } from './src/tensor/mlx.ts'; console.log(JSON.stringify(probe()))`
    const r = Bun.spawnSync([process.execPath, '-e', script], {
      cwd: new URL('../..', import.meta.url).pathname,
      env: { ...process.env, DBCLUSTER_MLX_EXPECT_VERSION: '9.9.9' },
      stdout: 'pipe',
    })
    const verdict = JSON.parse(r.stdout.toString())
    expect(verdict.available).toBe(false)
    expect(verdict.reason).toMatch(/^libmlx is version [\d.]+ but this dbcluster targets MLX 9\.9\.9/)
    expect(verdict.reason).toContain('--backend cpu')
  },
)
