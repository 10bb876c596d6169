/** POST /v1/completions: a raw prompt (text or token ids, no template), answered as `text_completion`. */
import type { Context } from 'hono'
import type { Scheduler } from '../engine/scheduler.ts'
import type { ModelTokenizer } from '../model/tokenizer.ts'
import { invalid } from './errors.ts'
import { checkFields } from './request-fields.ts'
import { checkModel, parseCommon } from './request-params.ts'
import { COMPLETION_REQUEST } from './request-schema.ts'
import { runCompletion, type Shape, type TokenInfo } from './run-completion.ts'

function promptIds(raw: unknown, tokenizer: ModelTokenizer, vocab: number): number[] {
  if (typeof raw === 'string') return tokenizer.encode(raw)
  if (Array.isArray(raw) && raw.length === 1 && typeof raw[0] === 'string') return tokenizer.encode(raw[0])
  if (Array.isArray(raw) && raw.length > 0 && raw.every((t) => Number.isInteger(t))) {
    if (raw.some((t) => t < 0 || t >= vocab)) throw invalid(`'prompt' token ids must be in 0..${vocab - 1}`, 'prompt')
    return raw as number[]
  }
  throw invalid(`'prompt' must be a string or a non-empty array of token ids (one prompt per request)`, 'prompt')
}

export async function completions(
  c: Context,
  deps: { scheduler: Scheduler; tokenizer: ModelTokenizer; modelId: string; body: Record<string, unknown> },
) {
  const { body, tokenizer, modelId } = deps
  checkModel(body, modelId)
  checkFields(body, COMPLETION_REQUEST)
  const vocab = deps.scheduler.pipeline.vocabSize
  const ids = promptIds(body.prompt, tokenizer, vocab)
  const common = parseCommon(body, { maxTokens: 16, vocab })
  const lp = body.logprobs
  const wantLogprobs = typeof lp === 'number'
  const id = `cmpl-${crypto.randomUUID().replaceAll('-', '')}`
  const created = Math.floor(Date.now() / 1000)
  const tokenText = (t: number) => tokenizer.decode([t])
  const logprobs = (tokens: TokenInfo[]) =>
    wantLogprobs
      ? {
          tokens: tokens.map((t) => tokenText(t.id)),
          token_logprobs: tokens.map((t) => t.logprob ?? 0),
          top_logprobs: tokens.map((t) =>
            Object.fromEntries((t.topLogprobs ?? []).map((a) => [tokenText(a.id), a.logprob])),
          ),
          text_offset: tokens.reduce<number[]>(
            (acc, t, i) => [...acc, i === 0 ? 0 : acc[i - 1]! + tokenText(tokens[i - 1]!.id).length],
            [],
          ),
        }
      : null
  const base = { id, created, model: modelId, object: 'text_completion' }
  const shape: Shape = {
    start: () => null,
    chunk: (index, text, tokens) => ({
      ...base,
      choices: [{ index, text, logprobs: logprobs(tokens), finish_reason: null }],
    }),
    finishChunk: (index, reason) => ({
      ...base,
      choices: [{ index, text: '', logprobs: null, finish_reason: reason }],
    }),
    usageChunk: (usage) => ({ ...base, choices: [], usage }),
    choice: (index, text, tokens, reason) => ({ index, text, logprobs: logprobs(tokens), finish_reason: reason }),
    final: (choices, usage) => ({ ...base, choices, usage }),
  }
  return runCompletion(
    c,
    deps.scheduler,
    {
      promptIds: ids,
      maxTokens: common.maxTokens,
      sampling: common.sampling,
      adjustments: common.adjustments,
      stop: common.stop,
      eosTokenIds: tokenizer.eosTokenIds,
      logprobs: wantLogprobs ? (lp as number) : undefined,
    },
    shape,
    common,
  )
}
