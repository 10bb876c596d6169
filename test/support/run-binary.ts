/** Runs a built dbcluster binary the way a user would: from another directory, with a bare PATH and nothing else set. */
import { expect } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export function runBinary(
  binary: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
) {
  const cwd = options.cwd ?? mkdtempSync(join(tmpdir(), 'dbc-cwd-'))
  const r = Bun.spawnSync([binary, ...args], {
    cwd,
    stdout: 'pipe',
    stderr: 'pipe',
    env: { PATH: '/usr/bin:/bin', ...options.env },
  })
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() }
}

/** One small kernel run proves the binary's compute shim loads: JSON with a real bandwidth figure. */
export function expectKernelsRun(binary: string, options: { cwd?: string } = {}): void {
  const bench = runBinary(
    binary,
    ['bench', 'kernels', '--json', '--dtypes', 'q4', '--batches', '1', '--shapes', '256x256'],
    options,
  )
  expect(bench.code, bench.stderr).toBe(0)
  const result = JSON.parse(bench.stdout)
  expect(result.memory_read_gbps).toBeGreaterThan(0.5)
  expect(result.gemv[0]).toMatchObject({ dtype: 'q4', rows: 256, cols: 256, batch: 1 })
  expect(result.gemv[0].gbps).toBeGreaterThan(0)
}
