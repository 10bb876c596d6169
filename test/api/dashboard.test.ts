/** The dashboard against a real serve process over HTTP: the page is served self-contained, and the SSE stream's
 * snapshots reflect real metrics after a completion (uptime, transport, trust and the throughput history with them). The page itself runs in a browser in dashboard-browser.test.ts. */
import { afterAll, expect, test } from 'bun:test'
import { synthModel } from '../support/synth-models.ts'
import { startServe, type ServeProcess } from '../support/serve-process.ts'

let server: ServeProcess | undefined
afterAll(async () => {
  await server?.stop()
})

async function nextSnapshot(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  state: { buf: string },
): Promise<Record<string, any>> {
  for (;;) {
    const m = /data: (.*)\n\n/.exec(state.buf)
    if (m) {
      state.buf = state.buf.slice(m.index + m[0].length)
      return JSON.parse(m[1]!)
    }
    const { value, done } = await reader.read()
    if (done) throw new Error('the event stream ended')
    state.buf += new TextDecoder().decode(value)
  }
}

test('page is served without external resources; events reflect a completion', async () => {
  server = await startServe([
    '--model',
    await synthModel('qwen3', 'bf16'),
    '--model-id',
    'tiny',
    '--max-context',
    '256',
  ])
  const page = await fetch(`${server.url}/dashboard`)
  expect(page.status).toBe(200)
  expect(page.headers.get('content-type')).toContain('text/html')
  const html = await page.text()
  expect(html).toContain("new EventSource('/dashboard/events')")
  expect(html).toContain('/v1/chat/completions')
  expect(html).not.toMatch(/(src|href)=["']https?:/)

  const events = await fetch(`${server.url}/dashboard/events`)
  expect(events.headers.get('content-type')).toContain('text/event-stream')
  const reader = events.body!.getReader()
  const state = { buf: '' }
  const before = await nextSnapshot(reader, state)
  expect(before).toMatchObject({ model: 'tiny', generated_tokens: 0, queue_depth: 0 })
  expect(before.health).toBeObject()

  const r = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', prompt: 'hi', max_tokens: 5, temperature: 0 }),
  })
  expect(r.status).toBe(200)
  let after = await nextSnapshot(reader, state)
  while (after.generated_tokens === 0) after = await nextSnapshot(reader, state)
  expect(after.generated_tokens).toBe(5)
  expect(after.requests).toEqual({ 'outcome="ok"': 1 })
  expect(after.ttft_mean_s).toBeGreaterThan(0)
  expect(after.at).toBeGreaterThan(before.at)
  expect(after.stage_step_mean_s).toEqual({}) // one process: no stages reported separately
  expect(after.hop_mean_s).toBeNull()

  // the node: uptime since serving began, one node (no transport, no coordinator's verdict)
  expect(after.uptime_s).toBeGreaterThan(before.uptime_s)
  expect(after.started_at).toBe(before.started_at)
  expect(after.transport).toMatchObject({ kind: 'none', encrypted: true, rdma: false })
  expect(after.cluster_trust).toBeNull()
  // the throughput history, sampled every 5 s on the head: its points add up to the 5 tokens generated
  expect(after.throughput).toMatchObject({ interval_s: 5, window_s: 600 })
  let sampled = after
  const tokens = (s: Record<string, any>) => s.throughput.points.reduce((a: number, p: any) => a + p.tokens, 0)
  while (tokens(sampled) < 5) sampled = await nextSnapshot(reader, state)
  expect(tokens(sampled)).toBe(5)
  expect(sampled.throughput.points.some((p: any) => p.tokens_per_s > 0)).toBe(true)
  await reader.cancel()
}, 120_000)
