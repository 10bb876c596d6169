/** The Pipeline seam the engine drives: token ids in, logits (or tokens sampled on the last stage) out, KV slots opened and closed on every stage. A local
 * chain of stages (engine/pipeline.ts) and the ring across machines (cluster/ring.ts) both implement it. */
import type { RowSampling, SampledToken } from './sampler.ts'
import type { StageInput } from './shard.ts'

export interface Pipeline {
  readonly vocabSize: number
  readonly maxLen: number
  /** Reserves a KV slot on every stage for a new sequence. */
  openSequence(): number
  closeSequence(slot: number): void
  /** One step through every stage: tokens of the rows in, logits of `logitRows` out. */
  step(input: StageInput): Promise<Float32Array>
  /** The same step, sampled where the logits are (the last stage): one token per entry of `logitRows`. */
  sample(input: StageInput, rows: readonly RowSampling[]): Promise<SampledToken[]>
}
