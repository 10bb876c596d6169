/** `dbcluster bench serve` as a real CLI process: against a running server (--url, whatever model name it serves) and
 * against a cluster it starts itself (--model --nodes 2, stopped afterwards); bad input and an unreachable URL fail
 * with one clear line. */
import { afterAll, expect, test } from 'bun:test'
import { processesWithOptions } from '../../src/bench/pin-cores.ts'
import { startServe, type ServeProcess } from '../support/serve-process.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
let server: ServeProcess | undefined
afterAll(async () => {
  await server?.stop()
})

async function benchServe(args: string[]) {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'bench', 'serve', ...args], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [code, stdout, stderr] = [
    await proc.exited,
    await new Response(proc.stdout).text(),
    await new Response(proc.stderr).text(),
  ]
  return { code, stdout, stderr, pid: proc.pid }
}

test('--url measures a running server at each concurrency level', async () => {
  server = await startServe([
    '--model',
    await synthModel('qwen3', 'bf16'),
    '--model-id',
    'tiny-served',
    '--max-context',
    '256',
  ])
  const r = await benchServe([
    '--url',
    server.url,
    '--concurrency',
    '1,3',
    '--prompt-tokens',
    '12',
    '--max-tokens',
    '3',
    '--requests-per-level',
    '4',
    '--json',
  ])
  expect(r.code, r.stderr).toBe(0)
  const result = JSON.parse(r.stdout)
  expect(result).toMatchObject({
    url: server.url,
    model: 'tiny-served',
    prompt_tokens: 12,
    max_tokens: 3,
    partial: false,
    target: null,
  })
  // 4 requests over 1 client, then ceil(4 / 3) = 2 requests for each of 3 clients
  expect(result.levels.map((l: any) => [l.concurrency, l.requests, l.ok, l.failed, l.generated_tokens])).toEqual([
    [1, 4, 4, 0, 12],
    [3, 6, 6, 0, 18],
  ])
  for (const l of result.levels) {
    expect(l.tok_s).toBeGreaterThan(0)
    expect(l.ttft_p95_ms).toBeGreaterThanOrEqual(l.ttft_p50_ms)
    // two tokens of a stream can arrive in one read (a gap of 0) on a busy machine; not every gap can
    expect(l.itl_p95_ms).toBeGreaterThan(0)
    expect(l.itl_p95_ms).toBeGreaterThanOrEqual(l.itl_p50_ms)
  }
}, 60_000)

for (const parallel of ['pipeline', 'tensor']) {
  test(`--model --nodes 2 --parallel ${parallel} starts a cluster, measures it and stops it`, async () => {
    const model = await synthModel('qwen3', 'bf16')
    const r = await benchServe([
      '--model',
      model,
      '--nodes',
      '2',
      '--parallel',
      parallel,
      '--concurrency',
      '2',
      '--prompt-tokens',
      '8',
      '--max-tokens',
      '3',
      '--json',
    ])
    expect(r.code, r.stderr).toBe(0)
    const result = JSON.parse(r.stdout)
    expect(result.target).toStartWith(
      parallel === 'tensor' ? '2 nodes (tensor parallel), 1 thread' : '2 nodes, 1 thread',
    )
    expect(result.levels).toHaveLength(1)
    expect(result.levels[0]).toMatchObject({ concurrency: 2, ok: 4, failed: 0 })
    expect(processesWithOptions({ '--model': model }).filter((pid) => pid !== server?.proc.pid)).toEqual([]) // the first test's server runs on
  }, 60_000)
}

test('--background-prompt: the streams’ inter-token p99 alone and beside a long prompt, on a server it starts with a step budget', async () => {
  const r = await benchServe([
    '--model',
    await synthModel('qwen3', 'bf16'),
    '--concurrency',
    '2',
    '--prompt-tokens',
    '8',
    '--max-tokens',
    '80',
    '--background-prompt',
    '200',
    '--max-step-tokens',
    '8',
    '--json',
  ])
  expect(r.code, r.stderr).toBe(0)
  const result = JSON.parse(r.stdout)
  expect(result).toMatchObject({
    background_prompt_tokens: 200,
    max_step_tokens: 8,
    target: expect.stringMatching(/^1 process, 1 thread/),
  })
  const [level] = result.levels
  expect(level.concurrency).toBe(2)
  // 200 prompt tokens at most 6 a step beside 2 decoding rows: dozens of gaps overlap the prefill
  expect(level.background_gaps).toBeGreaterThan(10)
  expect(level.itl_p99_quiet_ms).toBeGreaterThan(0)
  expect(level.itl_p99_ratio).toBeCloseTo(level.itl_p99_background_ms / level.itl_p99_quiet_ms, 2)
  expect(level.background_ttft_ms).toBeGreaterThan(0)
}, 120_000)

test('--shared-prefix: TTFT per turn of conversations that extend their last turn, and what the cache served', async () => {
  const own = await startServe(['--model', await synthModel('qwen3', 'q4'), '--max-context', '512'])
  try {
    const r = await benchServe([
      '--url',
      own.url,
      '--shared-prefix',
      '200',
      '--turns',
      '3',
      '--turn-tokens',
      '70',
      '--conversations',
      '2',
      '--max-tokens',
      '2',
      '--json',
    ])
    expect(r.code, r.stderr).toBe(0)
    const result = JSON.parse(r.stdout)
    expect(result).toMatchObject({ prefix_tokens: 200, turns: 3, turn_tokens: 70, conversations: 2 })
    const [run] = result.runs
    expect(run.turns.map((t: any) => [t.turn, t.prompt_tokens, t.cached_tokens])).toEqual([
      [1, 200, 0],
      // turn 2 holds turn 1's 3 whole 64-token blocks; turn 3 also turn 2's fourth
      [2, 270, 192],
      [3, 340, 256],
    ])
    expect(run.turns[0].ttft_ratio).toBe(1)
    for (const t of run.turns) expect(t.ttft_ms).toBeGreaterThan(0)
  } finally {
    await own.stop()
  }
}, 120_000)

test('bad input and an unreachable server fail with one clear line', async () => {
  const both = await benchServe(['--url', 'http://127.0.0.1:1', '--model', '/nowhere'])
  expect(both.code).toBe(2)
  expect(both.stderr).toContain('give exactly one of --url URL or --model DIR')
  const badList = await benchServe(['--url', 'http://127.0.0.1:1', '--concurrency', '1,0'])
  expect(badList.code).toBe(2)
  expect(badList.stderr).toContain("--concurrency must be comma-separated positive integers, got '1,0'")
  const down = await benchServe(['--url', 'http://127.0.0.1:1', '--concurrency', '1'])
  expect(down.code).toBe(1)
  expect(down.stderr).toContain('cannot reach http://127.0.0.1:1')
  const split = await benchServe(['--model', '/nowhere/model', '--nodes', '2', '--parallel', 'data'])
  expect(split.code).toBe(2)
  expect(split.stderr).toContain("--parallel must be pipeline or tensor, got 'data'")
  const budget = await benchServe(['--url', 'http://127.0.0.1:1', '--max-step-tokens', '8'])
  expect(budget.code).toBe(2)
  expect(budget.stderr).toContain('--max-step-tokens applies to --model only')
  const missing = await benchServe(['--model', '/nowhere/model', '--concurrency', '1'])
  expect(missing.code).toBe(1)
  expect(missing.stderr).toContain('dbcluster serve exited before listening')
}, 60_000)
