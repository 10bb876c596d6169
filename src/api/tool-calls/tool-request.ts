/** The tool fields of a chat request (`tools`, `tool_choice`, `parallel_tool_calls`) checked and turned into what the
 * template and the answer need; every value that cannot be honoured is refused naming its field. */
import type { ChatTool } from '../../model/chat-template.ts'
import { invalid } from '../errors.ts'
import { unsupported } from '../request-fields.ts'

export type ToolChoice = { type: 'none' } | { type: 'auto' } | { type: 'required' } | { type: 'function'; name: string }

export interface ToolRequest {
  tools: ChatTool[]
  choice: ToolChoice
  /** OpenAI's `parallel_tool_calls` (default true: several calls allowed; false: at most one). */
  parallel: boolean
  /** Indexes of tools that asked for `strict: true` (schema-exact arguments). */
  strict: number[]
}

/** OpenAI's limits: at most 128 tools; names of letters, digits, `_` and `-`, up to 64. */
export const MAX_TOOLS = 128
const NAME = /^[A-Za-z0-9_-]{1,64}$/

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v)

function parseTool(raw: unknown, i: number): { tool: ChatTool; strict: boolean } {
  const at = `tools[${i}]`
  if (!isObject(raw)) throw invalid(`'${at}' must be an object`, at)
  if (raw.type !== 'function')
    throw unsupported(`${at}.type`, `only 'function' tools are honoured, not ${JSON.stringify(raw.type)}`)
  for (const [key, value] of Object.entries(raw))
    if (key !== 'type' && key !== 'function' && value !== null) throw unsupported(`${at}.${key}`)
  const fn = raw.function
  if (!isObject(fn)) throw invalid(`'${at}.function' must be an object`, `${at}.function`)
  for (const [key, value] of Object.entries(fn))
    if (!['name', 'description', 'parameters', 'strict'].includes(key) && value !== null)
      throw unsupported(`${at}.function.${key}`)
  if (typeof fn.name !== 'string' || !NAME.test(fn.name))
    throw invalid(`'${at}.function.name' must be 1-64 letters, digits, '_' or '-'`, `${at}.function.name`)
  if (fn.description != null && typeof fn.description !== 'string')
    throw invalid(`'${at}.function.description' must be a string`, `${at}.function.description`)
  if (fn.parameters != null && !isObject(fn.parameters))
    throw invalid(`'${at}.function.parameters' must be a JSON Schema object`, `${at}.function.parameters`)
  if (fn.strict != null && typeof fn.strict !== 'boolean')
    throw invalid(`'${at}.function.strict' must be a boolean`, `${at}.function.strict`)
  const tool: ChatTool = {
    type: 'function',
    function: {
      name: fn.name,
      ...(typeof fn.description === 'string' ? { description: fn.description } : {}),
      // OpenAI: omitted parameters mean a function that takes none
      parameters: (fn.parameters as Record<string, unknown> | undefined) ?? { type: 'object', properties: {} },
    },
  }
  return { tool, strict: fn.strict === true }
}

function parseChoice(raw: unknown, tools: readonly ChatTool[]): ToolChoice {
  if (raw === undefined || raw === null) return tools.length ? { type: 'auto' } : { type: 'none' }
  if (raw === 'none' || raw === 'auto' || raw === 'required') return { type: raw }
  if (isObject(raw) && raw.type === 'function' && isObject(raw.function) && typeof raw.function.name === 'string') {
    const name = raw.function.name
    if (!tools.some((t) => t.function.name === name))
      throw invalid(`'tool_choice' names the function '${name}', which is not among 'tools'`, 'tool_choice')
    return { type: 'function', name }
  }
  throw invalid(
    `'tool_choice' must be 'none', 'auto', 'required' or {type: 'function', function: {name}}`,
    'tool_choice',
  )
}

export function parseToolRequest(body: Record<string, unknown>): ToolRequest {
  const raw = body.tools
  let tools: ChatTool[] = []
  const strict: number[] = []
  if (raw !== undefined && raw !== null) {
    if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_TOOLS)
      throw invalid(`'tools' must be an array of 1 to ${MAX_TOOLS} function tools`, 'tools')
    tools = raw.map((t, i) => {
      const parsed = parseTool(t, i)
      if (parsed.strict) strict.push(i)
      return parsed.tool
    })
    const names = new Set<string>()
    for (const [i, t] of tools.entries()) {
      if (names.has(t.function.name))
        throw invalid(`'tools' names the function '${t.function.name}' twice`, `tools[${i}].function.name`)
      names.add(t.function.name)
    }
  }
  const choice = parseChoice(body.tool_choice, tools)
  if (choice.type !== 'none' && tools.length === 0)
    throw invalid(`'tool_choice' ${JSON.stringify(body.tool_choice)} needs 'tools'`, 'tool_choice')
  const parallel = body.parallel_tool_calls
  if (parallel !== undefined && parallel !== null && typeof parallel !== 'boolean')
    throw invalid(`'parallel_tool_calls' must be a boolean`, 'parallel_tool_calls')
  return { tools, choice, parallel: parallel !== false, strict }
}
