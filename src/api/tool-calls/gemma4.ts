/** Gemma 4 calls: `<|tool_call>call:f{city:<|"|>Paris<|"|>,days:3}<tool_call|>` — bare keys, strings between
 * `<|"|>` quote tokens, numbers, booleans, lists and nested objects as in JSON. Read by rewriting the body to JSON. */
import type { ChatTool } from '../../model/chat-template.ts'
import {
  markerStart,
  openAiCallId,
  parseBlocks,
  parseJson,
  type ParsedToolCall,
  type ToolCallFormat,
} from './format.ts'

const BEGIN = '<|tool_call>'
const END = '<tool_call|>'
const QUOTE = '<|"|>'

/** The body `{…}` in JSON: quote-token strings and bare keys quoted; null where it cannot be. */
export function gemmaToJson(body: string): string | null {
  let out = ''
  for (let i = 0; i < body.length;) {
    if (body.startsWith(QUOTE, i)) {
      const close = body.indexOf(QUOTE, i + QUOTE.length)
      if (close < 0) return null
      out += JSON.stringify(body.slice(i + QUOTE.length, close))
      i = close + QUOTE.length
    } else if (body[i] === '"') {
      // a JSON string as the model may also write one: copied whole, escapes included
      let j = i + 1
      while (j < body.length && body[j] !== '"') j += body[j] === '\\' ? 2 : 1
      if (j >= body.length) return null
      out += body.slice(i, j + 1)
      i = j + 1
    } else if (/[A-Za-z_]/.test(body[i]!)) {
      const word = /^[A-Za-z_][\w.-]*/.exec(body.slice(i))![0]
      const after = body.slice(i + word.length).trimStart()
      out += after.startsWith(':') ? JSON.stringify(word) : word
      i += word.length
    } else out += body[i++]
  }
  return out
}

function read(body: string, tools: readonly ChatTool[]): ParsedToolCall | null {
  const match = /^call:([^{\s]+)(\{[\s\S]*\})$/.exec(body.trim())
  if (!match || !tools.some((t) => t.function.name === match[1])) return null
  const json = gemmaToJson(match[2]!)
  const args = json === null ? undefined : parseJson(json)
  if (!args || typeof args !== 'object' || Array.isArray(args)) return null
  return { name: match[1]!, arguments: JSON.stringify(args) }
}

export const gemma4: ToolCallFormat = {
  name: 'gemma4',
  detect: (template) => template.includes(BEGIN),
  parse: (text, tools) => parseBlocks(text, BEGIN, END, (body) => read(body, tools)),
  callStart: (text) => markerStart(text, BEGIN),
  closedCalls: true,
  callBegin: BEGIN,
  callEnd: END,
  // arguments are not JSON here, so a JSON schema cannot be forced through them
  forced: () => null,
  callId: openAiCallId,
}
