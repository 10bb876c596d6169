/** The Pipeline seam the engine drives: token ids in, logits (or tokens sampled on the last stage) out, KV slots opened and closed on every stage. A local
 * chain of stages (engine/pipeline.ts) and the ring across machines (cluster/ring.ts) both implement it. */
import type { RowSampling, SampledToken } from './sampler.ts'
import type { StageInput } from './shard.ts'

/** Prompt KV reuse by prefix (engine/prefix-cache.ts): the scheduler asks it before a prompt's prefill and tells it what
 * the prefill computed. `tenant` keeps the blocks of separate API keys apart. */
export interface PrefixReuse {
  /** Tokens per block: a prompt reuses whole blocks only. */
  readonly blockTokens: number
  /** Loads the longest cached prefix of `ids` into `slot` (a sequence just opened) and returns how many tokens it now
   * holds: whole blocks, fewer than ids.length (the last token is always computed, for its logits). A cache on a compute
   * thread answers later, queued before the prefill that reads the slot. */
  restore(slot: number, ids: readonly number[], tenant: string): number | Promise<number>
  /** `slot` holds the keys and values of ids[0, upTo), from completed steps: keeps its whole blocks for later prompts. */
  store(slot: number, ids: readonly number[], upTo: number, tenant: string): void | Promise<void>
  /** The sequence in `slot` ended: the blocks it held on to may be evicted again. */
  finish(slot: number): void
}

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
  /** Where this pipeline keeps a prefix cache (absent: every prompt is prefilled whole). */
  readonly prefix?: PrefixReuse
}
