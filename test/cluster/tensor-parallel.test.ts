/** Sealed tensor parallel between real processes (`dbcluster serve --tp 2`): a rank lost mid-stream degrades the head
 * (503 with the reason) while the streams wait; restarted, the rank meets rank 0 again and every stream finishes with
 * the text it would have had; not restarted, the streams end with the reason after the resume window. A rank lost while
 * idle is noticed before the next request, and serves again once restarted; rank 0 restarted finds rank 1 waiting for
 * it, model loaded; two processes claiming one rank, a rank whose hello is
 * sealed with another key or names another rank, and a connection claiming a rank that never met never form a group;
 * a rank whose key the head has not pinned never joins. Answers and endpoints: test/api/openai-client.test.ts. */
import { afterAll, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { prepareLocalNodes, startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { removeAfterRun } from '../support/cleanup.ts'
import { synthModel } from '../support/synth-models.ts'
import type { SynthArch, SynthDtype, SynthSpec } from '../../src/model/synth.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const clusters: LocalCluster[] = []
afterAll(async () => {
  for (const c of clusters) await c.stop()
})
const IMPOSTOR = new URL('../support/tp-impostor.ts', import.meta.url).pathname
const ARGS = ['--backend', 'cpu', '--threads', '1', '--max-context', '256', '--model-id', 'x', '--tp-timeout', '5']

/** A 2-rank sealed cluster of `model` on loopback, stopped after the tests. */
async function twoRanks(
  model: string,
  extraArgs: string[] = [],
  onLine?: (rank: number, line: string) => void,
): Promise<LocalCluster> {
  const c = await startLocalCluster({
    nodes: 2,
    parallel: 'tensor',
    model,
    apiPort: 0,
    self: [process.execPath, `${ROOT}src/main.ts`],
    extraArgs: [...ARGS, ...extraArgs],
    onLine,
  })
  clusters.push(c)
  return c
}

const FAMILIES: [SynthArch, SynthDtype, Partial<SynthSpec>, string][] = [
  ['gemma3', 'f32', { slidingWindow: 4, slidingWindowPattern: 3 }, ' (sliding and global layers)'],
  ['llama', 'bf16', {}, ''],
  ['qwen2', 'bf16', {}, ''],
  ['gpt_oss', 'mxfp4', {}, ''],
  [
    'gemma4',
    'f32',
    { slidingWindow: 4, slidingWindowPattern: 3, experts: 4, expertsPerToken: 2, kEqV: true },
    ' (sliding and full layers, the MoE block, keys as values)',
  ],
  ['qwen3_5', 'f32', { fullAttentionInterval: 2 }, ' (linear and full attention)'],
  ['qwen3_5', 'bf16', { fullAttentionInterval: 2, experts: 4, expertsPerToken: 2 }, ' MoE (routed and shared experts)'],
]
for (const [arch, dtype, extra, what] of FAMILIES) {
  test(`${arch}${what} ${dtype} over 2 sealed ranks on the cpu backend: the greedy text of one process (\`dbcluster generate\`)`, async () => {
    const model = await synthModel(arch, dtype, extra)
    const c = await twoRanks(model)
    // the head is split by vocabulary (the synthetic Llama has an lm_head of its own, Gemma 3 a tied one), and so is sampling
    expect(await (await fetch(`${c.url}/health`)).json()).toMatchObject({ tensor_parallel: { sampling: 'split' } })
    const response = await fetch(`${c.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'x', prompt: 'Once upon a time', max_tokens: 12, temperature: 0 }),
    })
    expect(response.status).toBe(200)
    const text = (await response.json()).choices[0].text
    const cli = Bun.spawnSync(
      [
        process.execPath,
        'src/main.ts',
        'generate',
        '--model',
        model,
        '--prompt',
        'Once upon a time',
        '--max-tokens',
        '12',
        '--json',
        '--backend',
        'cpu',
        '--threads',
        '1',
      ],
      { cwd: ROOT, stdout: 'pipe' },
    )
    expect(text).toBe(JSON.parse(cli.stdout.toString()).text)
    expect(text.length).toBeGreaterThan(0)
    // rank 0 tells how long its steps waited on the exchanges: a step or more recorded, in a plausible range
    const metrics = await (await fetch(`${c.url}/metrics`)).text()
    const count = Number(/^dbcluster_tp_exchange_seconds_count (\d+)$/m.exec(metrics)?.[1])
    const sum = Number(/^dbcluster_tp_exchange_seconds_sum (\S+)$/m.exec(metrics)?.[1])
    expect(count).toBeGreaterThanOrEqual(12)
    expect(sum).toBeGreaterThan(0)
    expect(sum / count).toBeLessThan(1)
    await c.stop()
  }, 60_000)
}

test('a rank killed mid-stream and restarted: 503 meanwhile, then every stream finishes with the uninterrupted text', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const c = await twoRanks(model, ['--resume-window', '60'])
  const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 60_000 })
  const health = await (await fetch(`${c.url}/health`)).json()
  expect(health).toMatchObject({
    status: 'ok',
    nodes: 2,
    tensor_parallel: { ranks: 2, transport: 'sealed', sampling: 'split' },
  })
  const prompts = ['Hello, world', 'Once upon a time', 'The sealed link', 'Two machines']
  const body = (prompt: string) => ({ model: 'x', prompt, max_tokens: 60, temperature: 0 })
  const expected = await Promise.all(
    prompts.map(async (p) => (await client.completions.create(body(p))).choices[0]!.text),
  )
  const chunks = prompts.map(() => 0)
  const texts = prompts.map(() => '')
  const streams = prompts.map(async (p, i) => {
    for await (const chunk of await client.completions.create({ ...body(p), stream: true })) {
      texts[i] += chunk.choices[0]?.text ?? ''
      chunks[i]!++
    }
  })
  while (chunks.some((n) => n < 3)) await Bun.sleep(10)
  await c.kill(1)
  const deadline = Date.now() + 5000
  let refused: { status?: number; message?: string } = {}
  while (Date.now() < deadline && refused.status !== 503) {
    refused = await client.completions.create({ model: 'x', prompt: 'x', max_tokens: 2 }).catch((e) => e)
    await Bun.sleep(50)
  }
  expect(refused.status).toBe(503)
  expect(refused.message).toContain('tensor-parallel rank lost')
  expect(refused.message).toContain('restart it with the same --tp-rank')
  const before = [...chunks]
  await c.restart(1)
  await Promise.all(streams)
  expect(texts).toEqual(expected)
  // the streams waited for the rank and went on afterwards
  expect(chunks.every((n, i) => n > before[i]!)).toBe(true)
  expect(await (await fetch(`${c.url}/health`)).json()).toMatchObject({ status: 'ok', nodes: 2 })
}, 90_000)

test('a rank killed mid-stream and not restarted: the stream ends with the reason once the resume window passes', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const c = await twoRanks(model, ['--resume-window', '1'])
  const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 30_000 })
  const stream = await client.completions.create({
    model: 'x',
    prompt: 'Hello, world',
    max_tokens: 250,
    temperature: 0,
    stream: true,
  })
  let chunks = 0
  const outcome = (async () => {
    try {
      for await (const _ of stream) chunks++
      return 'finished'
    } catch (error) {
      return `error: ${(error as Error).message}`
    }
  })()
  while (chunks < 3) await Bun.sleep(20)
  const t0 = Date.now()
  await c.kill(1)
  const said = await outcome
  expect(said).toMatch(/^error: .*did not recover within 1 s .*tensor-parallel rank lost/)
  expect(Date.now() - t0).toBeLessThan(5000)
}, 60_000)

test('a rank killed while nothing runs: /health says degraded within seconds, 503 at once; started again after a meeting timed out, it serves again', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const c = await twoRanks(model)
  await c.kill(1)
  const deadline = Date.now() + 5000
  let health: { status?: string; reason?: string } = {}
  while (Date.now() < deadline && health.status !== 'degraded') {
    await Bun.sleep(100)
    health = await (await fetch(`${c.url}/health`)).json()
  }
  expect(health.status).toBe('degraded')
  expect(health.reason).toContain('rank 1 went away')
  const refused = await fetch(`${c.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', prompt: 'x', max_tokens: 2 }),
  })
  expect(refused.status).toBe(503)
  expect(refused.headers.get('retry-after')).not.toBeNull()
  // started again after rank 0's first meeting for it timed out (--tp-timeout 5), it meets the next one and the cluster
  // serves
  await Bun.sleep(6000)
  expect((await (await fetch(`${c.url}/health`)).json()).status).toBe('degraded')
  await c.restart(1)
  const back = Date.now() + 30_000
  while (Date.now() < back && health.status !== 'ok') {
    await Bun.sleep(100)
    health = await (await fetch(`${c.url}/health`)).json()
  }
  expect(health.status).toBe('ok')
  const answer = await fetch(`${c.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', prompt: 'x', max_tokens: 2 }),
  })
  expect(answer.status).toBe(200)
}, 60_000)

test('rank 0 killed and started again: rank 1 keeps running with its model loaded, meets it again, and the answers are the same', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const lines: string[] = []
  const c = await twoRanks(model, [], (rank, l) => lines.push(`${rank}: ${l}`))
  const ask = async () => {
    const r = await fetch(`${c.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'x', prompt: 'Hello', max_tokens: 10, temperature: 0 }),
    })
    expect(r.status).toBe(200)
    return (await r.json()).choices[0].text as string
  }
  const before = await ask()
  await c.kill(0)
  await c.restart(0)
  expect(await ask()).toBe(before)
  // rank 1 is the process started first (the test never restarts it): it followed, lost rank 0, met it again
  expect(lines.filter((l) => l === '1: tensor-parallel rank 1 ready: following rank 0')).toHaveLength(2)
}, 60_000)

test('a rank whose key rank 0 has not pinned is refused before it holds any key', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const lines: string[] = []
  const started = startLocalCluster({
    nodes: 2,
    parallel: 'tensor',
    pinEachOther: false,
    model,
    apiPort: 0,
    self: [process.execPath, `${ROOT}src/main.ts`],
    extraArgs: ARGS,
    onLine: (rank, l) => lines.push(`${rank}: ${l}`),
  })
  const error = await started.then(
    (c) => (clusters.push(c), null),
    (e: Error) => e,
  )
  expect(error).toBeInstanceOf(Error)
  expect(`${error?.message}\n${lines.join('\n')}`).toContain('E_PEER_NOT_PINNED: peer node-1 has no pinned key')
}, 60_000)

test('two processes that claim the same rank: rank 0 refuses the group with the reason, and every process exits', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const { root, ports, homes } = prepareLocalNodes(3)
  removeAfterRun(root)
  const rank = (node: number, tpRank: number) =>
    Bun.spawn(
      [
        process.execPath,
        `${ROOT}src/main.ts`,
        'serve',
        '--model',
        model,
        ...ARGS,
        '--tp',
        '3',
        '--tp-rank',
        String(tpRank),
        '--node-name',
        `node-${node}`,
        ...(tpRank === 0
          ? ['--tp-listen', `127.0.0.1:${ports[0]}`, '--port', '0']
          : ['--tp-peer', `127.0.0.1:${ports[0]}`]),
      ],
      {
        env: { ...process.env, DBCLUSTER_HOME: homes[node]! },
        stdout: 'pipe',
        stderr: 'pipe',
      },
    )
  const procs = [rank(0, 0), rank(1, 1), rank(2, 1)]
  const codes = await Promise.all(procs.map((p) => p.exited))
  const head = await new Response(procs[0]!.stderr).text()
  expect(head).toContain('two ranks, or a rank outside 1..2, joined (got rank 1)')
  expect(codes.every((c) => c !== 0)).toBe(true)
}, 60_000)

test('rank 0 alone: the meeting gives up after --tp-timeout with what to do', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const { root, ports, homes } = prepareLocalNodes(1)
  removeAfterRun(root)
  const started = Date.now()
  const proc = Bun.spawn(
    [
      process.execPath,
      `${ROOT}src/main.ts`,
      'serve',
      '--model',
      model,
      ...ARGS,
      '--tp-timeout',
      '1',
      '--tp',
      '2',
      '--tp-listen',
      `127.0.0.1:${ports[0]}`,
      '--port',
      '0',
      '--node-name',
      'node-0',
    ],
    {
      env: { ...process.env, DBCLUSTER_HOME: homes[0]! },
      stdout: 'pipe',
      stderr: 'pipe',
    },
  )
  const code = await proc.exited
  const err = await new Response(proc.stderr).text()
  expect(code).not.toBe(0)
  expect(Date.now() - started).toBeLessThan(15_000)
  expect(err).toContain('0 of 1 peers connected')
  expect(err).toContain('start the other ranks with --tp-peer <this host>:')
}, 30_000)

for (const [mode, said] of [
  ['wrong-key', 'failed authentication'],
  ['other-rank', "rank 1's hello names another rank"],
  ['stranger-rank', 'a connection to the tensor-parallel port claimed rank 5'],
  ['other-settings', 'rank 1 serves another model or settings than rank 0'],
] as const) {
  test(`a pinned rank that misbehaves (${mode}): rank 0 refuses the group and says why`, async () => {
    const model = await synthModel('qwen3', 'bf16')
    const { root, ports, homes } = prepareLocalNodes(2)
    removeAfterRun(root)
    const head = Bun.spawn(
      [
        process.execPath,
        `${ROOT}src/main.ts`,
        'serve',
        '--model',
        model,
        ...ARGS,
        '--tp',
        '2',
        '--tp-listen',
        `127.0.0.1:${ports[0]}`,
        '--port',
        '0',
        '--node-name',
        'node-0',
      ],
      {
        env: { ...process.env, DBCLUSTER_HOME: homes[0]! },
        stdout: 'pipe',
        stderr: 'pipe',
      },
    )
    const impostor = Bun.spawn([process.execPath, IMPOSTOR, homes[1]!, String(ports[0]), mode, model], {
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const code = await head.exited
    const err = await new Response(head.stderr).text()
    impostor.kill()
    expect(code).not.toBe(0)
    expect(err).toContain(said)
  }, 30_000)
}
