/** Llama 3.1 / 3.2 / 3.3 JSON calls: the whole answer is `{"name": "f", "parameters": {…}}`, optionally after
 * `<|python_tag|>`; several are separated by `;` (the templates render one per assistant turn). Any other text around
 * them makes the answer plain content. */
import type { ChatTool } from '../../model/chat-template.ts'
import { callFromObject, jsonEnd, openAiCallId, parseJson, type ParsedOutput, type ToolCallFormat } from './format.ts'

const PYTHON_TAG = '<|python_tag|>'

function parse(text: string, tools: readonly ChatTool[]): ParsedOutput {
  let rest = text.trimStart()
  if (rest.startsWith(PYTHON_TAG)) rest = rest.slice(PYTHON_TAG.length)
  const calls = []
  for (;;) {
    const end = jsonEnd(rest, 0)
    if (end < 0) break
    const call = callFromObject(parseJson(rest.slice(0, end)), tools, ['parameters', 'arguments'])
    if (!call) break
    calls.push(call)
    rest = rest.slice(end).trimStart()
    if (!rest.startsWith(';')) break
    rest = rest.slice(1)
  }
  return calls.length > 0 && rest.trim() === '' ? { content: '', calls } : { content: text, calls: [] }
}

export const llama3Json: ToolCallFormat = {
  name: 'llama3-json',
  detect: (template) => template.includes('"parameters": ') && template.includes('<|start_header_id|>'),
  parse,
  // an answer that opens with JSON (or the python tag) may be a call: held back to the end
  callStart: (text) => {
    const trimmed = text.trimStart()
    return trimmed.startsWith('{') || PYTHON_TAG.startsWith(trimmed) || trimmed.startsWith(PYTHON_TAG) ? 0 : -1
  },
  closedCalls: false,
  callBegin: null,
  callEnd: null,
  forced: (name) => ({
    begin: `{"name": ${JSON.stringify(name)}, "parameters": `,
    end: '}',
    arguments: 'json',
    separator: '; ',
  }),
  callId: openAiCallId,
}
