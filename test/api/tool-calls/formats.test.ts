/** Each tool-call format's parser on text in the shape its models write (captured forms: the templates' own rendering of
 * a call, and what the models emit after the generation prompt), malformed calls included: those stay content. */
import { describe, expect, test } from 'bun:test'
import { gemma4, gemmaToJson } from '../../../src/api/tool-calls/gemma4.ts'
import { harmony } from '../../../src/api/tool-calls/harmony.ts'
import { hermes } from '../../../src/api/tool-calls/hermes.ts'
import { llama3Json } from '../../../src/api/tool-calls/llama3-json.ts'
import { mistral, mistralArgs } from '../../../src/api/tool-calls/mistral.ts'
import { qwenXml } from '../../../src/api/tool-calls/qwen-xml.ts'
import type { ToolCallFormat } from '../../../src/api/tool-calls/format.ts'
import { ToolAnswer, type StreamPiece } from '../../../src/api/tool-calls/tool-answer.ts'
import type { ChatTool } from '../../../src/model/chat-template.ts'

const TOOLS: ChatTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' }, days: { type: 'integer' }, units: { type: 'string' } },
        required: ['city'],
      },
    },
  },
  {
    type: 'function',
    function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string' } } } },
  },
]
const weather = (args: Record<string, unknown>) => ({ name: 'get_weather', arguments: JSON.stringify(args) })
const time = (args: Record<string, unknown>) => ({ name: 'get_time', arguments: JSON.stringify(args) })

interface Case {
  what: string
  text: string
  content: string
  calls: { name: string; arguments: string }[]
}

const CASES: [ToolCallFormat, Case[]][] = [
  [
    hermes,
    [
      {
        what: 'one call, as Qwen3 writes it',
        text: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>',
        content: '',
        calls: [weather({ city: 'Paris', days: 3 })],
      },
      {
        what: 'text, then two calls',
        text: 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>',
        content: 'Let me check.\n\n',
        calls: [weather({ city: 'Oslo' }), time({ zone: 'CET' })],
      },
      {
        what: 'arguments sent as JSON text',
        text: '<tool_call>\n{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}\n</tool_call>',
        content: '',
        calls: [time({ zone: 'UTC' })],
      },
      {
        what: 'malformed JSON stays content',
        text: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>',
        content: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>',
        calls: [],
      },
      {
        what: 'an unknown function stays content, a good call beside it is read',
        text: '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call><tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        content: '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',
        calls: [time({})],
      },
      {
        what: 'an unclosed call stays content',
        text: 'ok <tool_call>\n{"name": "get_time", "arguments": {}}',
        content: 'ok <tool_call>\n{"name": "get_time", "arguments": {}}',
        calls: [],
      },
    ],
  ],
  [
    qwenXml,
    [
      {
        what: 'Qwen3-Coder / Qwen3.5 XML parameters, typed by the schema',
        text: '<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n2\n</parameter>\n<parameter=units>\n12\n</parameter>\n</function>\n</tool_call>',
        content: '',
        calls: [weather({ city: 'New York', days: 2, units: '12' })],
      },
      {
        what: 'stray text inside the function block is malformed',
        text: '<tool_call>\n<function=get_time>\nzone=UTC\n</function>\n</tool_call>',
        content: '<tool_call>\n<function=get_time>\nzone=UTC\n</function>\n</tool_call>',
        calls: [],
      },
    ],
  ],
  [
    llama3Json,
    [
      {
        what: 'Llama 3.1 JSON with "parameters"',
        text: '{"name": "get_weather", "parameters": {"city": "Rome"}}',
        content: '',
        calls: [weather({ city: 'Rome' })],
      },
      {
        what: 'after the python tag, two calls separated by ;',
        text: '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}; {"name": "get_time", "parameters": {}}',
        content: '',
        calls: [weather({ city: 'Rome' }), time({})],
      },
      {
        what: 'JSON inside prose is an answer, not a call',
        text: 'Here: {"name": "get_weather", "parameters": {"city": "Rome"}}',
        content: 'Here: {"name": "get_weather", "parameters": {"city": "Rome"}}',
        calls: [],
      },
      {
        what: 'a JSON answer that is not a call stays content',
        text: '{"city": "Rome"}',
        content: '{"city": "Rome"}',
        calls: [],
      },
    ],
  ],
  [
    mistral,
    [
      {
        what: 'Mistral v0.3 / Nemo JSON list',
        text: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lyon"}}, {"name": "get_time", "arguments": {"zone": "CET"}}]',
        content: '',
        calls: [weather({ city: 'Lyon' }), time({ zone: 'CET' })],
      },
      {
        what: 'Small 3.2 name[ARGS]{…}, one per [TOOL_CALLS]',
        text: 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Lyon"}[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}',
        content: 'Sure.',
        calls: [weather({ city: 'Lyon' }), time({})],
      },
      {
        what: 'a broken list keeps the whole text as content',
        text: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lyon"}',
        content: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lyon"}',
        calls: [],
      },
    ],
  ],
  [
    gemma4,
    [
      {
        what: 'Gemma 4 quote tokens and bare keys',
        text: '<|tool_call>call:get_weather{city:<|"|>São Paulo, "BR"<|"|>,days:2}<tool_call|>',
        content: '',
        calls: [weather({ city: 'São Paulo, "BR"', days: 2 })],
      },
      {
        what: 'a bare word as a value is malformed',
        text: 'x<|tool_call>call:get_time{zone:UTC}<tool_call|>',
        content: 'x<|tool_call>call:get_time{zone:UTC}<tool_call|>',
        calls: [],
      },
    ],
  ],
  [
    harmony,
    [
      {
        what: 'GPT-OSS: analysis, then a commentary call (<|call|> is the EOS, not in the text)',
        text: '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Tokyo"}',
        content: '<|channel|>analysis<|message|>Need weather.<|end|>',
        calls: [weather({ city: 'Tokyo' })],
      },
      {
        what: 'the recipient before the channel, as the template renders calls',
        text: ' to=functions.get_time<|channel|>commentary json<|message|>{"zone": "UTC"}',
        content: '',
        calls: [time({ zone: 'UTC' })],
      },
      {
        what: 'a final answer has no call',
        text: '<|channel|>final<|message|>It is sunny.',
        content: '<|channel|>final<|message|>It is sunny.',
        calls: [],
      },
      {
        what: 'bad JSON to a function stays content',
        text: '<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{zone',
        content: '<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{zone',
        calls: [],
      },
    ],
  ],
]

for (const [format, cases] of CASES) {
  describe(format.name, () => {
    for (const c of cases)
      test(c.what, () => {
        const parsed = format.parse(c.text, TOOLS)
        expect(parsed.calls).toEqual(c.calls)
        expect(parsed.content).toBe(c.content)
        for (const call of parsed.calls) expect(typeof JSON.parse(call.arguments)).toBe('object')
      })
  })
}

describe('forced shapes parse back', () => {
  // what constrained decoding makes a model write must read back as the call
  for (const format of [hermes, llama3Json, mistral, mistralArgs, harmony, qwenXml]) {
    test(format.name, () => {
      const forced = format.forced('get_weather')!
      const args = forced.arguments === 'json' ? '{"city":"Paris"}' : '<parameter=city>\nParis\n</parameter>\n'
      expect(format.parse(forced.begin + args + forced.end, TOOLS).calls).toEqual([weather({ city: 'Paris' })])
    })
  }
  test('gemma4 arguments are not JSON: no grammar', () => expect(gemma4.forced('get_weather')).toBeNull())
})

test('gemmaToJson keeps JSON strings and nests', () => {
  expect(JSON.parse(gemmaToJson('{a:[1,<|"|>x<|"|>],b:{c:true,d:null},"e":"q\\"r"}')!)).toEqual({
    a: [1, 'x'],
    b: { c: true, d: null },
    e: 'q"r',
  })
})

test('Mistral ids are 9 alphanumerics (its templates refuse others), the rest OpenAI-style', () => {
  expect(mistral.callId()).toMatch(/^[A-Za-z0-9]{9}$/)
  expect(hermes.callId()).toMatch(/^call_[A-Za-z0-9]{24}$/)
})

describe('a stream sends what the whole answer holds', () => {
  // every captured text, fed two characters at a time: the assembled content and calls equal the non-streamed message
  for (const [format, cases] of CASES)
    for (const c of cases)
      test(`${format.name}: ${c.what}`, () => {
        const answer = new ToolAnswer({ format, tools: TOOLS, parallel: true, stoppedAtCallEnd: false })
        const whole = answer.message(c.text, 'stop')
        const stream = answer.stream()
        let content = ''
        const calls: { name: string; arguments: string }[] = []
        const take = (piece: StreamPiece) => {
          content += piece.content
          for (const d of piece.toolCalls)
            if ('id' in d) calls[d.index] = { name: d.function.name, arguments: '' }
            else calls[d.index]!.arguments += d.function.arguments
        }
        for (let at = 0; at < c.text.length; at += 2) take(stream.push(c.text.slice(at, at + 2)))
        take(stream.finish())
        expect(content).toBe(whole.message.content ?? '')
        expect(calls).toEqual((whole.message.tool_calls ?? []).map((t) => t.function))
        expect(stream.called).toBe(calls.length > 0)
        expect(whole.finishReason).toBe(calls.length > 0 ? 'tool_calls' : 'stop')
      })
})

test('content before a call streams before the call is complete; a partial marker is held back', () => {
  const stream = new ToolAnswer({ format: hermes, tools: TOOLS, parallel: true, stoppedAtCallEnd: false }).stream()
  expect(stream.push('Checking ').content).toBe('Checking')
  expect(stream.push('now <tool').content).toBe(' now')
  expect(stream.push('_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')).toMatchObject({
    content: '',
    toolCalls: [
      { index: 0, function: { name: 'get_time', arguments: '' } },
      { index: 0, function: { arguments: '{}' } },
    ],
  })
  expect(stream.finish()).toEqual({ content: '', toolCalls: [] })
})

test('parallel_tool_calls false: a call cut by its end marker (the stop string) is read, and only one', () => {
  const answer = new ToolAnswer({ format: hermes, tools: TOOLS, parallel: false, stoppedAtCallEnd: true })
  expect(ToolAnswer.stopFor(hermes, false)).toBe('</tool_call>')
  expect(ToolAnswer.stopFor(hermes, true)).toBeNull()
  const { message } = answer.message('<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n', 'stop')
  expect(message.tool_calls!.map((c) => c.function)).toEqual([time({ zone: 'UTC' })])
})
