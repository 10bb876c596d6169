/** `bench decode --constrained SCHEMA.json`: decode tok/s with and without a JSON Schema's grammar mask in the same run,
 * and what the mask costs per token. Each step runs in the scheduler's order (the head's masks from every row's matcher,
 * the forward, sampling, the matchers accepting the tokens). Plain and constrained steps alternate, each batch in its
 * own KV slots, so both see the same machine (a shared machine's load moves between halves of a run run one after the
 * other). A row whose grammar terminates starts over, so every step is constrained. */
import { ConstraintCompiler, grammarVocabulary, type ConstraintMatcher } from '../engine/constraint.ts'
import { ModelStage } from '../model/shard.ts'
import { GREEDY, rowSampling, sampleRows, type SampledToken } from '../model/sampler.ts'
import { ModelTokenizer } from '../model/tokenizer.ts'
import type { Backend } from '../tensor/backend.ts'
import { median, percentile } from './stats.ts'

export interface ConstrainedDecodeRow {
  batch: number
  plain_tps: number
  constrained_tps: number
  /** constrained ÷ plain, both medians of this run's alternating steps */
  ratio: number
  /** milliseconds per token: the next-token mask and accepting the sampled token (median, 90th percentile) */
  mask_ms_p50: number
  mask_ms_p90: number
  /** milliseconds per token sampling a row, with and without the mask (medians) */
  sample_ms_p50: number
  plain_sample_ms_p50: number
  /** milliseconds per step in the forward pass, constrained and plain steps (medians): whether the matcher's work
   * slows the forward that follows it */
  forward_ms_p50: number
  plain_forward_ms_p50: number
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

interface StepTimes {
  step: number[]
  forward: number[]
  mask: number[]
  sample: number[]
  restart: number[]
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
  // plain rows in slots [0, batch), constrained rows in [maxBatch, maxBatch + batch)
  const stage = ModelStage.load(dir, backend, { slots: 2 * maxBatch, maxLen: promptTokens + decodeSteps + 8 })
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
      onProgress(`batch ${batch}: ${decodeSteps} decode steps, plain and under the schema in turn`)
      const rows = Int32Array.from({ length: batch }, (_, i) => i)

      /** One batch of rows decoding from the prompt in its own slots: its masks (when constrained), then the step. */
      const decoder = async (firstSlot: number, constrained: boolean) => {
        const slots = Int32Array.from(rows, (i) => firstSlot + i)
        const prefill = new Float32Array(batch * vocab)
        for (const [i, slot] of slots.entries()) {
          const out = stage.forward({
            tokens: prompt,
            slots: new Int32Array(promptTokens).fill(slot),
            positions: Int32Array.from(prompt.keys()),
            logitRows: Int32Array.of(promptTokens - 1),
          })
          prefill.set(out.logits!, i * vocab)
        }
        const matchers: ConstraintMatcher[] = []
        if (constrained) for (let i = 0; i < batch; i++) matchers.push(await constraint.matcher())
        // the first token is the prefill's, sampled as a request's first one is (under its first mask)
        const firstMasks = await Promise.all(matchers.map((m) => m.nextMask()))
        const first = sampleRows(
          prefill,
          vocab,
          Array.from(rows, (i) => rowSampling(GREEDY, [], 0, -1, undefined, firstMasks[i])),
        )
        let tokens = Int32Array.from(first, (t) => t.id)
        for (const [i, m] of matchers.entries()) m.accept(tokens[i]!)
        const times: StepTimes = { step: [], forward: [], mask: [], sample: [], restart: [] }
        let position = promptTokens
        const step = async () => {
          const start = performance.now()
          const masks = constrained ? await Promise.all(matchers.map((m) => m.nextMask())) : []
          const masked = performance.now()
          const logits = stage.forward({
            tokens,
            slots,
            positions: new Int32Array(batch).fill(position++),
            logitRows: rows,
            output: 'reused-logits',
          }).logits!
          const sampling = performance.now()
          const sampled: SampledToken[] = sampleRows(
            logits,
            vocab,
            Array.from(rows, (i) => rowSampling(GREEDY, [], 0, -1, undefined, masks[i])),
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
          const end = performance.now()
          tokens = Int32Array.from(sampled, (t) => t.id)
          times.step.push((end - start - restartMs) / 1000)
          times.sample.push((accepting - sampling) / batch)
          times.forward.push(sampling - masked)
          if (constrained) times.mask.push((masked - start + end - accepting - restartMs) / batch)
          if (restartMs) times.restart.push(restartMs)
        }
        const dispose = () => matchers.forEach((m) => m.dispose())
        return { step, times, dispose }
      }

      const plain = await decoder(0, false)
      const constrained = await decoder(maxBatch, true)
      for (let s = 0; s < decodeSteps; s++) {
        // alternate which goes first, so neither always follows the other
        const [a, b] = s % 2 ? [constrained, plain] : [plain, constrained]
        await a.step()
        await b.step()
      }
      constrained.dispose()
      // the first 2 steps of each warm up
      const p = trim(plain.times)
      const c = trim(constrained.times)
      const plainTps = batch / median(p.step)
      const constrainedTps = batch / median(c.step)
      results.push({
        batch,
        plain_tps: round(plainTps),
        constrained_tps: round(constrainedTps),
        ratio: round(constrainedTps / plainTps, 3),
        mask_ms_p50: round(median(c.mask), 3),
        mask_ms_p90: round(percentile(c.mask, 90), 3),
        sample_ms_p50: round(median(c.sample), 3),
        plain_sample_ms_p50: round(median(p.sample), 3),
        forward_ms_p50: round(median(c.forward), 3),
        plain_forward_ms_p50: round(median(p.forward), 3),
        restarts: constrained.times.restart.length,
        restart_ms_p50: constrained.times.restart.length ? round(median(constrained.times.restart), 3) : 0,
        compile_ms: round(compileMs),
      })
    }
  } finally {
    stage.close()
  }
  return { model: dir, backend: description, threads: backend.threads, decode_steps: decodeSteps, results }
}

const trim = (t: StepTimes): StepTimes => {
  const drop = Math.min(2, t.step.length - 1)
  return {
    step: t.step.slice(drop),
    forward: t.forward.slice(drop),
    mask: t.mask.slice(drop),
    sample: t.sample.slice(drop),
    restart: t.restart,
  }
}

const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits
