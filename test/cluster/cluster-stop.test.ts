/** `dbcluster cluster stop` on real 3-node clusters: the head refuses new requests (503), lets the running stream finish,
 * tells every stage to stop, and every process exits; with --now the stream ends at once with E_CLUSTER_STOPPED and
 * `cluster local` exits with its head. Also: a stage whose head was killed exits after --orphan-timeout, saying why;
 * the live health every pong carries reaches /health; `cluster status --watch` redraws in a non-TTY pipe. */
import { afterAll, expect, test } from 'bun:test'
import { basename } from 'node:path'
import { startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const SELF = [process.execPath, `${ROOT}src/main.ts`]
const clusters: LocalCluster[] = []
afterAll(async () => {
  for (const c of clusters) await c.stop()
})

const NODE_ARGS = ['--backend', 'cpu', '--threads', '1', '--max-context', '2048', '--model-id', 'x']

const stream = async (url: string, maxTokens: number, model = 'x') => {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'Hello', max_tokens: maxTokens, temperature: 0, stream: true }),
  })
  expect(res.status).toBe(200)
  const reader = res.body!.getReader()
  let text = new TextDecoder().decode((await reader.read()).value) // the stream is running
  return async () => {
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value)
    return text
  }
}

const run = (args: string[]) => {
  const p = Bun.spawn([...SELF, ...args], {
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NO_COLOR: '1', NODE_ENV: 'production' },
  })
  return Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]).then(
    ([out, err, code]) => ({ text: out + err, code }),
  )
}

test('live health in /health, status --watch, then cluster stop drains the running stream and every node exits', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const lines: string[] = []
  const c = await startLocalCluster({
    nodes: 3,
    model,
    apiPort: 0,
    self: SELF,
    extraArgs: [...NODE_ARGS, '--ping-interval', '2'],
    env: { NODE_ENV: 'production' },
    onLine: (rank, line) => lines.push(`[${rank}] ${line}`),
  })
  clusters.push(c)

  // every member's health as of its last pong: fresh, numeric, the stages' layers loaded
  type Member = {
    rank: number
    free_bytes: number
    memory_pressure: string
    model_loaded: boolean
    health_ms_ago: number
  }
  const members = async () => ((await (await fetch(`${c.url}/health`)).json()) as { members: Member[] }).members
  let seen: Member[] = []
  for (let i = 0; i < 100; i++) {
    seen = await members()
    // a stage's first pong may come while it still loads (model_loaded false): its next one says loaded
    if (seen.every((m) => m.health_ms_ago !== null && m.model_loaded)) break
    await Bun.sleep(100)
  }
  for (const m of seen) {
    expect(typeof m.free_bytes).toBe('number')
    expect(m.free_bytes).toBeGreaterThan(0)
    expect(['normal', 'warn', 'critical', 'unknown']).toContain(m.memory_pressure)
    expect(m.model_loaded).toBe(true)
    expect(m.health_ms_ago).toBeLessThan(4500) // pings every 2 s: the last pong is at most an interval or two old
  }
  // a stage's figures are refreshed by later pongs, not kept from one reading (or from its join)
  const firstAt = Date.now()
  await Bun.sleep(3000)
  const later = await members()
  const elapsed = Date.now() - firstAt
  for (const m of later.slice(1)) expect(m.health_ms_ago).toBeLessThan(seen[m.rank]!.health_ms_ago + elapsed - 500)

  // --watch in a pipe: one block per refresh, each with every member's row
  const watch = Bun.spawn([...SELF, 'cluster', 'status', '--watch', '--interval', '0.5', '--url', c.url], {
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const reader = watch.stdout.getReader()
  let out = ''
  while ((out.match(/every 0\.5 s; Ctrl-C ends/g) ?? []).length < 3)
    out += new TextDecoder().decode((await reader.read()).value)
  watch.kill('SIGINT')
  expect(await watch.exited).toBe(0)
  const blocks = out.split(/^.*every 0\.5 s; Ctrl-C ends.*$/m).slice(1, 3)
  expect(blocks).toHaveLength(2)
  for (const block of blocks) {
    expect(block).not.toContain('\x1b[2J') // no terminal: nothing cleared, blocks follow each other
    for (const rank of [0, 1, 2])
      expect(block).toMatch(new RegExp(`^\\| ${rank} \\| node-${rank} \\|.*\\| loaded \\|`, 'm'))
  }

  // cluster stop while a stream runs: new requests 503, the stream finishes, then every process exits
  const finish = await stream(c.url, 1500)
  const stopping = run(['cluster', 'stop', '--url', c.url])
  let refused: Response | null = null
  for (let i = 0; i < 100 && !refused; i++) {
    const health = (await (await fetch(`${c.url}/health`)).json()) as { stopping: unknown }
    if (health.stopping)
      refused = await fetch(`${c.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'x', prompt: 'Hi', max_tokens: 2 }),
      })
    else await Bun.sleep(20)
  }
  expect(refused!.status).toBe(503)
  expect(JSON.stringify(await refused!.json())).toContain('shutting down')
  const text = await finish()
  const streamEnded = Date.now()
  expect(text).toContain('data: [DONE]')
  expect(text).not.toContain('"error"')
  const codes = await Promise.all([0, 1, 2].map((r) => c.exited(r)))
  expect(Date.now() - streamEnded).toBeLessThan(10_000)
  expect(codes).toEqual([0, 0, 0])
  const stopped = await stopping
  expect(stopped.code).toBe(0)
  expect(stopped.text).toContain('1 running request(s) get up to 60 s to finish')
  expect(stopped.text).toContain('has stopped')
  const log = lines.join('\n')
  for (const rank of [1, 2]) expect(log).toContain(`[${rank}] `)
  expect(log).toMatch(/the head asked this stage to stop \(dbcluster cluster stop\)/)
}, 120_000)

test('cluster stop --now ends the running stream with a clear error, and cluster local exits with its head', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const local = Bun.spawn([...SELF, 'cluster', 'local', '--nodes', '3', '--model', model, '--port', '0'], {
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NO_COLOR: '1' },
  })
  const reader = local.stdout.getReader()
  let out = ''
  let url: RegExpExecArray | null = null
  while (!(url = /^listening on (\S+)$/m.exec(out))) {
    const r = await reader.read()
    if (r.done) throw new Error(`cluster local ended before serving: ${out}`)
    out += new TextDecoder().decode(r.value)
  }
  void (async () => {
    for (let r = await reader.read(); !r.done; r = await reader.read()) out += new TextDecoder().decode(r.value)
  })()
  const finish = await stream(url[1]!, 3000, basename(model)) // cluster local serves the folder's name
  const started = Date.now()
  const stopped = await run(['cluster', 'stop', '--now', '--url', url[1]!])
  const text = await finish()
  expect(text).toContain('E_CLUSTER_STOPPED')
  expect(text).toContain('stopped at once (dbcluster cluster stop --now)')
  expect(stopped.code).toBe(0)
  expect(stopped.text).toContain('running request(s) end with an error')
  expect(await local.exited).toBe(0) // every node of it has exited too: it waits for them
  expect(Date.now() - started).toBeLessThan(10_000)
}, 120_000)

test('a stage whose head was killed exits after --orphan-timeout, saying why', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const lines: string[] = []
  const c = await startLocalCluster({
    nodes: 2,
    model,
    apiPort: 0,
    self: SELF,
    extraArgs: [...NODE_ARGS, '--orphan-timeout', '2'],
    onLine: (rank, line) => rank === 1 && lines.push(line),
  })
  clusters.push(c)
  await c.kill(0, 'SIGKILL')
  const killed = Date.now()
  expect(await c.exited(1)).toBe(1)
  const waited = Date.now() - killed
  expect(waited).toBeGreaterThan(1_900)
  expect(waited).toBeLessThan(10_000)
  expect(lines.join('\n')).toMatch(
    /the head at 127\.0\.0\.1:\d+ has been gone for 2 s \(--orphan-timeout\): this stage stops/,
  )
}, 120_000)
