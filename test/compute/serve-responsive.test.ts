/** A real `serve` stays responsive while it computes (issue 26): while a 1,500-token prompt prefills, /health answers
 * within 100 ms every time it is polled, and a stream that was already running keeps emitting tokens. */
import { afterAll, expect, test } from 'bun:test'
import { startServe, type ServeProcess } from '../support/serve-process.ts'
import { synthModel } from '../support/synth-models.ts'

const servers: ServeProcess[] = []
afterAll(async () => {
  for (const s of servers) await s.stop()
})

test('while a 1,500-token prompt prefills, /health answers within 100 ms and a running stream keeps emitting', async () => {
  // big enough that the prefill takes seconds here, small enough to write quickly
  const model = await synthModel('qwen3', 'q4', {
    layers: 8,
    hidden: 512,
    heads: 8,
    kvHeads: 4,
    headDim: 64,
    intermediate: 1536,
  })
  const server = await startServe(['--model', model, '--max-context', '2048', '--model-id', 'm'])
  servers.push(server)
  const post = (body: object) =>
    fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', temperature: 0, ...body }),
    })

  // a stream already running, its chunk times recorded
  const chunks: number[] = []
  const streaming = post({ prompt: 'Once upon a time', max_tokens: 400, stream: true }).then(async (r) => {
    const reader = r.body!.getReader()
    for (;;) {
      const { done } = await reader.read()
      if (done) break
      chunks.push(performance.now())
    }
  })
  while (chunks.length < 3) await Bun.sleep(10)

  // the long prompt, and /health polled while it prefills
  const long = Array.from({ length: 1500 }, (_, i) => (i * 7919 + 13) % 20000)
  const sent = performance.now()
  let answered = 0
  const prefill = post({ prompt: long, max_tokens: 1 }).then(async (r) => {
    expect(r.status).toBe(200)
    await r.json()
    answered = performance.now()
  })
  const waits: number[] = []
  while (!answered) {
    const t0 = performance.now()
    const r = await fetch(`${server.url}/health`)
    await r.json()
    waits.push(performance.now() - t0)
    await Bun.sleep(20)
  }
  await prefill
  const during = chunks.filter((t) => t > sent && t < answered).length
  console.log(
    `prefill of 1,500 tokens: ${(answered - sent).toFixed(0)} ms; /health polled ${waits.length} times, slowest ${Math.max(...waits).toFixed(1)} ms; ${during} stream chunks meanwhile`,
  )
  // a prefill short enough to prove nothing would make this test meaningless
  expect(answered - sent).toBeGreaterThan(500)
  expect(waits.length).toBeGreaterThan(10)
  expect(Math.max(...waits)).toBeLessThan(100)
  expect(during).toBeGreaterThanOrEqual(3)
  await streaming
}, 180_000)
