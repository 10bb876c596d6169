/** POST /v1/chat/completions: messages (and tools) through the model's chat template, answered as
 * `chat.completion(.chunk)`; with tools offered, the model's calls are read out of its text as `tool_calls`. */
import type { Context } from 'hono'
import type { Scheduler } from '../engine/scheduler.ts'
import { ConstraintError, type ConstraintSpec } from '../engine/constraint.ts'
import { DbcError } from '../errors.ts'
import type { ChatToolCall } from '../model/chat-template.ts'
import type { ChatMessage, ModelTokenizer } from '../model/tokenizer.ts'
import { invalid } from './errors.ts'
import { checkFields, unsupported } from './request-fields.ts'
import { checkModel, parseCommon } from './request-params.ts'
import { CHAT_REQUEST } from './request-schema.ts'
import { runCompletion, type Shape, type TokenInfo } from './run-completion.ts'
import { toolCallFormat } from './tool-calls/detect.ts'
import type { ToolCallFormat } from './tool-calls/format.ts'
import { ToolAnswer, type StreamPiece, type ToolAnswerStream } from './tool-calls/tool-answer.ts'
import { toolConstraint } from './tool-calls/tool-constraint.ts'
import { parseToolRequest, type ToolRequest } from './tool-calls/tool-request.ts'

const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer'])

/** Each role's fields besides `role` and `content`: an assistant's earlier `tool_calls`, a tool result's
 * `tool_call_id`. Any other (`name`, `function_call`, `audio`, …) is refused rather than dropped. */
const MESSAGE_FIELDS: Record<string, readonly string[]> = { assistant: ['tool_calls'], tool: ['tool_call_id'] }

function text(content: unknown, i: number): string {
  if (typeof content === 'string') return content
  if (Array.isArray(content) && content.every((p) => p && p.type === 'text' && typeof p.text === 'string'))
    return content.map((p) => p.text).join('')
  throw invalid(`messages[${i}].content must be a string or text parts`, 'messages')
}

/** An assistant's `tool_calls` as templates take them: `arguments` parsed from the JSON text clients send. */
function parseToolCalls(raw: unknown, i: number): ChatToolCall[] {
  const at = `messages[${i}].tool_calls`
  if (!Array.isArray(raw) || raw.length === 0) throw invalid(`'${at}' must be a non-empty array`, at)
  return raw.map((call, j) => {
    const c = call as { id?: unknown; type?: unknown; function?: { name?: unknown; arguments?: unknown } } | null
    const here = `${at}[${j}]`
    if (!c || typeof c !== 'object' || typeof c.id !== 'string' || c.type !== 'function')
      throw invalid(`'${here}' must be {id, type: 'function', function: {name, arguments}}`, here)
    if (typeof c.function?.name !== 'string' || typeof c.function.arguments !== 'string')
      throw invalid(`'${here}.function' must have a string 'name' and 'arguments'`, `${here}.function`)
    let args: unknown
    try {
      args = JSON.parse(c.function.arguments)
    } catch {
      args = undefined
    }
    if (!args || typeof args !== 'object' || Array.isArray(args))
      throw invalid(`'${here}.function.arguments' must be JSON text of an object`, `${here}.function.arguments`)
    return {
      id: c.id,
      type: 'function',
      function: { name: c.function.name, arguments: args as Record<string, unknown> },
    }
  })
}

function parseMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0) throw invalid(`'messages' must be a non-empty array`, 'messages')
  const callNames = new Map<string, string>()
  return raw.map((m, i) => {
    if (!m || typeof m !== 'object' || !ROLES.has((m as { role?: string }).role ?? ''))
      throw invalid(`messages[${i}].role must be one of ${[...ROLES].join(', ')}`, 'messages')
    const message = m as Record<string, unknown>
    const role = message.role === 'developer' ? 'system' : (message.role as ChatMessage['role'])
    const allowed = MESSAGE_FIELDS[role] ?? []
    for (const [key, value] of Object.entries(message))
      if (key !== 'role' && key !== 'content' && value !== null && !allowed.includes(key))
        throw unsupported(`messages[${i}].${key}`)
    if (role === 'assistant' && message.tool_calls != null) {
      const calls = parseToolCalls(message.tool_calls, i)
      for (const c of calls) callNames.set(c.id, c.function.name)
      // OpenAI allows null content beside tool calls; templates concatenate strings
      return { role, content: message.content == null ? '' : text(message.content, i), tool_calls: calls }
    }
    if (role === 'tool') {
      const id = message.tool_call_id
      if (typeof id !== 'string')
        throw invalid(`messages[${i}].tool_call_id must be a string`, `messages[${i}].tool_call_id`)
      const name = callNames.get(id)
      return { role, content: text(message.content, i), tool_call_id: id, ...(name ? { name } : {}) }
    }
    return { role, content: text(message.content, i) }
  })
}

/** The tool-call format the request needs, or null when it needs none; a model whose template renders no tools is
 * refused naming it. */
function formatFor(
  tokenizer: ModelTokenizer,
  modelId: string,
  tools: ToolRequest,
  messages: readonly ChatMessage[],
): ToolCallFormat | null {
  const history = messages.some((m) => m.tool_calls || m.role === 'tool')
  if (tools.choice.type === 'none' && !history) return null
  const format = toolCallFormat(tokenizer.chatTemplateSource)
  if (format) return format
  const param = tools.choice.type !== 'none' ? 'tools' : 'messages'
  throw unsupported(param, `the chat template of model '${modelId}' does not render tools or tool calls`)
}

/** The grammar that forces a call (tool_choice 'required' or named), compiled by the scheduler's compiler. */
async function compileToolConstraint(scheduler: Scheduler, spec: ConstraintSpec | undefined) {
  if (!spec) return undefined
  if (!scheduler.constraints) throw unsupported('tool_choice', 'this node has no grammar compiler to force a call')
  try {
    return await scheduler.constraints.compile(spec)
  } catch (error) {
    if (error instanceof ConstraintError) throw unsupported('tools', `the call cannot be forced: ${error.message}`)
    throw error
  }
}

export async function chatCompletions(
  c: Context,
  deps: { scheduler: Scheduler; tokenizer: ModelTokenizer; modelId: string; body: Record<string, unknown> },
) {
  const { body, tokenizer, modelId } = deps
  checkModel(body, modelId)
  checkFields(body, CHAT_REQUEST)
  const messages = parseMessages(body.messages)
  const tools = parseToolRequest(body)
  const common = parseCommon(body, { maxTokens: 512, vocab: deps.scheduler.pipeline.vocabSize })
  const top = body.top_logprobs
  if (top !== undefined && top !== null && body.logprobs !== true)
    throw invalid(`'top_logprobs' needs 'logprobs': true`, 'top_logprobs')
  const format = formatFor(tokenizer, modelId, tools, messages)
  // with tool_choice 'none' the tools are not offered, so the model answers in text
  const offered = format && tools.choice.type !== 'none' ? tools.tools : undefined
  const responseFormat = (body.response_format as { type?: unknown } | null | undefined)?.type
  if (offered && responseFormat !== undefined && responseFormat !== 'text')
    throw unsupported(
      'response_format',
      `only text with tools: a ${String(responseFormat)} answer and a call cannot both be enforced`,
    )
  const forced = offered ? await compileToolConstraint(deps.scheduler, await toolConstraint(format!, tools)) : undefined
  const answer = offered
    ? new ToolAnswer({
        format: format!,
        tools: offered,
        parallel: tools.parallel,
        stoppedAtCallEnd: ToolAnswer.stopFor(format!, tools.parallel) !== null,
      })
    : null
  const callEnd = answer ? ToolAnswer.stopFor(format!, tools.parallel) : null
  let prompt: string
  try {
    prompt = tokenizer.applyChatTemplate(messages, offered ? { tools: offered } : {})
  } catch (error) {
    // a template refuses what it cannot render (raise_exception): the request's messages, not the server, are at fault
    if (error instanceof DbcError) throw error
    throw invalid(
      `the chat template of model '${modelId}' refused the messages: ${(error as Error).message}`,
      'messages',
    )
  }
  const promptIds = tokenizer.encode(prompt)
  const id = `chatcmpl-${crypto.randomUUID().replaceAll('-', '')}`
  const created = Math.floor(Date.now() / 1000)
  const tokenText = (t: number) => tokenizer.decode([t])
  const logprobs = (tokens: TokenInfo[]) =>
    body.logprobs === true
      ? {
          content: tokens.map((t) => ({
            token: tokenText(t.id),
            logprob: t.logprob ?? 0,
            bytes: [...new TextEncoder().encode(tokenText(t.id))],
            top_logprobs: (t.topLogprobs ?? []).map((a) => ({
              token: tokenText(a.id),
              logprob: a.logprob,
              bytes: [...new TextEncoder().encode(tokenText(a.id))],
            })),
          })),
        }
      : null
  const base = { id, created, model: modelId }
  const chunkOf = (
    index: number,
    delta: Record<string, unknown>,
    lp: unknown = null,
    finish: string | null = null,
  ) => ({
    ...base,
    object: 'chat.completion.chunk',
    choices: [{ index, delta, logprobs: lp, finish_reason: finish }],
  })
  // each choice's stream of tool-call deltas (only when tools are offered)
  const streams = new Map<number, ToolAnswerStream>()
  const streamOf = (index: number) => {
    let stream = streams.get(index)
    if (!stream) streams.set(index, (stream = answer!.stream()))
    return stream
  }
  const toolChunks = (index: number, piece: StreamPiece, tokens: TokenInfo[]) => {
    const out = []
    if (piece.content || tokens.length) out.push(chunkOf(index, { content: piece.content }, logprobs(tokens)))
    for (const call of piece.toolCalls) out.push(chunkOf(index, { tool_calls: [call] }))
    return out
  }
  const shape: Shape = {
    start: (index) => chunkOf(index, { role: 'assistant', content: '' }),
    chunk: (index, text, tokens) =>
      answer
        ? toolChunks(index, streamOf(index).push(text), tokens)
        : chunkOf(index, { content: text }, logprobs(tokens)),
    finishChunk: (index, reason) => {
      if (!answer) return chunkOf(index, {}, null, reason)
      const stream = streamOf(index)
      const rest = toolChunks(index, stream.finish(), [])
      return [...rest, chunkOf(index, {}, null, stream.called ? 'tool_calls' : reason)]
    },
    usageChunk: (usage) => ({ ...base, object: 'chat.completion.chunk', choices: [], usage }),
    choice: (index, text, tokens, reason) => {
      const { message, finishReason } = answer
        ? answer.message(text, reason)
        : { message: { role: 'assistant', content: text, refusal: null }, finishReason: reason }
      return { index, message, logprobs: logprobs(tokens), finish_reason: finishReason }
    },
    final: (choices, usage) => ({ ...base, object: 'chat.completion', choices, usage }),
  }
  return runCompletion(
    c,
    deps.scheduler,
    {
      promptIds,
      maxTokens: common.maxTokens,
      sampling: common.sampling,
      adjustments: common.adjustments,
      stop: callEnd ? [...common.stop, callEnd] : common.stop,
      eosTokenIds: tokenizer.eosTokenIds,
      logprobs: body.logprobs === true ? ((top as number | undefined) ?? 0) : undefined,
      ...(forced ? { constraint: forced } : {}),
    },
    shape,
    common,
  )
}
