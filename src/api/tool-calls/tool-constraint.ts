/** `tool_choice` 'required' or a named function, enforced by constrained decoding: an XGrammar structural tag whose
 * tags are the calls in the model's own format, each with the function's JSON Schema as its arguments, so even a
 * weak model writes a call that parses and validates. 'required' allows any offered function (several, separated as
 * the format separates them, unless `parallel_tool_calls` is false); a named choice allows that function once. */
import { Testings } from '@mlc-ai/web-xgrammar'
import type { ConstraintSpec } from '../../engine/constraint.ts'
import { checkSchema } from '../../engine/schema-keywords.ts'
import type { ChatTool } from '../../model/chat-template.ts'
import { unsupported } from '../request-fields.ts'
import type { ToolCallFormat } from './format.ts'
import type { ToolRequest } from './tool-request.ts'

/** A schema's grammar with compact separators and no free whitespace (the structural tag's own JSON content would
 * let a weak model pad a call with whitespace until its token limit). */
const argumentsGrammar = (schema: Record<string, unknown>) =>
  Testings._jsonSchemaToEBNF(JSON.stringify(schema), false, -1, [',', ':'], true)

async function tag(format: ToolCallFormat, tool: ChatTool) {
  const forced = format.forced(tool.function.name)!
  const schema = tool.function.parameters ?? { type: 'object', properties: {} }
  return {
    type: 'tag' as const,
    begin: forced.begin,
    content:
      forced.arguments === 'json'
        ? { type: 'grammar' as const, grammar: await argumentsGrammar(schema) }
        : { type: 'qwen_xml_parameter' as const, json_schema: schema },
    end: forced.end,
  }
}

/** The constraint that forces the request's calls, or undefined where tool_choice forces none ('auto', 'none'). */
export async function toolConstraint(
  format: ToolCallFormat,
  request: ToolRequest,
): Promise<ConstraintSpec | undefined> {
  const { choice } = request
  if (choice.type === 'auto' || choice.type === 'none') {
    // strict arguments can only be held to their schema where a call is forced
    if (request.strict.length > 0)
      throw unsupported(
        `tools[${request.strict[0]}].function.strict`,
        "arguments are held to the schema only when tool_choice forces a call ('required' or a named function)",
      )
    return undefined
  }
  const probe = format.forced(request.tools[0]!.function.name)
  if (!probe)
    throw unsupported('tool_choice', `the ${format.name} call format cannot be forced by a grammar; use 'auto'`)
  const tools =
    choice.type === 'function' ? request.tools.filter((t) => t.function.name === choice.name) : request.tools
  for (const [i, tool] of request.tools.entries()) {
    if (!tools.includes(tool)) continue
    try {
      checkSchema(tool.function.parameters)
    } catch (error) {
      throw unsupported(`tools[${i}].function.parameters`, (error as Error).message)
    }
  }
  const once = choice.type === 'function' || !request.parallel || probe.separator === null
  return {
    kind: 'structural_tag',
    tag: {
      type: 'structural_tag',
      format: {
        type: 'tags_with_separator',
        tags: await Promise.all(tools.map((t) => tag(format, t))),
        separator: probe.separator ?? '',
        at_least_one: true,
        stop_after_first: once,
      },
    },
  }
}
