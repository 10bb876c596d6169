/** Many clients at once against a real server: every stream completes with its own text, batched greedy output equals
 * unbatched, a client that disconnects frees its slot, and overflow gets 429 while admitted requests finish. */
import { afterAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { synthModel } from '../support/synth-models.ts'
import { startServe, type ServeProcess } from '../support/serve-process.ts'

const servers: ServeProcess[] = []
afterAll(async () => {
  for (const s of servers) await s.stop()
})

async function server(args: string[]) {
  const s = await startServe([
    '--model',
    await synthModel('qwen3', 'bf16'),
    '--model-id',
    'tiny',
    '--max-context',
    '256',
    ...args,
  ])
  servers.push(s)
  return { s, client: new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'x', maxRetries: 0 }) }
}

const prompts = Array.from({ length: 64 }, (_, i) => `Prompt number ${i} says ${'abc'.repeat(i % 5)}`)

async function stream(client: OpenAI, prompt: string, maxTokens = 8) {
  const s = await client.completions.create({
    model: 'tiny',
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
  })
  let text = ''
  let finish = null
  for await (const chunk of s) {
    text += chunk.choices[0]?.text ?? ''
    finish = chunk.choices[0]?.finish_reason ?? finish
  }
  return { text, finish }
}

describe('concurrency', () => {
  test('64 concurrent streams all complete, each equal to its unbatched answer', async () => {
    const { client, s } = await server(['--max-batch', '8', '--max-queue', '64'])
    const alone: string[] = []
    for (const p of prompts.slice(0, 6))
      alone.push(
        (await client.completions.create({ model: 'tiny', prompt: p, max_tokens: 8, temperature: 0 })).choices[0]!.text,
      )
    const results = await Promise.all(prompts.map((p) => stream(client, p)))
    for (const r of results) expect(r.finish).toBe('length')
    results.slice(0, 6).forEach((r, i) => expect(r.text).toBe(alone[i]!))
    const metrics = await (await fetch(`${s.url}/metrics`)).text()
    expect(metrics).toContain('dbcluster_requests_total{outcome="ok"} 70')
  }, 120_000)

  test('a client that disconnects mid-stream frees its slot', async () => {
    const { s } = await server(['--max-batch', '1', '--max-queue', '4'])
    const abort = new AbortController()
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: 'long', max_tokens: 200, temperature: 0, stream: true }),
      signal: abort.signal,
    })
    const reader = res.body!.getReader()
    await reader.read()
    abort.abort()
    // the only slot must come back: a new request finishes promptly
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 20_000 })
    const r = await client.completions.create({ model: 'tiny', prompt: 'next', max_tokens: 4, temperature: 0 })
    expect(r.choices[0]!.finish_reason).toBe('length')
    const metrics = await (await fetch(`${s.url}/metrics`)).text()
    expect(metrics).toContain('dbcluster_requests_total{outcome="cancelled"} 1')
  }, 60_000)

  test('beyond the queue → 429, while admitted requests still finish', async () => {
    const { client } = await server(['--max-batch', '1', '--max-queue', '2'])
    const settled = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        client.completions.create({ model: 'tiny', prompt: `q${i}`, max_tokens: 24, temperature: 0 }),
      ),
    )
    const ok = settled.filter((r) => r.status === 'fulfilled')
    const rejected = settled.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason)
    expect(ok.length).toBeGreaterThanOrEqual(3)
    expect(rejected.length).toBeGreaterThan(0)
    for (const e of rejected) expect(e).toBeInstanceOf(OpenAI.RateLimitError)
    for (const r of ok)
      expect((r as PromiseFulfilledResult<OpenAI.Completion>).value.choices[0]!.finish_reason).toBe('length')
  }, 60_000)
})
