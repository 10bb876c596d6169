/** MLX distributed through the glue: the dlopen table matches ffi/mlx_distributed.h (always), and where mlx-c is
 * installed, a group that cannot form fails with MLX's reason instead of exiting the process. */
import { expect, test } from 'bun:test'
import { readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { probe } from '../../src/tensor/mlx.ts'
import { MLX_DISTRIBUTED_SYMBOLS } from '../../src/tensor/native.ts'

const header = readFileSync(new URL('../../ffi/mlx_distributed.h', import.meta.url), 'utf8')

test('every symbol in mlx_distributed.h is in the dlopen table, in header order, with the same arity', () => {
  const code = header
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .split('\n')
    .filter((l) => !l.trimStart().startsWith('#'))
    .join(' ')
  const fromHeader = code
    .split(';')
    .map((s) => /(dbc_[a-z0-9_]+)\(([^)]*)\)\s*$/.exec(s.replace(/\s+/g, ' ').trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ name: m[1]!, arity: m[2]!.trim() === 'void' ? 0 : m[2]!.split(',').length }))
  expect(fromHeader.length).toBe(10)
  const fromTable = Object.entries(MLX_DISTRIBUTED_SYMBOLS)
    .filter(([name]) => name.startsWith('dbc_dist_'))
    .map(([name, def]) => ({ name, arity: def.args.length as number }))
  expect(fromTable).toEqual(fromHeader)
})

const mlx = probe()
const skipped = mlx.available ? '' : ` (skipped: ${mlx.reason})`

test.skipIf(!mlx.available)(
  `a ring group without its environment fails with MLX's reason, and the process lives on${skipped}`,
  async () => {
    const { MlxGroup, probeMlxTransport, setMlxEnvironment } = await import('../../src/tensor-parallel/mlx-group.ts')
    expect(probeMlxTransport('ring')).toEqual({ available: true })
    setMlxEnvironment({ MLX_RANK: undefined, MLX_HOSTFILE: undefined })
    expect(() => MlxGroup.join('ring')).toThrow(/MLX ring group could not form: .*MLX_RANK.*MLX_HOSTFILE/)
    expect(() => setMlxEnvironment({ 'A=B': '1' })).toThrow('cannot set A=B: setenv: bad variable name')
  },
)

test.skipIf(!mlx.available)(
  `a ring whose neighbour never comes gives up after the timeout with one clear line${skipped}`,
  () => {
    const hostfile = join(tmpdir(), `dbc-lone-ring-${process.pid}.json`)
    writeFileSync(hostfile, JSON.stringify([['127.0.0.1:1'], ['127.0.0.1:2']]))
    // a child process: after a timeout MLX's join stays blocked on a helper thread until the process exits
    const script = `import { MlxGroup, setMlxEnvironment } from './src/tensor-parallel/mlx-group.ts'
    setMlxEnvironment({ MLX_RANK: '1', MLX_HOSTFILE: ${JSON.stringify(hostfile)} })
    const t = Date.now()
    try { MlxGroup.join('ring', 1500) } catch (e) { console.log(JSON.stringify({ s: (Date.now() - t) / 1000, message: e.message })) }`
    const r = Bun.spawnSync([process.execPath, '-e', script], {
      cwd: new URL('../..', import.meta.url).pathname,
      stdout: 'pipe',
      stderr: 'pipe',
      timeout: 30_000,
    })
    const verdict = JSON.parse(r.stdout.toString())
    expect(verdict.message).toBe(
      'MLX ring group could not form: no group within 1.5 s: a rank did not come or cannot reach its neighbour',
    )
    expect(verdict.s).toBeGreaterThanOrEqual(1.4)
    expect(verdict.s).toBeLessThan(10)
    expect(r.exitCode).toBe(0)
  },
  30_000,
)
