/** POST /v1/chat/completions: messages through the model's chat template, answered as `chat.completion(.chunk)`. */
import type { Context } from 'hono'
import type { Scheduler } from '../engine/scheduler.ts'
import type { ChatMessage, ModelTokenizer } from '../model/tokenizer.ts'
import { invalid } from './errors.ts'
import { CHAT_FIELDS, refuseUnsupported, unsupported } from './request-fields.ts'
import { checkModel, parseCommon } from './request-params.ts'
import { runCompletion, type Shape, type TokenInfo } from './run-completion.ts'

const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer'])

function parseMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0) throw invalid(`'messages' must be a non-empty array`, 'messages')
  return raw.map((m, i) => {
    if (!m || typeof m !== 'object' || !ROLES.has((m as { role?: string }).role ?? ''))
      throw invalid(`messages[${i}].role must be one of ${[...ROLES].join(', ')}`, 'messages')
    // a message's other fields (name, tool_calls, tool_call_id, …) are not honoured: refused rather than dropped
    for (const [key, value] of Object.entries(m))
      if (key !== 'role' && key !== 'content' && value !== null) throw unsupported(`messages[${i}].${key}`)
    const content = (m as { content?: unknown }).content
    let text: string
    if (typeof content === 'string') text = content
    else if (Array.isArray(content) && content.every((p) => p && p.type === 'text' && typeof p.text === 'string'))
      text = content.map((p) => p.text).join('')
    else throw invalid(`messages[${i}].content must be a string or text parts`, 'messages')
    const role = (m as { role: string }).role === 'developer' ? 'system' : (m as { role: ChatMessage['role'] }).role
    return { role, content: text }
  })
}

export async function chatCompletions(
  c: Context,
  deps: { scheduler: Scheduler; tokenizer: ModelTokenizer; modelId: string; body: Record<string, unknown> },
) {
  const { body, tokenizer, modelId } = deps
  checkModel(body, modelId)
  refuseUnsupported(body, CHAT_FIELDS)
  const messages = parseMessages(body.messages)
  const common = parseCommon(body, { maxTokens: 512, vocab: deps.scheduler.pipeline.vocabSize })
  if (body.logprobs !== undefined && body.logprobs !== null && typeof body.logprobs !== 'boolean')
    throw invalid(`'logprobs' must be a boolean`, 'logprobs')
  const top = body.top_logprobs
  if (top !== undefined && top !== null && (typeof top !== 'number' || !Number.isInteger(top) || top < 0 || top > 20))
    throw invalid(`'top_logprobs' must be an integer in 0..20`, 'top_logprobs')
  if (top !== undefined && top !== null && body.logprobs !== true)
    throw invalid(`'top_logprobs' needs 'logprobs': true`, 'top_logprobs')
  const promptIds = tokenizer.encode(tokenizer.applyChatTemplate(messages))
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
  const shape: Shape = {
    start: (index) => ({
      ...base,
      object: 'chat.completion.chunk',
      choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
    }),
    chunk: (index, text, tokens) => ({
      ...base,
      object: 'chat.completion.chunk',
      choices: [{ index, delta: { content: text }, logprobs: logprobs(tokens), finish_reason: null }],
    }),
    finishChunk: (index, reason) => ({
      ...base,
      object: 'chat.completion.chunk',
      choices: [{ index, delta: {}, logprobs: null, finish_reason: reason }],
    }),
    usageChunk: (usage) => ({ ...base, object: 'chat.completion.chunk', choices: [], usage }),
    choice: (index, text, tokens, reason) => ({
      index,
      message: { role: 'assistant', content: text, refusal: null },
      logprobs: logprobs(tokens),
      finish_reason: reason,
    }),
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
      stop: common.stop,
      eosTokenIds: tokenizer.eosTokenIds,
      logprobs: body.logprobs === true ? ((top as number | undefined) ?? 0) : undefined,
    },
    shape,
    common,
  )
}
