/** Runs one request's choices through the scheduler and answers as JSON or as Server-Sent Events; chat and text
 * completions differ only in their `Shape` (how a chunk, a choice and log-probabilities look). */
import type { Context } from 'hono'
import { streamSSE } from 'hono/streaming'
import { ConstraintError, type Constraint, type ConstraintSpec } from '../engine/constraint.ts'
import type { FinishReason, RequestEvent, ScheduledRequest, Scheduler, TokenLogprob } from '../engine/scheduler.ts'
import { tenantOf } from './api-key.ts'
import { ApiError, errorBody, errorResponse, toApiError } from './errors.ts'
import { unsupported } from './request-fields.ts'

export interface TokenInfo {
  id: number
  text: string
  logprob?: number
  topLogprobs?: TokenLogprob[]
}

export interface Usage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  /** As OpenAI reports it: prompt tokens served from the prefix cache (where the node keeps one). */
  prompt_tokens_details?: { cached_tokens: number }
}

type Chunks = Record<string, unknown> | Record<string, unknown>[]

export interface Shape {
  /** First chunk of a choice's stream (chat sends the role). */
  start(index: number): Record<string, unknown> | null
  /** The chunks for new text (several, or none while chat holds back text that may be a tool call). */
  chunk(index: number, text: string, tokens: TokenInfo[]): Chunks
  finishChunk(index: number, reason: FinishReason): Chunks
  usageChunk(usage: Usage): Record<string, unknown>
  /** One choice of a non-streamed answer. */
  choice(index: number, text: string, tokens: TokenInfo[], reason: FinishReason): Record<string, unknown>
  final(choices: Record<string, unknown>[], usage: Usage): Record<string, unknown>
}

type Done = Extract<RequestEvent, { type: 'done' }>

/** The prompt counts once however many choices share it; every choice's tokens count. */
function usageOf(done: readonly Done[]): Usage {
  const prompt = done[0]!.promptTokens
  const completion = done.reduce((n, d) => n + d.tokens.length, 0)
  const cached = done[0]!.cachedTokens
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    ...(cached !== undefined && { prompt_tokens_details: { cached_tokens: cached } }),
  }
}

const info = (event: Extract<RequestEvent, { type: 'token' }>): TokenInfo => ({
  id: event.id,
  text: event.text,
  logprob: event.logprob,
  topLogprobs: event.topLogprobs,
})

/** `response_format`'s grammar, compiled (or cached) by the scheduler's compiler; what cannot be enforced is a 400. */
async function compileFormat(scheduler: Scheduler, spec: ConstraintSpec): Promise<Constraint> {
  const param = spec.kind === 'json_schema' ? 'response_format.json_schema.schema' : 'response_format'
  if (!scheduler.constraints) throw unsupported('response_format', 'this node has no grammar compiler')
  try {
    return await scheduler.constraints.compile(spec)
  } catch (error) {
    if (!(error instanceof ConstraintError)) throw error
    if (error.keyword && error.message.includes('is not supported')) throw unsupported(param, error.message)
    throw new ApiError(400, `'${param}' is invalid: ${error.message}`, 'invalid_request_error', 'invalid_value', param)
  }
}

export async function runCompletion(
  c: Context,
  scheduler: Scheduler,
  request: ScheduledRequest,
  shape: Shape,
  options: { stream: boolean; includeUsage: boolean; n: number; constraint?: ConstraintSpec },
): Promise<Response> {
  if (options.constraint) request = { ...request, constraint: await compileFormat(scheduler, options.constraint) }
  // whose cached prompt blocks this request may reuse: its API key's (one key, or none: everyone's)
  request = { ...request, cacheTenant: tenantOf(c.req.raw) }
  // one signal for every choice: a client that leaves cancels them all
  const abort = new AbortController()
  c.req.raw.signal?.addEventListener('abort', () => abort.abort())
  const events: { index: number; event: RequestEvent }[] = []
  let wake: (() => void) | null = null
  const push = (index: number, event: RequestEvent) => {
    events.push({ index, event })
    wake?.()
  }
  try {
    scheduler.submitChoices({ ...request, signal: abort.signal }, options.n, push)
  } catch (error) {
    return errorResponse(c, error)
  }
  const next = async () => {
    while (events.length === 0) await new Promise<void>((resolve) => (wake = resolve))
    wake = null
    return events.shift()!
  }
  const done: Done[] = []
  let finished = 0

  if (!options.stream) {
    const tokens: TokenInfo[][] = Array.from({ length: options.n }, () => [])
    while (finished < options.n) {
      const { index, event } = await next()
      if (event.type === 'token') tokens[index]!.push(info(event))
      else if (event.type === 'error') {
        abort.abort()
        return errorResponse(c, event.error)
      } else if (event.type === 'done') {
        done[index] = event
        finished++
      }
    }
    const choices = done.map((d, i) => shape.choice(i, d.text, tokens[i]!, d.finishReason))
    return c.json(shape.final(choices, usageOf(done)))
  }

  return streamSSE(c, async (sse) => {
    sse.onAbort(() => abort.abort())
    const send = (data: unknown) => sse.writeSSE({ data: JSON.stringify(data) })
    for (let i = 0; i < options.n; i++) {
      const start = shape.start(i)
      if (start) await send(start)
    }
    while (finished < options.n) {
      const { index, event } = await next()
      if (event.type === 'token' || event.type === 'text') {
        const tokens = event.type === 'token' ? [info(event)] : []
        if (event.text || tokens.length)
          for (const chunk of [shape.chunk(index, event.text, tokens)].flat()) await send(chunk)
      } else if (event.type === 'error') {
        // a clear error event, then the end of the stream: never a hung connection; the other choices stop
        abort.abort()
        await send(errorBody(toApiError(event.error)))
        break
      } else {
        done[index] = event
        finished++
        for (const chunk of [shape.finishChunk(index, event.finishReason)].flat()) await send(chunk)
      }
    }
    if (finished === options.n && options.includeUsage) await send(shape.usageChunk(usageOf(done)))
    await sse.writeSSE({ data: '[DONE]' })
  })
}
