/** Hermes-style calls (Qwen2.5, Qwen3; NousResearch Hermes): each call a JSON object in its own block,
 * `<tool_call>\n{"name": "f", "arguments": {…}}\n</tool_call>`, as the template's tool prompt asks. */
import { callFromObject, markerStart, openAiCallId, parseBlocks, parseJson, type ToolCallFormat } from './format.ts'

const BEGIN = '<tool_call>'
const END = '</tool_call>'

export const hermes: ToolCallFormat = {
  name: 'hermes',
  // the XML-argument variant (Qwen3-Coder, Qwen3.5) also uses <tool_call>; it is told apart by <function=
  detect: (template) => template.includes(BEGIN) && !template.includes('<function='),
  parse: (text, tools) =>
    parseBlocks(text, BEGIN, END, (body) => callFromObject(parseJson(body.trim()), tools, ['arguments', 'parameters'])),
  callStart: (text) => markerStart(text, BEGIN),
  closedCalls: true,
  callBegin: BEGIN,
  callEnd: END,
  forced: (name) => ({
    begin: `${BEGIN}\n{"name": ${JSON.stringify(name)}, "arguments": `,
    end: `}\n${END}`,
    arguments: 'json',
    separator: '\n',
  }),
  callId: openAiCallId,
}
