/** `bench decode --constrained SCHEMA.json`: decode tok/s with and without a JSON Schema's grammar mask in the same run
 * (each step: the head's masks from every row's matcher, the forward, sampling, the matchers accepting the tokens),
 * and what the mask costs per token. A row whose grammar terminates starts over, so every step is constrained. */
import { ConstraintCompiler, grammarVocabulary, type ConstraintMatcher } from '../engine/constraint.ts'
import { ModelStage } from '../model/shard.ts'
import { rowSampling, sampleRows, samplingParams } from '../model/sampler.ts'
import { ModelTokenizer } from '../model/tokenizer.ts'
import type { Backend } from '../tensor/backend.ts'
import { median } from './stats.ts'

export interface ConstrainedDecodeRow {
  batch: number
  plain_tps: number
  constrained_tps: number
  /** constrained ÷ plain, both medians of this run */
  ratio: number
  /** median milliseconds per token: the next-token mask and accepting the sampled token */
  mask_ms_p50: number
  /** A finished answer's grammar started over (a new matcher: what a request's first step pays, kept out of the
   * decode steps' time): how often in the run and its median cost. */
  restarts: number
  restart_ms_p50: number
  compile_ms: number
}

export interface ConstrainedDecodeResult {
  model: string
  backend: string
  threads: number
  decode_steps: number
  results: ConstrainedDecodeRow[]
}

export async function runConstrainedDecodeBench(
  dir: string,
  backend: Backend,
  description: string,
  options: {
    batches: number[]
    promptTokens: number
    decodeSteps: number
    schema: Record<string, unknown>
    onProgress?: (line: string) => void
  },
): Promise<ConstrainedDecodeResult> {
  const { batches, promptTokens, decodeSteps, schema, onProgress = () => {} } = options
  const maxBatch = Math.max(...batches)
  const stage = ModelStage.load(dir, backend, { slots: maxBatch, maxLen: promptTokens + decodeSteps + 8 })
  const vocab = stage.config.vocabSize
  const tokenizer = new ModelTokenizer(dir, stage.config.eosTokenIds)
  const compiler = new ConstraintCompiler(grammarVocabulary(dir, vocab, tokenizer.eosTokenIds))
  const results: ConstrainedDecodeRow[] = []
  try {
    const prompt = Int32Array.from({ length: promptTokens }, (_, i) => 1000 + ((i * 7919) % 50000))
    for (const batch of batches) {
      const t0 = performance.now()
      const constraint = await compiler.compile({ kind: 'json_schema', schema })
      const compileMs = performance.now() - t0
      const slots = Int32Array.from({ length: batch }, (_, i) => i)
      const run = async (constrained: boolean) => {
        onProgress(`batch ${batch}: ${decodeSteps} decode steps${constrained ? ' under the schema' : ''}`)
        let logits: Float32Array = new Float32Array(0)
        for (let slot = 0; slot < batch; slot++) {
          const out = stage.forward({
            tokens: prompt,
            slots: new Int32Array(promptTokens).fill(slot),
            positions: Int32Array.from(prompt.keys()),
            logitRows: Int32Array.of(promptTokens - 1),
          })
          logits = Float32Array.from([...logits, ...out.logits!])
        }
        const matchers: ConstraintMatcher[] = []
        if (constrained) for (let i = 0; i < batch; i++) matchers.push(await constraint.matcher())
        const steps: number[] = []
        const maskMs: number[] = []
        const restarts: number[] = []
        for (let s = 0; s < decodeSteps; s++) {
          const start = performance.now()
          const masks = constrained ? await Promise.all(matchers.map((m) => m.nextMask())) : []
          const masked = performance.now()
          const rows = slots.map((_, i) => i)
          const sampled = sampleRows(
            logits,
            vocab,
            [...rows].map((i) => rowSampling(samplingParams(), [], 0, -1, undefined, masks[i])),
          )
          const accepting = performance.now()
          let restartMs = 0
          for (const [i, m] of matchers.entries()) {
            m.accept(sampled[i]!.id)
            if (!m.terminated) continue
            // a finished answer's next one: a request's first step in serving, not a decode step's cost
            const r0 = performance.now()
            m.dispose()
            matchers[i] = await constraint.matcher()
            restartMs += performance.now() - r0
          }
          if (constrained) maskMs.push((masked - start + performance.now() - accepting) / batch)
          logits = stage.forward({
            tokens: Int32Array.from(sampled, (t) => t.id),
            slots,
            positions: new Int32Array(batch).fill(promptTokens + s),
            logitRows: Int32Array.from(rows),
          }).logits!
          steps.push((performance.now() - start - restartMs) / 1000)
          if (restartMs) restarts.push(restartMs)
        }
        for (const m of matchers) m.dispose()
        const step = median(steps.slice(Math.min(2, steps.length - 1)))
        return {
          tps: batch / step,
          maskMs: maskMs.length ? median(maskMs) : 0,
          restartMs: restarts.length ? median(restarts) : 0,
          restarts: restarts.length,
        }
      }
      const plain = await run(false)
      const constrained = await run(true)
      results.push({
        batch,
        plain_tps: round(plain.tps),
        constrained_tps: round(constrained.tps),
        ratio: round(constrained.tps / plain.tps, 3),
        mask_ms_p50: round(constrained.maskMs, 3),
        restarts: constrained.restarts,
        restart_ms_p50: round(constrained.restartMs, 3),
        compile_ms: round(compileMs),
      })
    }
  } finally {
    stage.close()
  }
  return { model: dir, backend: description, threads: backend.threads, decode_steps: decodeSteps, results }
}

const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits
