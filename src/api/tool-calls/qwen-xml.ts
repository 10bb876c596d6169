/** Qwen3-Coder / Qwen3.5 calls: XML-tagged parameters inside a `<tool_call>` block,
 * `<tool_call>\n<function=f>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>`. A value is text;
 * where the function's schema does not type that parameter as a string it is read as JSON when it parses. */
import type { ChatTool } from '../../model/chat-template.ts'
import {
  markerStart,
  openAiCallId,
  parseBlocks,
  parseJson,
  type ParsedToolCall,
  type ToolCallFormat,
} from './format.ts'

const BEGIN = '<tool_call>'
const END = '</tool_call>'
const FUNCTION = /^\s*<function=([^>\n]+)>([\s\S]*?)<\/function>\s*$/
const PARAMETER = /<parameter=([^>\n]+)>\n?([\s\S]*?)\n?<\/parameter>/g

function read(body: string, tools: readonly ChatTool[]): ParsedToolCall | null {
  const match = FUNCTION.exec(body)
  if (!match) return null
  const name = match[1]!.trim()
  const tool = tools.find((t) => t.function.name === name)
  if (!tool) return null
  const properties = (tool.function.parameters?.properties ?? {}) as Record<string, { type?: unknown }>
  const args: Record<string, unknown> = {}
  // what is left once every parameter is cut out must be whitespace, or the block is malformed
  const rest = match[2]!.replace(PARAMETER, (_, key: string, value: string) => {
    const type = properties[key.trim()]?.type
    const json = type === 'string' ? undefined : parseJson(value)
    args[key.trim()] = json === undefined ? value : json
    return ''
  })
  return rest.trim() === '' ? { name, arguments: JSON.stringify(args) } : null
}

export const qwenXml: ToolCallFormat = {
  name: 'qwen-xml',
  detect: (template) => template.includes(BEGIN) && template.includes('<function='),
  parse: (text, tools) => parseBlocks(text, BEGIN, END, (body) => read(body, tools)),
  callStart: (text) => markerStart(text, BEGIN),
  closedCalls: true,
  callBegin: BEGIN,
  callEnd: END,
  forced: (name) => ({
    begin: `${BEGIN}\n<function=${name}>\n`,
    end: `</function>\n${END}`,
    arguments: 'qwen_xml',
    separator: '\n',
  }),
  callId: openAiCallId,
}
