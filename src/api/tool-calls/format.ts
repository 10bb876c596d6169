/** What a tool-call format is: how a model trained on one writes its calls, how they are read back out of its text
 * (`parse`), where in a stream a call may begin (`callStart`), and the text around a call's JSON arguments that
 * constrained decoding forces (`forced`). One file per format beside this one; `detect.ts` picks one from the chat
 * template. */
import type { ChatTool } from '../../model/chat-template.ts'

/** A call read from the model's text: `arguments` is JSON text of an object (OpenAI's `function.arguments`). */
export interface ParsedToolCall {
  name: string
  arguments: string
}

/** The model's text split into what it said (`content`, calls cut out) and the well-formed calls it made. */
export interface ParsedOutput {
  content: string
  calls: ParsedToolCall[]
}

export interface ToolCallFormat {
  /** Short name, shown in errors and docs (`hermes`, `llama3-json`, …). */
  readonly name: string
  /** True when the chat template renders calls in this format. */
  detect(template: string): boolean
  /** Splits a completion's text into content and the calls to the offered tools; a malformed call stays content. */
  parse(text: string, tools: readonly ChatTool[]): ParsedOutput
  /** Where a call starts, or may still start, in `text` (a stream holds the text from there back): an index, or -1
   * when nothing seen can begin a call. */
  callStart(text: string): number
  /** True when each call ends with a marker of its own, so a stream may emit a call as soon as it is closed. */
  readonly closedCalls: boolean
  /** The markers around one call where each call has its own (null: calls end the turn); `callEnd` is the stop
   * string that keeps `parallel_tool_calls: false` to one call. */
  readonly callBegin: string | null
  readonly callEnd: string | null
  /** The text before and after a call's arguments, for constrained decoding, and how the arguments are written
   * (`json`, or Qwen's `<parameter=…>` XML); null where no grammar can force them. */
  forced(name: string): ForcedCall | null
  /** A fresh call id in the form the template accepts back (Mistral's templates require 9 alphanumerics). */
  callId(): string
}

export interface ForcedCall {
  begin: string
  end: string
  arguments: 'json' | 'qwen_xml'
  /** Between two calls of one answer (null: a call ends the turn, so one at most). */
  separator: string | null
}

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

export function randomId(length: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(length))
  return [...bytes].map((b) => ALPHANUMERIC[b % ALPHANUMERIC.length]).join('')
}

export const openAiCallId = () => `call_${randomId(24)}`

/** Index just past the JSON value that starts at `from` (after whitespace), or -1 where none is complete. */
export function jsonEnd(text: string, from: number): number {
  let i = from
  while (i < text.length && /\s/.test(text[i]!)) i++
  const open = text[i]
  if (open !== '{' && open !== '[') return -1
  let depth = 0
  let inString = false
  for (; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === '\\') i++
      else if (c === '"') inString = false
    } else if (c === '"') inString = true
    else if (c === '{' || c === '[') depth++
    else if (c === '}' || c === ']') {
      depth--
      if (depth === 0) return i + 1
    }
  }
  return -1
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v)

/** `{name, <argsKey>: {…}}` (arguments as an object, or as JSON text of one) naming an offered tool, else null. */
export function callFromObject(value: unknown, tools: readonly ChatTool[], argsKeys: readonly string[]) {
  if (!isObject(value) || typeof value.name !== 'string') return null
  if (!tools.some((t) => t.function.name === value.name)) return null
  const key = argsKeys.find((k) => k in value)
  let args = key === undefined ? {} : value[key]
  if (typeof args === 'string') args = parseJson(args)
  if (!isObject(args)) return null
  return { name: value.name, arguments: JSON.stringify(args) }
}

/** A call in a marked block: `begin`…`end` around a body that `read` turns into a call (null: malformed, kept as text). */
export function parseBlocks(
  text: string,
  begin: string,
  end: string,
  read: (body: string) => ParsedToolCall | null,
): ParsedOutput {
  const calls: ParsedToolCall[] = []
  let content = ''
  let pos = 0
  for (;;) {
    const start = text.indexOf(begin, pos)
    if (start < 0) break
    const close = text.indexOf(end, start + begin.length)
    if (close < 0) break
    const call = read(text.slice(start + begin.length, close))
    content += call ? text.slice(pos, start) : text.slice(pos, close + end.length)
    if (call) calls.push(call)
    pos = close + end.length
  }
  return { content: content + text.slice(pos), calls }
}

/** Where `marker` starts in `text`, or where `text` ends with the beginning of it, else -1. */
export function markerStart(text: string, marker: string): number {
  const at = text.indexOf(marker)
  if (at >= 0) return at
  for (let n = Math.min(marker.length - 1, text.length); n > 0; n--)
    if (marker.startsWith(text.slice(-n))) return text.length - n
  return -1
}
