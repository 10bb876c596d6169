/** The tool-call format of a checkpoint, told from what its chat template renders (not from the model's name): the
 * first format whose markers the template contains. Null: the template renders no tools. */
import { gemma4 } from './gemma4.ts'
import { harmony } from './harmony.ts'
import { hermes } from './hermes.ts'
import { llama3Json } from './llama3-json.ts'
import { mistral, mistralArgs } from './mistral.ts'
import { qwenXml } from './qwen-xml.ts'
import type { ToolCallFormat } from './format.ts'

/** Most specific first: mistral-args before mistral, qwen-xml and gemma4 before hermes. */
export const TOOL_CALL_FORMATS: readonly ToolCallFormat[] = [
  harmony,
  gemma4,
  qwenXml,
  hermes,
  mistralArgs,
  mistral,
  llama3Json,
]

export function toolCallFormat(template: string | null): ToolCallFormat | null {
  // a template that never reads `tools` cannot offer them, whatever markers it shows for earlier calls
  if (template === null || !/\btools\b/.test(template)) return null
  return TOOL_CALL_FORMATS.find((f) => f.detect(template)) ?? null
}
