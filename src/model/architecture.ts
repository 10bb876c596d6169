/** What every architecture file provides: config parsing and a model over a layer range, shaped for pipeline stages. */
import type { Backend, Tensor } from '../tensor/backend.ts'
import type { DecoderConfig } from './config.ts'
import type { KvCache } from './kv-cache.ts'
import type { Weights } from './weights.ts'

/** A stage's slice of the model: layers [lo, hi); the first stage embeds, the last applies the final norm and lm_head. */
export interface LayerRange {
  lo: number
  hi: number
  first: boolean
  last: boolean
}

/** The rows of one step: each row is a token of some sequence, at (slot, position). */
export interface StepRows {
  slots: Tensor
  positions: Tensor
  cache: KvCache
}

export interface Architecture {
  readonly config: DecoderConfig
  embed(tokens: Tensor): Tensor
  /** Runs this stage's layers; writes K/V for every row before attention, so rows of one sequence see each other. */
  forwardLayers(hidden: Tensor, rows: StepRows): Tensor
  /** `slice`: where the head is split by vocabulary, this rank's logits [rows, vocab / ranks] rather than all of them. */
  head(hidden: Tensor, slice?: boolean): Tensor
  /** Tensor parallel: lm_head is split by vocabulary, so every rank must run head() for rank 0 to get its logits. */
  readonly headSplit?: boolean
}

/** One family: `C` is its parsed config, so the family's own code reads its fields without casts (the registry holds
 * every family as ArchitectureModule of the shared DecoderConfig). */
export interface ArchitectureModule<C extends DecoderConfig = DecoderConfig> {
  parseConfig(raw: Record<string, unknown>): C
  createModel(config: C, weights: Weights, range: LayerRange, backend: Backend): Architecture
  /** The model marks its linears for tensor parallel (Weights.linear `shard`) and runs on a per-rank config. */
  readonly tensorParallel?: boolean
  /** The family's own sizes a rank holds 1/size of (beyond heads, KV heads and the MLP width): [what, count] each, and
   * the per-rank config with them divided. */
  shardExtra?(config: C, size: number): { parts: [string, number][]; config: C }
}
