/** Mistral calls after the `[TOOL_CALLS]` token: a JSON list `[{"name": "f", "arguments": {…}}, …]` (Mistral 7B v0.3,
 * Nemo, Small 3.1), or `f[ARGS]{…}` per call (Small 3.2, Magistral, Devstral; `[CALL_ID]id` may sit between). Ids are
 * 9 alphanumerics, which these templates require of the calls and results sent back. */
import type { ChatTool } from '../../model/chat-template.ts'
import {
  callFromObject,
  jsonEnd,
  markerStart,
  parseJson,
  randomId,
  type ParsedOutput,
  type ParsedToolCall,
  type ToolCallFormat,
} from './format.ts'

const MARKER = '[TOOL_CALLS]'
const NAMED = /^\s*([^\s[\]{}]+)\s*(?:\[CALL_ID\]\s*[A-Za-z0-9]+\s*)?\[ARGS\]/

/** The calls of one `[TOOL_CALLS]` segment, or null where it is malformed. */
function readSegment(segment: string, tools: readonly ChatTool[]): ParsedToolCall[] | null {
  if (segment.trimStart().startsWith('[')) {
    const end = jsonEnd(segment, 0)
    const list = end < 0 || segment.slice(end).trim() !== '' ? undefined : parseJson(segment.slice(0, end))
    if (!Array.isArray(list) || list.length === 0) return null
    const calls = list.map((item) => callFromObject(item, tools, ['arguments', 'parameters']))
    return calls.every((c) => c !== null) ? (calls as ParsedToolCall[]) : null
  }
  const named = NAMED.exec(segment)
  if (!named) return null
  const from = named[0].length
  const end = jsonEnd(segment, from)
  if (end < 0 || segment.slice(end).trim() !== '') return null
  const call = callFromObject({ name: named[1], arguments: parseJson(segment.slice(from, end)) }, tools, ['arguments'])
  return call ? [call] : null
}

function parse(text: string, tools: readonly ChatTool[]): ParsedOutput {
  const first = text.indexOf(MARKER)
  if (first < 0) return { content: text, calls: [] }
  const segments = text.slice(first + MARKER.length).split(MARKER)
  const calls: ParsedToolCall[] = []
  for (const segment of segments) {
    const read = readSegment(segment, tools)
    if (!read) return { content: text, calls: [] }
    calls.push(...read)
  }
  return { content: text.slice(0, first), calls }
}

export const mistral: ToolCallFormat = {
  name: 'mistral',
  detect: (template) => template.includes(MARKER),
  parse,
  callStart: (text) => markerStart(text, MARKER),
  closedCalls: false,
  callBegin: null,
  callEnd: null,
  forced: (name) => ({
    begin: `${MARKER}[{"name": ${JSON.stringify(name)}, "arguments": `,
    end: '}]',
    arguments: 'json',
    separator: '',
  }),
  callId: () => randomId(9),
}

/** The `[TOOL_CALLS]f[ARGS]{…}` generation (templates that render `[ARGS]`): the same parser, another forced shape. */
export const mistralArgs: ToolCallFormat = {
  ...mistral,
  name: 'mistral-args',
  detect: (template) => template.includes(MARKER) && template.includes('[ARGS]'),
  forced: (name) => ({ begin: `${MARKER}${name}[ARGS]`, end: '', arguments: 'json', separator: '' }),
}
