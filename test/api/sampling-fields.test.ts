/** Every OpenAI sampling field is honoured or refused, through the official `openai` client against real `dbcluster serve`
 * processes: one node, a 2-node pipeline (sampled on the last stage) and a 2-node tensor-parallel cluster (sampled on
 * rank 0 from the ranks' vocabulary slices). logit_bias and the presence and frequency penalties are checked token for
 * token against a greedy loop written here over the model's logits (OpenAI's formula, by hand); `n` against the same
 * request asked once per seed; anything the server does not honour is a 400 naming it. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { ModelTokenizer } from '../../src/model/tokenizer.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { PROMPT } from '../support/greedy.ts'
import { API_TARGETS, startApiTarget } from '../support/api-targets.ts'
import { startServe } from '../support/serve-process.ts'
import { synthModel } from '../support/synth-models.ts'

const SERVE_ARGS = ['--model-id', 'tiny', '--max-batch', '4', '--max-queue', '8', '--max-context', '256']
/** " world": never the model's own greedy choice after PROMPT, so a bias is what puts it there. */
const WORLD = 1879

interface Adjust {
  bias?: Record<number, number>
  presence?: number
  frequency?: number
}

let modelDir: string
let tokenizer: ModelTokenizer
let reference: LocalPipeline

/** Greedy decoding with OpenAI's formula applied by hand to each step's logits: logit + bias − (frequency·count +
 * presence·[count > 0]), counts over the tokens generated so far; float32 like the logits; the first best wins. */
async function referenceGreedy(prompt: number[], steps: number, a: Adjust = {}): Promise<number[]> {
  const slot = reference.openSequence()
  try {
    let logits = await reference.step({
      tokens: Int32Array.from(prompt),
      slots: new Int32Array(prompt.length).fill(slot),
      positions: Int32Array.from(prompt.keys()),
      logitRows: Int32Array.of(prompt.length - 1),
    })
    const out: number[] = []
    for (let i = 0; i < steps; i++) {
      let best = -1
      let bestValue = -Infinity
      for (let t = 0; t < logits.length; t++) {
        const count = out.filter((o) => o === t).length
        const penalty = (a.frequency ?? 0) * count + (count > 0 ? (a.presence ?? 0) : 0)
        const value = Math.fround(logits[t]! + (a.bias?.[t] ?? 0) - penalty)
        if (value > bestValue) ((best = t), (bestValue = value))
      }
      out.push(best)
      logits = await reference.step({
        tokens: Int32Array.of(best),
        slots: Int32Array.of(slot),
        positions: Int32Array.of(prompt.length + i),
        logitRows: Int32Array.of(0),
      })
    }
    return out
  } finally {
    reference.closeSequence(slot)
  }
}

beforeAll(async () => {
  modelDir = await synthModel('qwen3', 'bf16')
  tokenizer = new ModelTokenizer(modelDir)
  reference = new LocalPipeline([ModelStage.load(modelDir, openCpuBackend(), { slots: 1, maxLen: 256 })])
}, 60_000)

for (const where of API_TARGETS) {
  describe(where.name, () => {
    let target: { url: string; stop(): Promise<void> | void }
    let client: OpenAI

    beforeAll(async () => {
      target = await startApiTarget(where, modelDir, SERVE_ARGS)
      client = new OpenAI({ baseURL: `${target.url}/v1`, apiKey: 'unused', maxRetries: 0 })
    }, 90_000)
    afterAll(() => target?.stop())

    /** Greedy text completion of PROMPT (as token ids) with the given adjustments. */
    const complete = async (maxTokens: number, extra: Record<string, unknown> = {}) =>
      (
        await client.completions.create({
          model: 'tiny',
          prompt: PROMPT,
          max_tokens: maxTokens,
          temperature: 0,
          ...extra,
        })
      ).choices[0]!.text

    describe('logit_bias, presence_penalty, frequency_penalty', () => {
      test('logit_bias +100 forces a token: greedy output becomes that token', async () => {
        const plain = await referenceGreedy(PROMPT, 6)
        expect(plain).not.toContain(WORLD)
        expect(await complete(6, { logit_bias: { [WORLD]: 100 } })).toBe(' world'.repeat(6))
        // chat too
        const chat = await client.chat.completions.create({
          model: 'tiny',
          messages: [{ role: 'user', content: 'Hi' }],
          max_tokens: 4,
          temperature: 0,
          logit_bias: { [WORLD]: 100 },
        })
        expect(chat.choices[0]!.message.content).toBe(' world'.repeat(4))
      })

      test('logit_bias −100 bans the greedy token', async () => {
        const [greedy] = await referenceGreedy(PROMPT, 1)
        const banned = await referenceGreedy(PROMPT, 6, { bias: { [greedy!]: -100 } })
        expect(banned).not.toContain(greedy)
        expect(await complete(6, { logit_bias: { [greedy!]: -100 } })).toBe(tokenizer.decode(banned))
        expect(await complete(6)).toBe(tokenizer.decode(await referenceGreedy(PROMPT, 6)))
      })

      test('frequency_penalty stops the repetition a logit_bias creates', async () => {
        // +4 beats every logit of this model (all within ±2): without a penalty the biased token repeats forever
        expect(await complete(8, { logit_bias: { [WORLD]: 4 } })).toBe(' world'.repeat(8))
        const a = { bias: { [WORLD]: 4 }, frequency: 1.5 }
        const expected = await referenceGreedy(PROMPT, 8, a)
        // 4, then 2.5, then 1 above its logit: it wins twice, then the count has cost it the lead
        expect(expected.slice(0, 2)).toEqual([WORLD, WORLD])
        expect(expected.filter((t) => t === WORLD).length).toBeLessThan(8)
        expect(await complete(8, { logit_bias: { [WORLD]: 4 }, frequency_penalty: 1.5 })).toBe(
          tokenizer.decode(expected),
        )
      })

      test('presence_penalty costs a token once it has appeared, however often', async () => {
        // +3 − 2 once present: the token wins once, then loses the lead for good
        const once = await referenceGreedy(PROMPT, 6, { bias: { [WORLD]: 3 }, presence: 2 })
        expect(once[0]).toBe(WORLD)
        expect(once.filter((t) => t === WORLD)).toHaveLength(1)
        expect(await complete(6, { logit_bias: { [WORLD]: 3 }, presence_penalty: 2 })).toBe(tokenizer.decode(once))
        // +4 − 2 still leads: presence does not grow with the count, so the token keeps repeating
        expect(await complete(6, { logit_bias: { [WORLD]: 4 }, presence_penalty: 2 })).toBe(' world'.repeat(6))
        // a negative penalty encourages what was said: the model's own first token, +2 once present
        const repeat = await referenceGreedy(PROMPT, 6, { presence: -2 })
        expect(await complete(6, { presence_penalty: -2 })).toBe(tokenizer.decode(repeat))
        expect(new Set(repeat).size).toBe(1)
      })
    })

    describe('n choices', () => {
      const body = {
        model: 'tiny',
        messages: [{ role: 'user' as const, content: 'Hello there' }],
        max_tokens: 6,
        temperature: 1,
        seed: 11,
      }

      test('n: 3 with a seed → 3 choices, each the request seeded seed + i; reproducible; usage counts the prompt once', async () => {
        const r = await client.chat.completions.create({ ...body, n: 3 })
        expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2])
        const again = await client.chat.completions.create({ ...body, n: 3 })
        expect(again.choices.map((c) => c.message.content)).toEqual(r.choices.map((c) => c.message.content))
        const alone = []
        for (const seed of [11, 12, 13])
          alone.push((await client.chat.completions.create({ ...body, seed })).choices[0]!)
        expect(r.choices.map((c) => c.message.content)).toEqual(alone.map((c) => c.message.content))
        expect(new Set(alone.map((c) => c.message.content)).size).toBe(3)
        const single = await client.chat.completions.create({ ...body })
        expect(r.usage!.prompt_tokens).toBe(single.usage!.prompt_tokens)
        expect(r.usage!.completion_tokens).toBe(18)
        expect(r.usage!.total_tokens).toBe(single.usage!.prompt_tokens + 18)
      })

      test('streamed, every chunk carries its choice index; each index joins to its choice', async () => {
        const whole = await client.chat.completions.create({ ...body, n: 3 })
        const stream = await client.chat.completions.create({
          ...body,
          n: 3,
          stream: true,
          stream_options: { include_usage: true },
        })
        const text = ['', '', '']
        const roles: number[] = []
        const finish: (string | null)[] = [null, null, null]
        let usage
        for await (const chunk of stream) {
          if (chunk.usage) usage = chunk.usage
          for (const c of chunk.choices) {
            if (c.delta.role) roles.push(c.index)
            text[c.index] += c.delta.content ?? ''
            finish[c.index] = c.finish_reason ?? finish[c.index]!
          }
        }
        expect(roles.sort()).toEqual([0, 1, 2])
        expect(text).toEqual(whole.choices.map((c) => c.message.content!))
        expect(finish).toEqual(['length', 'length', 'length'])
        expect(usage!.completion_tokens).toBe(18)
        expect(usage!.prompt_tokens).toBe(whole.usage!.prompt_tokens)
      })

      test('text completions: n with logprobs for every choice', async () => {
        const r = await client.completions.create({
          model: 'tiny',
          prompt: PROMPT,
          max_tokens: 4,
          temperature: 0.8,
          seed: 5,
          n: 2,
          logprobs: 2,
        })
        expect(r.choices.map((c) => c.index)).toEqual([0, 1])
        for (const c of r.choices) {
          expect(c.logprobs!.tokens).toHaveLength(4)
          expect(c.logprobs!.top_logprobs!.every((top) => Object.keys(top).length === 2)).toBe(true)
        }
        expect(r.usage!.completion_tokens).toBe(8)
        expect(r.usage!.prompt_tokens).toBe(PROMPT.length)
      })
    })

    test('/v1/models gives the serving context as context_length and max_model_len', async () => {
      const models = await (await fetch(`${target.url}/v1/models`)).json()
      expect(models.data[0]).toMatchObject({ id: 'tiny', context_length: 256, max_model_len: 256 })
      // the tensor-parallel cluster above sampled from its ranks' vocabulary slices, the bias applied on each
      if (where.parallel === 'tensor')
        expect((await (await fetch(`${target.url}/health`)).json()).tensor_parallel.sampling).toBe('split')
    })
  })
}

describe('fields the server does not honour are refused by name', () => {
  let target: { url: string; stop(): Promise<void> }
  let client: OpenAI
  beforeAll(async () => {
    target = await startServe(['--model', modelDir, ...SERVE_ARGS])
    client = new OpenAI({ baseURL: `${target.url}/v1`, apiKey: 'unused', maxRetries: 0 })
  }, 60_000)
  afterAll(() => target?.stop())

  const chat = { model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }
  const post = (path: string, body: Record<string, unknown>) =>
    fetch(`${target.url}/v1/${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    })

  test('the SDK sees a BadRequestError whose param and message name the field', async () => {
    for (const [extra, param] of [
      [{ tools: [{ type: 'custom', custom: { name: 'f' } }] }, 'tools[0].type'],
      [{ response_format: { type: 'regex' } }, 'response_format'],
      [{ function_call: 'auto' }, 'function_call'],
      [{ metadata: { a: 'b' } }, 'metadata'],
      [{ store: true }, 'store'],
      [{ audio: { voice: 'alloy', format: 'mp3' } }, 'audio'],
      [{ reasoning_effort: 'low' }, 'reasoning_effort'],
      [{ stream: true, stream_options: { include_obfuscation: true } }, 'stream_options.include_obfuscation'],
    ] as const) {
      const e = await client.chat.completions
        .create({ ...chat, ...extra } as Parameters<typeof client.chat.completions.create>[0])
        .catch((x) => x)
      expect(e).toBeInstanceOf(OpenAI.BadRequestError)
      expect(e.code).toBe('unsupported_parameter')
      expect(e.param).toBe(param)
      expect(e.message).toContain(`'${param}' is not supported by this server`)
    }
  })

  test('raw: unknown fields on either endpoint, and completion fields only in their trivial form', async () => {
    for (const [path, body, param] of [
      ['chat/completions', { ...chat, frobnicate: 1 }, 'frobnicate'],
      ['chat/completions', { ...chat, functions: [] }, 'functions'],
      ['chat/completions', { ...chat, messages: [{ role: 'user', content: 'x', name: 'ann' }] }, 'messages[0].name'],
      ['completions', { prompt: 'x', echo: true }, 'echo'],
      ['completions', { prompt: 'x', best_of: 2 }, 'best_of'],
      ['completions', { prompt: 'x', suffix: 'end' }, 'suffix'],
      ['completions', { prompt: 'x', top_logprobs: 2 }, 'top_logprobs'],
      ['completions', { prompt: 'x', response_format: { type: 'text' } }, 'response_format'],
    ] as const) {
      const res = await post(path, body)
      expect(res.status).toBe(400)
      const { error } = await res.json()
      expect(error).toMatchObject({ type: 'invalid_request_error', code: 'unsupported_parameter', param })
      expect(error.message).toContain(`'${param}' is not supported by this server`)
    }
  })

  test('invalid logit_bias, penalties and n are refused naming the field', async () => {
    for (const [extra, param] of [
      [{ logit_bias: { abc: 1 } }, 'logit_bias'],
      [{ logit_bias: { '151936': 1 } }, 'logit_bias'],
      [{ logit_bias: { '-1': 1 } }, 'logit_bias'],
      [{ logit_bias: { '5': 101 } }, 'logit_bias'],
      [{ logit_bias: { '5': 'x' } }, 'logit_bias'],
      [{ logit_bias: [1, 2] }, 'logit_bias'],
      [{ presence_penalty: 2.5 }, 'presence_penalty'],
      [{ frequency_penalty: -3 }, 'frequency_penalty'],
      [{ frequency_penalty: '1' }, 'frequency_penalty'],
      [{ n: 0 }, 'n'],
      [{ n: 9 }, 'n'],
      [{ n: 1.5 }, 'n'],
    ] as const) {
      for (const path of ['chat/completions', 'completions']) {
        const res = await post(path, { ...(path === 'completions' ? { prompt: 'x' } : chat), ...extra })
        expect(res.status).toBe(400)
        expect((await res.json()).error).toMatchObject({ code: 'invalid_value', param })
      }
    }
  })

  test('honourable forms are accepted: text response_format, no tools, metadata that changes nothing', async () => {
    const plain = await client.chat.completions.create({ ...chat, temperature: 0 } as never)
    for (const extra of [
      { response_format: { type: 'text' } },
      { tool_choice: 'none' },
      { user: 'u-1', safety_identifier: 's', prompt_cache_key: 'k', store: false, modalities: ['text'] },
      { tools: null, metadata: null, logit_bias: {}, presence_penalty: 0, frequency_penalty: 0, n: 1 },
      { messages: [{ role: 'user', content: 'x', name: null }] },
      { stream_options: { include_usage: true } },
    ]) {
      const r = await client.chat.completions.create({ ...chat, temperature: 0, ...extra } as never)
      expect((r as OpenAI.ChatCompletion).choices[0]!.message.content).toBe(
        (plain as OpenAI.ChatCompletion).choices[0]!.message.content,
      )
    }
    const text = await client.completions.create({
      model: 'tiny',
      prompt: 'x',
      max_tokens: 2,
      temperature: 0,
      echo: false,
      best_of: 1,
      suffix: '',
      user: 'u',
    } as never)
    expect((text as OpenAI.Completion).choices).toHaveLength(1)
  })

  test('a client that leaves a streamed n: 3 request cancels every choice', async () => {
    const abort = new AbortController()
    const res = await fetch(`${target.url}/v1/completions`, {
      method: 'POST',
      body: JSON.stringify({ prompt: 'x', max_tokens: 200, n: 3, stream: true, temperature: 1 }),
      headers: { 'content-type': 'application/json' },
      signal: abort.signal,
    })
    const reader = res.body!.getReader()
    await reader.read()
    const before = await (await fetch(`${target.url}/metrics`)).text()
    const cancelled = (text: string) =>
      Number(/dbcluster_requests_total\{outcome="cancelled"\} (\d+)/.exec(text)?.[1] ?? 0)
    abort.abort()
    let health = { running: -1, queue_depth: -1 }
    for (let i = 0; i < 100; i++) {
      health = await (await fetch(`${target.url}/health`)).json()
      if (health.running === 0 && health.queue_depth === 0) break
      await Bun.sleep(20)
    }
    expect(health).toMatchObject({ running: 0, queue_depth: 0 })
    const after = await (await fetch(`${target.url}/metrics`)).text()
    expect(cancelled(after) - cancelled(before)).toBe(3)
  })
})
