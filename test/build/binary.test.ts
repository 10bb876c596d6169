/** The single binary: built with `bun build --compile`, it carries the runtime and the shim and runs from any directory. */
import { expect, test } from 'bun:test'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkg from '../../package.json' with { type: 'json' }

const ROOT = new URL('../..', import.meta.url).pathname

test('dist binary runs --version and a shim kernel from another directory with nothing beside it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-binary-'))
  try {
    const out = join(dir, 'dbcluster')
    const build = Bun.spawnSync(['bash', 'scripts/build-binary.sh', out], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
    expect(build.exitCode, build.stderr.toString()).toBe(0)
    expect(statSync(out).size).toBeGreaterThan(10_000_000)
    const elsewhere = mkdtempSync(join(tmpdir(), 'dbc-cwd-'))
    const version = Bun.spawnSync([out, '--version'], { cwd: elsewhere, stdout: 'pipe', env: { PATH: '/usr/bin:/bin' } })
    expect(version.exitCode).toBe(0)
    expect(version.stdout.toString().trim()).toBe(pkg.version)
    // One small kernel run proves the embedded shim loads: JSON with a real bandwidth figure.
    const bench = Bun.spawnSync([out, 'bench', 'kernels', '--json', '--dtypes', 'q4', '--batches', '1', '--shapes', '256x256'], {
      cwd: elsewhere,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { PATH: '/usr/bin:/bin' },
    })
    expect(bench.exitCode, bench.stderr.toString()).toBe(0)
    const result = JSON.parse(bench.stdout.toString())
    expect(result.memory_read_gbps).toBeGreaterThan(0.5)
    expect(result.gemv[0]).toMatchObject({ dtype: 'q4', rows: 256, cols: 256, batch: 1 })
    expect(result.gemv[0].gbps).toBeGreaterThan(0)
    rmSync(elsewhere, { recursive: true })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 180_000)
