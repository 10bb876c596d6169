/** `response_format` json_schema and json_object through the official `openai` client against real `dbcluster serve`
 * processes on a random-weight model: whatever the weights, every answer that ends with finish_reason 'stop' parses
 * and Ajv (an independent JSON Schema validator) accepts it; a 2-node pipeline (masked on the last stage) and a 2-node
 * tensor-parallel cluster (masked on every rank's vocabulary slice) answer greedy requests exactly as one process does;
 * a keyword the grammar would not enforce is a 400 naming it. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import Ajv2020 from 'ajv/dist/2020'
import OpenAI from 'openai'
import { API_TARGETS, startApiTarget } from '../support/api-targets.ts'
import { startServe } from '../support/serve-process.ts'
import { synthModel } from '../support/synth-models.ts'
import { SCHEMAS } from '../engine/schema-corpus.ts'

const SERVE_ARGS = ['--model-id', 'tiny', '--max-batch', '4', '--max-queue', '16', '--max-context', '512']
const ajv = new Ajv2020({ strict: false })
const MAX_TOKENS = 200

let modelDir: string
/** Greedy answers of the one-node server, per schema name: what the clusters must reproduce. */
const reference = new Map<string, string>()

beforeAll(async () => {
  modelDir = await synthModel('qwen3', 'bf16')
}, 60_000)

const request = (name: string, extra: Record<string, unknown> = {}) =>
  ({
    model: 'tiny',
    messages: [{ role: 'user', content: `Give me a ${name} as JSON.` }],
    max_tokens: MAX_TOKENS,
    temperature: 0,
    response_format: { type: 'json_schema', json_schema: { name, schema: SCHEMAS[name]!, strict: true } },
    ...extra,
  }) as OpenAI.ChatCompletionCreateParamsNonStreaming

for (const where of API_TARGETS) {
  describe(where.name, () => {
    let target: { url: string; stop(): Promise<void> | void }
    let client: OpenAI

    beforeAll(async () => {
      target = await startApiTarget(where, modelDir, SERVE_ARGS)
      client = new OpenAI({ baseURL: `${target.url}/v1`, apiKey: 'unused', maxRetries: 0 })
    }, 90_000)
    afterAll(() => target?.stop())

    test('json_schema (strict), greedy: every schema of the corpus gives JSON the schema accepts', async () => {
      for (const schema of Object.keys(SCHEMAS)) {
        const r = await client.chat.completions.create(request(schema))
        const choice = r.choices[0]!
        if (choice.finish_reason !== 'stop')
          throw new Error(`${schema}: cut at ${MAX_TOKENS} tokens: ${choice.message.content}`)
        const text = choice.message.content!
        const validate = ajv.compile(SCHEMAS[schema]!)
        if (!validate(JSON.parse(text))) throw new Error(`${schema}: ${text}: ${JSON.stringify(validate.errors)}`)
        if (where.nodes === 1) reference.set(schema, text)
        // the clusters mask where they sample and reach the same tokens as one process
        else expect(text).toBe(reference.get(schema)!)
      }
    }, 300_000)

    test('json_schema with temperature, n: 3 and a stream: every choice that stops is valid', async () => {
      const schema = 'order'
      const validate = ajv.compile(SCHEMAS[schema]!)
      const stream = await client.chat.completions.create({
        ...request(schema, { temperature: 1, seed: 5, n: 3 }),
        stream: true,
      } as OpenAI.ChatCompletionCreateParamsStreaming)
      const text = ['', '', '']
      const finish: (string | null)[] = [null, null, null]
      for await (const chunk of stream)
        for (const c of chunk.choices) {
          text[c.index] += c.delta.content ?? ''
          finish[c.index] = c.finish_reason ?? finish[c.index]!
        }
      for (let i = 0; i < 3; i++) {
        expect(['stop', 'length']).toContain(finish[i]!)
        if (finish[i] === 'stop') expect(validate(JSON.parse(text[i]!))).toBe(true)
      }
      expect(finish).toContain('stop')
    }, 120_000)

    test('json_object gives a JSON object', async () => {
      const r = await client.chat.completions.create({
        ...request('person'),
        response_format: { type: 'json_object' },
        max_tokens: 300,
      })
      const choice = r.choices[0]!
      if (choice.finish_reason === 'stop') {
        const value = JSON.parse(choice.message.content!)
        expect(value !== null && typeof value === 'object' && !Array.isArray(value)).toBe(true)
      } else {
        // cut by max_tokens (OpenAI's behaviour too): still a prefix of an object
        expect(choice.finish_reason).toBe('length')
        expect(choice.message.content!.startsWith('{')).toBe(true)
      }
    }, 120_000)
  })
}

describe('refusals', () => {
  let target: { url: string; stop(): Promise<void> }
  let client: OpenAI
  beforeAll(async () => {
    target = await startServe(['--model', modelDir, ...SERVE_ARGS])
    client = new OpenAI({ baseURL: `${target.url}/v1`, apiKey: 'unused', maxRetries: 0 })
  }, 60_000)
  afterAll(() => target?.stop())

  const post = (path: string, body: Record<string, unknown>) =>
    fetch(`${target.url}/v1/${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    })
  const chat = { model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 4 }
  const format = (schema: unknown, extra: Record<string, unknown> = {}) => ({
    type: 'json_schema',
    json_schema: { name: 'x', schema, ...extra },
  })

  test('a keyword the grammar would not enforce is a 400 naming it and where it is', async () => {
    for (const [schema, keyword] of [
      [{ type: 'array', items: { type: 'string', maxLength: 3 }, maxItems: 2, uniqueItems: true }, 'uniqueItems'],
      [{ type: 'object', properties: { age: { type: 'integer', minimum: 0 } } }, 'minimum'],
      [{ type: 'string', format: 'date-time' }, 'format'],
    ] as const) {
      const e = await client.chat.completions
        .create({ ...chat, response_format: format(schema) } as never)
        .catch((x) => x)
      expect(e).toBeInstanceOf(OpenAI.BadRequestError)
      expect(e.code).toBe('unsupported_parameter')
      expect(e.param).toBe('response_format.json_schema.schema')
      expect(e.message).toContain(`'${keyword}'`)
    }
  })

  test('malformed response_format and the completions endpoint are refused by name', async () => {
    for (const [path, body, param, code] of [
      [
        'chat/completions',
        { ...chat, response_format: { type: 'json_schema' } },
        'response_format.json_schema',
        'invalid_value',
      ],
      [
        'chat/completions',
        { ...chat, response_format: format({ type: 'object' }, { name: 'a b' }) },
        'response_format.json_schema.name',
        'invalid_value',
      ],
      [
        'chat/completions',
        { ...chat, response_format: format('nope') },
        'response_format.json_schema.schema',
        'invalid_value',
      ],
      [
        'chat/completions',
        { ...chat, response_format: format({ type: 'object' }, { extra: 1 }) },
        'response_format.json_schema.extra',
        'unsupported_parameter',
      ],
      [
        'chat/completions',
        { ...chat, response_format: { type: 'grammar' } },
        'response_format',
        'unsupported_parameter',
      ],
      [
        'completions',
        { prompt: 'x', response_format: { type: 'json_object' } },
        'response_format',
        'unsupported_parameter',
      ],
    ] as const) {
      const res = await post(path, body)
      expect(res.status).toBe(400)
      expect((await res.json()).error).toMatchObject({ code, param })
    }
  })

  test('max_tokens cuts a constrained answer: finish_reason length', async () => {
    const r = await client.chat.completions.create({ ...request('person'), max_tokens: 3 })
    expect(r.choices[0]!.finish_reason).toBe('length')
    expect(r.usage!.completion_tokens).toBe(3)
  })
})
