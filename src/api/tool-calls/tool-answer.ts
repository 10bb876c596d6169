/** A choice's text read as an assistant message with `tool_calls` (OpenAI's shape: `id`, `type: 'function'`,
 * `function.name`, `function.arguments` as JSON text), whole or as a stream of deltas. A stream sends content as it
 * comes until a call may begin, then holds the rest back; each call goes out as one delta with its `index`, `id`,
 * `type` and `function.name` (arguments ''), then one with its arguments, which is how OpenAI's stream helpers
 * assemble them. */
import type { ChatTool } from '../../model/chat-template.ts'
import type { ParsedOutput, ParsedToolCall, ToolCallFormat } from './format.ts'

export interface ToolCall {
  id: string
  type: 'function'
  function: { name: string; arguments: string }
}

export type ToolCallDelta =
  | { index: number; id: string; type: 'function'; function: { name: string; arguments: '' } }
  | { index: number; function: { arguments: string } }

export interface ToolAnswerOptions {
  format: ToolCallFormat
  tools: readonly ChatTool[]
  /** false: at most one call (`parallel_tool_calls: false`) */
  parallel: boolean
  /** The format's call end was added as a stop string, so a stopped text lacks it (it is put back to parse). */
  stoppedAtCallEnd: boolean
}

export class ToolAnswer {
  constructor(private readonly options: ToolAnswerOptions) {}

  /** The stop string that keeps the answer to one call, where the format has one and one call is asked for. */
  static stopFor(format: ToolCallFormat, parallel: boolean): string | null {
    return parallel ? null : format.callEnd
  }

  /** `final`: the text is the whole answer (a call cut by the stop string is closed again to be read). */
  parse(text: string, final = true): ParsedOutput {
    const { format, tools, parallel, stoppedAtCallEnd } = this.options
    const closed =
      final && stoppedAtCallEnd && format.callBegin && format.callEnd && text.includes(format.callBegin)
        ? text + format.callEnd
        : text
    const parsed = format.parse(closed, tools)
    if (parsed.calls.length === 0) return { content: text, calls: [] }
    return { content: parsed.content.trimEnd(), calls: parallel ? parsed.calls : parsed.calls.slice(0, 1) }
  }

  /** The message and finish reason of a whole answer. */
  message(text: string, reason: string) {
    const { content, calls } = this.parse(text)
    if (calls.length === 0) return { message: { role: 'assistant', content, refusal: null }, finishReason: reason }
    return {
      message: {
        role: 'assistant',
        content: content.trim() === '' ? null : content,
        refusal: null,
        tool_calls: calls.map((c) => this.#call(c)),
      },
      finishReason: 'tool_calls',
    }
  }

  stream(): ToolAnswerStream {
    return new ToolAnswerStream(this, this.options.format, (c) => this.#call(c))
  }

  #call(call: ParsedToolCall): ToolCall {
    return { id: this.options.format.callId(), type: 'function', function: { ...call } }
  }
}

export interface StreamPiece {
  content: string
  toolCalls: ToolCallDelta[]
}

export class ToolAnswerStream {
  #text = ''
  /** How much of the text went out as content. */
  #sent = 0
  #calls = 0

  constructor(
    private readonly answer: ToolAnswer,
    private readonly format: ToolCallFormat,
    private readonly toCall: (c: ParsedToolCall) => ToolCall,
  ) {}

  /** True once a call went out: the choice then finishes with 'tool_calls'. */
  get called(): boolean {
    return this.#calls > 0
  }

  push(delta: string): StreamPiece {
    this.#text += delta
    const start = this.format.callStart(this.#text)
    // content up to where a call may begin, less trailing whitespace (it may only separate content from a call)
    const safe = (start < 0 ? this.#text : this.#text.slice(0, start)).trimEnd().length
    const content = safe > this.#sent ? this.#text.slice(this.#sent, safe) : ''
    this.#sent = Math.max(this.#sent, safe)
    const calls = this.format.closedCalls ? this.answer.parse(this.#text, false).calls : []
    return { content, toolCalls: this.#deltas(calls) }
  }

  /** What is left at the end: the rest of the content (a malformed call included) and the calls not yet sent. */
  finish(): StreamPiece {
    const { content, calls } = this.answer.parse(this.#text)
    const rest = content.startsWith(this.#text.slice(0, this.#sent)) ? content.slice(this.#sent) : ''
    this.#sent = this.#text.length
    return { content: calls.length > 0 && rest.trim() === '' ? '' : rest, toolCalls: this.#deltas(calls) }
  }

  #deltas(calls: ParsedToolCall[]): ToolCallDelta[] {
    const out: ToolCallDelta[] = []
    for (; this.#calls < calls.length; this.#calls++) {
      const call = this.toCall(calls[this.#calls]!)
      const index = this.#calls
      out.push({ index, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } })
      out.push({ index, function: { arguments: call.function.arguments } })
    }
    return out
  }
}
