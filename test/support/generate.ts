/** A reference loop for tests: one sequence over a Pipeline, written plainly and apart from the scheduler (chunked
 * prefill, then one token per step until EOS, a stop string, the token limit or the context limit), so models and
 * pipelines are checked by a driver that does not share the scheduler's code. Commands go through the scheduler. */
import { DbcError } from '../../src/errors.ts'
import { IncrementalDetokenizer } from '../../src/engine/detokenizer.ts'
import type { Pipeline } from '../../src/engine/pipeline.ts'
import type { FinishReason } from '../../src/engine/scheduler.ts'
import { rowSampling, seededRandom, type SamplingParams } from '../../src/model/sampler.ts'
import { StopMatcher } from '../../src/engine/stop.ts'

export interface GenerationRequest {
  promptIds: readonly number[]
  maxTokens: number
  sampling: SamplingParams
  stop?: readonly string[]
  eosTokenIds: readonly number[]
  prefillChunk?: number
}

export type GenerationEvent =
  | { type: 'token'; id: number; text: string }
  /** Text held back until the end (a partial character or a possible stop-string prefix that never completed). */
  | { type: 'text'; text: string }
  | {
      type: 'done'
      finishReason: FinishReason
      text: string
      tokens: number[]
      promptTokens: number
      prefillSeconds: number
      decodeSeconds: number
    }

export async function* generate(
  pipeline: Pipeline,
  request: GenerationRequest,
  decode: (ids: number[]) => string,
): AsyncGenerator<GenerationEvent> {
  const prompt = request.promptIds
  if (prompt.length === 0) throw new DbcError('E_PROMPT', 'the prompt is empty')
  if (prompt.length + 1 > pipeline.maxLen) {
    throw new DbcError(
      'E_CONTEXT',
      `the prompt has ${prompt.length} tokens; the context holds ${pipeline.maxLen}`,
      'shorten the prompt or raise --max-context',
    )
  }
  const chunk = request.prefillChunk ?? 512
  const random = seededRandom(request.sampling.seed ?? Math.floor(Math.random() * 2 ** 32))
  // sampled where the logits are (the last stage); one uniform draw per non-greedy token from this request's stream
  const row = (history: readonly number[]) =>
    rowSampling(request.sampling, history, request.sampling.temperature > 0 ? random() : 0)
  const detok = new IncrementalDetokenizer(decode)
  const stops = new StopMatcher(request.stop ?? [])
  const eos = new Set(request.eosTokenIds)
  const slot = pipeline.openSequence()
  const tokens: number[] = []
  let text = ''
  try {
    const t0 = performance.now()
    const history = [...prompt]
    let next = -1
    for (let start = 0; start < prompt.length; start += chunk) {
      const ids = prompt.slice(start, start + chunk)
      const last = start + ids.length === prompt.length
      const out = await pipeline.sample(
        {
          tokens: Int32Array.from(ids),
          slots: new Int32Array(ids.length).fill(slot),
          positions: Int32Array.from(ids, (_, i) => start + i),
          logitRows: last ? Int32Array.of(ids.length - 1) : new Int32Array(0),
        },
        last ? [row(history)] : [],
      )
      if (last) next = out[0]!.id
    }
    const t1 = performance.now()
    let finish: FinishReason = 'length'
    let position = prompt.length
    while (tokens.length < request.maxTokens) {
      const id = next
      if (eos.has(id)) {
        finish = 'stop'
        break
      }
      tokens.push(id)
      history.push(id)
      const piece = stops.push(detok.push(id))
      text += piece
      yield { type: 'token', id, text: piece }
      if (stops.stopped) {
        finish = 'stop'
        break
      }
      if (tokens.length >= request.maxTokens || position + 1 >= pipeline.maxLen) break
      next = (
        await pipeline.sample(
          {
            tokens: Int32Array.of(id),
            slots: Int32Array.of(slot),
            positions: Int32Array.of(position),
            logitRows: Int32Array.of(0),
          },
          [row(history)],
        )
      )[0]!.id
      position++
    }
    if (!stops.stopped) {
      const tail = stops.push(detok.flush()) + stops.flush()
      if (tail) {
        text += tail
        yield { type: 'text', text: tail }
      }
    }
    yield {
      type: 'done',
      finishReason: finish,
      text,
      tokens,
      promptTokens: prompt.length,
      prefillSeconds: (t1 - t0) / 1000,
      decodeSeconds: (performance.now() - t1) / 1000,
    }
  } finally {
    pipeline.closeSequence(slot)
  }
}
