/** The official `openai` client against a real `dbcluster serve` on loopback: one node, a 2-node pipeline cluster (two
 * processes over sealed links) and a 2-node tensor-parallel cluster (every layer split over sealed sockets) — the same
 * answers, streams, errors and endpoints each way. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { synthModel } from '../support/synth-models.ts'
import { API_TARGETS, startApiTarget } from '../support/api-targets.ts'

const ROOT = new URL('../..', import.meta.url).pathname
/** The seeded sample each target gave, to compare the clusters' with one node's. */
const seeded: Record<string, string> = {}
/** The same, sampled with top-k, top-p, min-p and a repetition penalty and no logprobs (the tensor-parallel cluster merges
 * its ranks' candidates rather than whole logits). */
const filtered: Record<string, string[]> = {}
const SERVE_ARGS = ['--model-id', 'tiny', '--max-batch', '4', '--max-queue', '6', '--max-context', '256']

for (const where of API_TARGETS) {
  describe(where.name, () => {
    let target: { url: string; stop(): Promise<void> | void }
    let client: OpenAI
    let modelDir: string

    beforeAll(async () => {
      modelDir = await synthModel('qwen3', 'bf16')
      target = await startApiTarget(where, modelDir, SERVE_ARGS)
      client = new OpenAI({ baseURL: `${target.url}/v1`, apiKey: 'unused', maxRetries: 0 })
    }, 90_000)
    afterAll(() => target?.stop())

    describe('chat completions', () => {
      test('non-streaming greedy answer with usage; repeatable', async () => {
        const ask = () =>
          client.chat.completions.create({
            model: 'tiny',
            messages: [{ role: 'user', content: 'Hello' }],
            max_tokens: 10,
            temperature: 0,
          })
        const r = await ask()
        expect(r.object).toBe('chat.completion')
        expect(r.choices[0]!.finish_reason).toBe('length')
        expect(r.choices[0]!.message.role).toBe('assistant')
        expect(r.usage!.completion_tokens).toBe(10)
        expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + 10)
        expect((await ask()).choices[0]!.message.content).toBe(r.choices[0]!.message.content)
      })

      test('streaming deltas join to the non-streamed text, with include_usage', async () => {
        const body = {
          model: 'tiny',
          messages: [{ role: 'user' as const, content: 'Tell me' }],
          max_tokens: 12,
          temperature: 0,
        }
        const whole = (await client.chat.completions.create(body)).choices[0]!.message.content
        const stream = await client.chat.completions.create({
          ...body,
          stream: true,
          stream_options: { include_usage: true },
        })
        let text = ''
        let finish: string | null = null
        let usage
        for await (const chunk of stream) {
          if (chunk.usage) usage = chunk.usage
          for (const c of chunk.choices) {
            text += c.delta.content ?? ''
            finish = c.finish_reason ?? finish
          }
        }
        expect(text).toBe(whole!)
        expect(finish).toBe('length')
        expect(usage!.completion_tokens).toBe(12)
      })

      test('greedy output through the API equals `dbcluster generate`', async () => {
        const r = await client.chat.completions.create({
          model: 'tiny',
          messages: [{ role: 'user', content: 'Same?' }],
          max_tokens: 8,
          temperature: 0,
        })
        const cli = Bun.spawnSync(
          [
            process.execPath,
            'src/main.ts',
            'generate',
            '--model',
            modelDir,
            '--chat',
            'Same?',
            '--max-tokens',
            '8',
            '--json',
            '--backend',
            'cpu',
          ],
          { cwd: ROOT, stdout: 'pipe' },
        )
        expect(r.choices[0]!.message.content).toBe(JSON.parse(cli.stdout.toString()).text)
      })

      test('seeded sampling is reproducible; logprobs are reported', async () => {
        const body = {
          model: 'tiny',
          messages: [{ role: 'user' as const, content: 'Hi' }],
          max_tokens: 8,
          temperature: 1,
          seed: 11,
          logprobs: true,
          top_logprobs: 2,
        }
        const a = await client.chat.completions.create(body)
        const b = await client.chat.completions.create(body)
        expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content)
        // sampled on the last stage from the head's seeded stream: the same tokens as on one node
        seeded[where.name] = a.choices[0]!.message.content!
        if (where.nodes > 1) expect(seeded[where.name]).toBe(seeded['one node']!)
        const lp = a.choices[0]!.logprobs!.content!
        expect(lp).toHaveLength(8)
        for (const t of lp) {
          expect(t.logprob).toBeLessThanOrEqual(0)
          expect(t.top_logprobs).toHaveLength(2)
          expect(t.top_logprobs[0]!.logprob).toBeGreaterThanOrEqual(t.top_logprobs[1]!.logprob)
        }
      })

      test("seeded sampling with top-k, top-p, min-p and a repetition penalty gives one node's tokens", async () => {
        const texts: string[] = []
        for (const [seed, temperature] of [
          [3, 0.7],
          [4, 1.5],
          [5, 0.2],
        ] as const) {
          const body = {
            model: 'tiny',
            prompt: 'Once upon a time',
            max_tokens: 10,
            temperature,
            seed,
            top_p: 0.9,
            top_k: 40,
            min_p: 0.02,
            repetition_penalty: 1.3,
          }
          texts.push(
            (
              await client.completions.create(
                body as Parameters<typeof client.completions.create>[0] & { stream?: false },
              )
            ).choices[0]!.text,
          )
        }
        // three seeds and temperatures: three different samples, not one degenerate answer
        expect(new Set(texts).size).toBe(3)
        filtered[where.name] = texts
        if (where.nodes > 1) expect(filtered[where.name]).toEqual(filtered['one node']!)
      })

      test('a stop string ends the answer before it', async () => {
        const free = (
          await client.completions.create({ model: 'tiny', prompt: 'Once upon', max_tokens: 12, temperature: 0 })
        ).choices[0]!.text
        const stop = free.slice(4, 7)
        const r = await client.completions.create({
          model: 'tiny',
          prompt: 'Once upon',
          max_tokens: 12,
          temperature: 0,
          stop: [stop],
        })
        expect(r.choices[0]!.finish_reason).toBe('stop')
        expect(r.choices[0]!.text).toBe(free.slice(0, free.indexOf(stop)))
      })
    })

    describe('text completions', () => {
      test('prompt as text and as token ids give the same greedy answer', async () => {
        const a = await client.completions.create({
          model: 'tiny',
          prompt: 'Hello, world',
          max_tokens: 6,
          temperature: 0,
        })
        const b = await client.completions.create({
          model: 'tiny',
          prompt: [9707, 11, 1879],
          max_tokens: 6,
          temperature: 0,
        })
        expect(a.object).toBe('text_completion')
        expect(a.usage!.prompt_tokens).toBe(3)
        expect(b.choices[0]!.text).toBe(a.choices[0]!.text)
      })
    })

    describe('errors surface as the SDK error types', () => {
      test('unknown model → NotFoundError (404)', async () => {
        const e = await client.chat.completions
          .create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] })
          .catch((x) => x)
        expect(e).toBeInstanceOf(OpenAI.NotFoundError)
        expect(e.message).toContain("'nope' does not exist")
      })
      test('n > 8, bad temperature, too long → BadRequestError (400)', async () => {
        for (const extra of [{ n: 9 }, { temperature: 7 }, { max_tokens: 100000 }]) {
          const e = await client.chat.completions
            .create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], ...extra })
            .catch((x) => x)
          expect(e).toBeInstanceOf(OpenAI.BadRequestError)
        }
      })
      test('bad JSON → 400, oversized body → 413, unknown route → 404', async () => {
        const bad = await fetch(`${target.url}/v1/chat/completions`, {
          method: 'POST',
          body: '{nope',
          headers: { 'content-type': 'application/json' },
        })
        expect(bad.status).toBe(400)
        expect((await bad.json()).error.code).toBe('invalid_json')
        const big = await fetch(`${target.url}/v1/completions`, {
          method: 'POST',
          body: JSON.stringify({ prompt: 'x'.repeat(2 * 1024 * 1024) }),
          headers: { 'content-type': 'application/json' },
        })
        expect(big.status).toBe(413)
        expect((await fetch(`${target.url}/v1/nothing`)).status).toBe(404)
      })
    })

    describe('models, health and metrics', () => {
      test('list models, health and Prometheus metrics', async () => {
        const models = await client.models.list()
        expect(models.data.map((m) => m.id)).toEqual(['tiny'])
        const health = await (await fetch(`${target.url}/health`)).json()
        expect(health).toMatchObject({ status: 'ok', model: 'tiny', backend: 'cpu' })
        const metrics = await (await fetch(`${target.url}/metrics`)).text()
        expect(metrics).toMatch(/dbcluster_generated_tokens_total [1-9]\d*/)
        expect(metrics).toContain('dbcluster_time_to_first_token_seconds_bucket{le="+Inf"}')
        expect(metrics).toContain('# TYPE dbcluster_queue_depth gauge')
      })
    })
  })
}
