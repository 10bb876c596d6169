/** Tool calling against a real `dbcluster serve` on a random-weight Qwen3 model: a forced call (a named function, or
 * 'required') is decoded under a grammar built from the model's own call format and the function's JSON Schema, so
 * even this model writes a call whose arguments validate (checked with Ajv); through the `openai` SDK (whole, and
 * streamed and assembled by its stream helper), a round trip with the result, the Vercel AI SDK's `generateText`
 * and LangChain's `ChatOpenAI.bindTools`. */
import { createOpenAICompatible } from '@ai-sdk/openai-compatible'
import { ChatOpenAI } from '@langchain/openai'
import { generateText, jsonSchema, tool } from 'ai'
import Ajv from 'ajv'
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import OpenAI from 'openai'
import { synthModel } from '../../support/synth-models.ts'
import { startServe, type ServeProcess } from '../../support/serve-process.ts'

const PARAMETERS = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 16 },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    days: { type: 'integer', enum: [1, 2, 3] },
  },
  required: ['city', 'unit', 'days'],
  additionalProperties: false,
}
const WEATHER = {
  type: 'function' as const,
  function: { name: 'get_weather', description: 'Weather forecast', parameters: PARAMETERS },
}
const NOTE = {
  type: 'function' as const,
  function: {
    name: 'add_note',
    parameters: {
      type: 'object',
      properties: {
        text: { type: 'string', maxLength: 12 },
        tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 2 },
      },
      required: ['text', 'tags'],
      additionalProperties: false,
    },
  },
}
const validate = {
  get_weather: new Ajv().compile(PARAMETERS),
  add_note: new Ajv().compile(NOTE.function.parameters),
}
const ASK = [{ role: 'user' as const, content: 'What is the weather in Paris?' }]

/** Each call names an offered function and its arguments validate against that function's schema. */
function expectValidCalls(calls: readonly { function: { name: string; arguments: string } }[]) {
  expect(calls.length).toBeGreaterThan(0)
  for (const call of calls) {
    const check = validate[call.function.name as keyof typeof validate]
    expect(check).toBeDefined()
    expect(check(JSON.parse(call.function.arguments))).toBe(true)
  }
}

let serve: ServeProcess
let client: OpenAI

beforeAll(async () => {
  const model = await synthModel('qwen3', 'bf16')
  serve = await startServe(['--model', model, '--model-id', 'tiny', '--max-context', '1024', '--max-batch', '4'])
  client = new OpenAI({ baseURL: `${serve.url}/v1`, apiKey: 'unused', maxRetries: 0 })
}, 90_000)
afterAll(() => serve?.stop())

describe('openai SDK', () => {
  test('a named function is called, with arguments valid under its schema, for any seed', async () => {
    for (const seed of [1, 2, 3]) {
      const r = await client.chat.completions.create({
        model: 'tiny',
        messages: ASK,
        tools: [WEATHER, NOTE],
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
        max_tokens: 200,
        seed,
      })
      const choice = r.choices[0]!
      expect(choice.finish_reason).toBe('tool_calls')
      const calls = choice.message.tool_calls as OpenAI.ChatCompletionMessageFunctionToolCall[]
      expect(calls.map((c) => c.function.name)).toEqual(['get_weather'])
      expectValidCalls(calls)
    }
  }, 120_000)

  test("'required', streamed: the stream helper assembles valid calls, equal to the non-streamed answer", async () => {
    const body = {
      model: 'tiny',
      messages: ASK,
      tools: [WEATHER, NOTE],
      tool_choice: 'required' as const,
      parallel_tool_calls: false,
      max_tokens: 200,
      seed: 11,
    }
    const stream = client.chat.completions.stream(body)
    const final = await stream.finalChatCompletion()
    const streamed = final.choices[0]!
    expect(streamed.finish_reason).toBe('tool_calls')
    const calls = streamed.message.tool_calls as OpenAI.ChatCompletionMessageFunctionToolCall[]
    expect(calls).toHaveLength(1)
    expectValidCalls(calls)
    const whole = (await client.chat.completions.create(body)).choices[0]!
    const named = (m: OpenAI.ChatCompletionMessage) =>
      (m.tool_calls as OpenAI.ChatCompletionMessageFunctionToolCall[]).map((c) => c.function)
    expect(named(whole.message)).toEqual(named(streamed.message))
  }, 120_000)

  test('round trip: the call and its result go back through the template and the model answers', async () => {
    const first = await client.chat.completions.create({
      model: 'tiny',
      messages: ASK,
      tools: [WEATHER],
      tool_choice: 'required',
      max_tokens: 200,
      seed: 5,
    })
    const message = first.choices[0]!.message
    const second = await client.chat.completions.create({
      model: 'tiny',
      messages: [
        ...ASK,
        message,
        ...message.tool_calls!.map((c) => ({ role: 'tool' as const, tool_call_id: c.id, content: '{"temp": 21}' })),
      ],
      tools: [WEATHER],
      max_tokens: 8,
      temperature: 0,
    })
    expect(second.choices[0]!.finish_reason).toMatch(/^(length|stop|tool_calls)$/)
    // the second prompt holds the first prompt, the rendered call and the result
    expect(second.usage!.prompt_tokens).toBeGreaterThan(first.usage!.prompt_tokens + first.usage!.completion_tokens)
  }, 120_000)
})

describe('other clients', () => {
  test('Vercel AI SDK: generateText with a required tool gets a valid tool call', async () => {
    const provider = createOpenAICompatible({ name: 'dbcluster', baseURL: `${serve.url}/v1`, apiKey: 'unused' })
    const result = await generateText({
      model: provider.chatModel('tiny'),
      prompt: 'What is the weather in Paris?',
      tools: { get_weather: tool({ description: 'Weather forecast', inputSchema: jsonSchema(PARAMETERS) }) },
      toolChoice: 'required',
      maxOutputTokens: 200,
      seed: 2,
      maxRetries: 0,
    })
    expect(result.finishReason).toBe('tool-calls')
    expect(result.toolCalls.map((c) => c.toolName)).toContain('get_weather')
    for (const call of result.toolCalls) expect(validate.get_weather(call.input)).toBe(true)
  }, 120_000)

  test('LangChain: ChatOpenAI.bindTools with a named tool_choice gives tool_calls on the message', async () => {
    const model = new ChatOpenAI({
      model: 'tiny',
      apiKey: 'unused',
      configuration: { baseURL: `${serve.url}/v1` },
      maxTokens: 200,
      maxRetries: 0,
    })
    const bound = model.bindTools([WEATHER, NOTE], { tool_choice: 'add_note' })
    const message = await bound.invoke('Remember to buy milk.')
    expect(message.tool_calls!.map((c) => c.name)).toEqual(['add_note'])
    for (const call of message.tool_calls!) expect(validate.add_note(call.args)).toBe(true)
  }, 120_000)
})
