/** A stage frozen with SIGSTOP (alive, its link open, answering nothing): once a step is overdue by more than a ping
 * interval the head reports degraded and refuses new requests with 503 and Retry-After — not after the link's full
 * silence budget — while the running stream waits; thawed, the stage answers, the stream finishes, /health is ok. */
import { afterAll, expect, test } from 'bun:test'
import { startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
let cluster: LocalCluster | undefined
afterAll(async () => {
  cluster?.signal(1, 'SIGCONT')
  await cluster?.stop()
})

const post = (url: string, body: object) =>
  fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', temperature: 0, ...body }),
  })

test('a frozen stage: degraded within about a ping interval, new requests 503, the running stream survives the thaw', async () => {
  const model = await synthModel('qwen3', 'bf16')
  // pings every 2 s: the link itself would give up after 3 silent intervals (6 s)
  cluster = await startLocalCluster({
    nodes: 2,
    model,
    apiPort: 0,
    self: [process.execPath, `${ROOT}src/main.ts`],
    extraArgs: [
      '--backend',
      'cpu',
      '--threads',
      '1',
      '--max-context',
      '256',
      '--model-id',
      'x',
      '--ping-interval',
      '2',
    ],
  })
  const url = cluster.url
  const stream = await post(url, { prompt: 'Hello', max_tokens: 120, stream: true })
  const reader = stream.body!.getReader()
  await reader.read() // the stream is running
  cluster.signal(1, 'SIGSTOP')
  const frozenAt = Date.now()
  let health: Response
  for (;;) {
    health = await fetch(`${url}/health`)
    if (health.status === 503 || Date.now() - frozenAt > 10_000) break
    await Bun.sleep(100)
  }
  const detectedMs = Date.now() - frozenAt
  expect(health.status).toBe(503)
  expect((await health.json()).reason).toContain('a stage is not answering')
  expect(detectedMs).toBeLessThan(5_500) // one ping interval and the watchdog's tick, well before the link's 6 s
  const refused = await post(url, { prompt: 'Hi', max_tokens: 2 })
  expect([refused.status, refused.headers.get('retry-after')]).toEqual([503, '5'])

  cluster.signal(1, 'SIGCONT')
  let text = ''
  for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value)
  expect(text).toContain('data: [DONE]')
  expect(text).not.toContain('"error"')
  expect((await fetch(`${url}/health`)).status).toBe(200)
  expect((await post(url, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200)
}, 120_000)
