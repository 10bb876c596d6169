/** Prompt KV reuse through a real `serve` process: a multi-turn chat, each turn re-sending the last, answers with the same
 * greedy text as a server started with --prefix-cache 0, reports the reused tokens as usage.prompt_tokens_details
 * .cached_tokens, and counts them in /metrics. With several API keys, one key's cached prompts never serve another's. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { startServe, type ServeProcess } from '../support/serve-process.ts'
import { synthModel } from '../support/synth-models.ts'

const ARGS = ['--model-id', 'tiny', '--max-batch', '2', '--max-context', '1024', '--threads', '2']
const TOPICS = ['rivers', 'bridges', 'lighthouses', 'glaciers']
const FILLER =
  'Describe in careful detail how engineers, sailors and mapmakers of many centuries learned about the world, '.repeat(
    6,
  )

interface Answer {
  choices: { message: { content: string } }[]
  usage: { prompt_tokens: number; prompt_tokens_details?: { cached_tokens: number } }
}

/** Four turns of one conversation, each turn's messages extending the last turn's and its answer. */
async function conversation(url: string): Promise<Answer[]> {
  const messages: { role: string; content: string }[] = [{ role: 'system', content: FILLER }]
  const answers: Answer[] = []
  for (const topic of TOPICS) {
    messages.push({ role: 'user', content: `Now tell me about ${topic}.` })
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', messages, max_tokens: 12, temperature: 0 }),
    })
    expect(r.status).toBe(200)
    const answer = (await r.json()) as Answer
    answers.push(answer)
    messages.push({ role: 'assistant', content: answer.choices[0]!.message.content })
  }
  return answers
}

describe('serve --prefix-cache', () => {
  let cached: ServeProcess
  let cold: ServeProcess
  beforeAll(async () => {
    const model = await synthModel('qwen3', 'q4')
    ;[cached, cold] = await Promise.all([
      startServe(['--model', model, ...ARGS, '--prefix-cache', '256M']),
      startServe(['--model', model, ...ARGS, '--prefix-cache', '0']),
    ])
  }, 120_000)
  afterAll(async () => {
    await Promise.all([cached?.stop(), cold?.stop()])
  })

  test('the same greedy text with and without the cache; later turns reuse the earlier ones', async () => {
    const [warm, plain] = await Promise.all([conversation(cached.url), conversation(cold.url)])
    expect(warm.map((a) => a.choices[0]!.message.content)).toEqual(plain.map((a) => a.choices[0]!.message.content))
    expect(plain.every((a) => a.usage.prompt_tokens_details === undefined)).toBe(true)
    const hits = warm.map((a) => a.usage.prompt_tokens_details!.cached_tokens)
    expect(hits[0]).toBe(0)
    // every later turn starts with the previous turn's prompt: at least its whole blocks but one come from the cache
    for (let t = 1; t < warm.length; t++) {
      expect(hits[t]! % 64).toBe(0)
      expect(hits[t]!).toBeGreaterThanOrEqual(Math.floor(warm[t - 1]!.usage.prompt_tokens / 64) * 64 - 64)
      expect(hits[t]!).toBeLessThan(warm[t]!.usage.prompt_tokens)
    }
    const metrics = await (await fetch(`${cached.url}/metrics`)).text()
    const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics)?.[1])
    expect(value('dbcluster_prefix_cache_hit_tokens_total')).toBe(hits.reduce((a, b) => a + b, 0))
    expect(value('dbcluster_prefix_cache_query_tokens_total')).toBe(warm.reduce((n, a) => n + a.usage.prompt_tokens, 0))
    expect(value('dbcluster_prefix_cache_blocks')).toBeGreaterThan(0)
    expect(value('dbcluster_prefix_cache_evictions_total')).toBe(0)
  }, 120_000)

  test('--api-key with several keys: each key is a tenant; a prompt cached for one is no hit for another', async () => {
    const server = await startServe([
      '--model',
      await synthModel('qwen3', 'q4'),
      ...ARGS,
      '--prefix-cache',
      '256M',
      '--api-key',
      'key-alice,key-bob',
    ])
    try {
      const ask = async (key: string) => {
        const r = await fetch(`${server.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: FILLER }], max_tokens: 2 }),
        })
        expect(r.status).toBe(200)
        return ((await r.json()) as Answer).usage.prompt_tokens_details!.cached_tokens
      }
      expect(await ask('key-alice')).toBe(0)
      expect(await ask('key-bob')).toBe(0) // the same prompt, another tenant: computed again
      expect(await ask('key-alice')).toBeGreaterThan(0)
      expect(await ask('key-bob')).toBeGreaterThan(0)
      const wrong = await fetch(`${server.url}/health`, { headers: { authorization: 'Bearer key-carol' } })
      expect(wrong.status).toBe(401)
    } finally {
      await server.stop()
    }
  }, 120_000)
})
