/** The seam a tensor-parallel model layer needs: which shard this process holds, and the sum across shards. A model
 * takes it as data (no transport inside model code), so pipeline stages can later hold TP groups of their own. */
import type { Tensor } from './backend.ts'

export interface TensorParallel {
  readonly rank: number
  readonly size: number
  /** Σ over the group's ranks of x (same shape on every rank), as a tensor of the model's backend. */
  allSum(x: Tensor): Tensor
  /** Where the group has it: every rank's x [..., n] joined along the last axis in rank order ([..., n × size], f32) on
   * rank 0; the other ranks send theirs and get x back. Lets lm_head be split by vocabulary (the logits meet on rank 0,
   * which samples). */
  gatherLast?(x: Tensor): Tensor
}

/** One process holding the whole model. */
export const NO_TENSOR_PARALLEL: TensorParallel = { rank: 0, size: 1, allSum: (x) => x }
