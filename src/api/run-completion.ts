/** Runs one request through the scheduler and answers as JSON or as Server-Sent Events; chat and text completions differ
 * only in their `Shape` (how a chunk, a final answer and log-probabilities look). */
import type { Context } from 'hono'
import { streamSSE } from 'hono/streaming'
import type { FinishReason, RequestEvent, ScheduledRequest, Scheduler, TokenLogprob } from '../engine/scheduler.ts'
import { errorBody, errorResponse, toApiError } from './errors.ts'

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
}

export interface Shape {
  /** First chunk of a stream (chat sends the role). */
  start(): Record<string, unknown> | null
  chunk(text: string, tokens: TokenInfo[]): Record<string, unknown>
  finishChunk(reason: FinishReason): Record<string, unknown>
  usageChunk(usage: Usage): Record<string, unknown>
  final(text: string, tokens: TokenInfo[], reason: FinishReason, usage: Usage): Record<string, unknown>
}

export async function runCompletion(
  c: Context,
  scheduler: Scheduler,
  request: ScheduledRequest,
  shape: Shape,
  options: { stream: boolean; includeUsage: boolean },
): Promise<Response> {
  const abort = new AbortController()
  c.req.raw.signal?.addEventListener('abort', () => abort.abort())
  const events: RequestEvent[] = []
  let wake: (() => void) | null = null
  const push = (event: RequestEvent) => {
    events.push(event)
    wake?.()
  }
  try {
    scheduler.submit({ ...request, signal: abort.signal }, push)
  } catch (error) {
    return errorResponse(c, error)
  }
  const next = async (): Promise<RequestEvent> => {
    while (events.length === 0) await new Promise<void>((resolve) => (wake = resolve))
    wake = null
    return events.shift()!
  }

  if (!options.stream) {
    const tokens: TokenInfo[] = []
    for (;;) {
      const event = await next()
      if (event.type === 'token')
        tokens.push({ id: event.id, text: event.text, logprob: event.logprob, topLogprobs: event.topLogprobs })
      else if (event.type === 'error') return errorResponse(c, event.error)
      else if (event.type === 'done') {
        const usage = {
          prompt_tokens: event.promptTokens,
          completion_tokens: event.tokens.length,
          total_tokens: event.promptTokens + event.tokens.length,
        }
        return c.json(shape.final(event.text, tokens, event.finishReason, usage))
      }
    }
  }

  return streamSSE(c, async (sse) => {
    sse.onAbort(() => abort.abort())
    const send = (data: unknown) => sse.writeSSE({ data: JSON.stringify(data) })
    const start = shape.start()
    if (start) await send(start)
    for (;;) {
      const event = await next()
      if (event.type === 'token' || event.type === 'text') {
        const info =
          event.type === 'token'
            ? [{ id: event.id, text: event.text, logprob: event.logprob, topLogprobs: event.topLogprobs }]
            : []
        if (event.text || info.length) await send(shape.chunk(event.text, info))
      } else if (event.type === 'error') {
        // a clear error event, then the end of the stream: never a hung connection
        await send(errorBody(toApiError(event.error)))
        break
      } else {
        await send(shape.finishChunk(event.finishReason))
        if (options.includeUsage) {
          await send(
            shape.usageChunk({
              prompt_tokens: event.promptTokens,
              completion_tokens: event.tokens.length,
              total_tokens: event.promptTokens + event.tokens.length,
            }),
          )
        }
        break
      }
    }
    await sse.writeSSE({ data: '[DONE]' })
  })
}
