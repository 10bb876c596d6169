/** Layer planning: which contiguous layer range [lo, hi) each node holds, with a fit check that names the node that is
 * short and by how much. A pipeline runs at the pace of its slowest stage, and a stage's step time goes with the weights
 * it streams — its layers, plus the head on the last stage (the embedding is a lookup) — and with the work a layer does
 * besides (LAYER_WORK). So the layers are split so that each node's share of that cost matches its share of the
 * cluster's memory (compute). Where that split does
 * not fit, they are split by what each stage holds instead — weights, embedding, head and KV cache (memory); `--split`
 * overrides both (manual). Cuts fall on the layer boundary nearest each node's share. Pure: no I/O. */
import { DbcError } from '../errors.ts'

export interface PlanNode {
  id: string
  /** Memory the node can give the model (weights + KV), in bytes. */
  usableBytes: number
}

export interface ModelFootprint {
  numLayers: number
  /** Weight bytes of each decoder layer (length numLayers). */
  layerBytes: readonly number[]
  /** Embedding table bytes, held by the first stage. */
  embeddingBytes: number
  /** Final norm + lm_head bytes, held by the last stage (0 when tied to the embedding and the last stage is the first). */
  headBytes: number
  /** KV cache bytes per token per layer (2 · kv_heads · head_dim · bytes per element). */
  kvBytesPerTokenLayer: number
  /** Cache bytes of one layer for one sequence of `tokens` tokens, where layers differ (sliding windows, recurrent
   * state); without it every layer holds kvBytesPerTokenLayer per token. */
  layerKvBytes?(layer: number, tokens: number): number
}

export interface PlanOptions {
  /** Layers per node, overriding the memory weighting. */
  split?: readonly number[]
  /** KV the plan reserves: `sequences` slots of `tokens` tokens each (default one sequence of 4096). */
  kv?: { sequences: number; tokens: number }
  /** Shorthand for kv = { sequences: 1, tokens: kvTokens }. */
  kvTokens?: number
}

export interface StagePlan {
  node: string
  rank: number
  lo: number
  hi: number
  weightBytes: number
  /** KV bytes needed for `kvTokens` tokens over this stage's layers. */
  kvBytes: number
  usableBytes: number
  /** usable − weights − KV; negative means the stage does not fit. */
  headroomBytes: number
}

/** How the layers were split: by the weights each stage streams per token, by what each stage holds, or by --split. */
export type PlanRule = 'compute' | 'memory' | 'manual'

export interface LayerPlan {
  rule: PlanRule
  stages: StagePlan[]
  kvTokens: number
  fits: boolean
  /** One entry per node that does not fit. */
  shortfalls: { node: string; shortBytes: number }[]
}

export class PlanError extends DbcError {}

/** A decoder layer's step cost as a multiple of its weight bytes, against 1 for the head: besides its matmuls a layer
 * attends over its KV cache, normalises, applies its activation and quantizes its inputs, while the lm_head is one
 * matmul. Measured on the cpu backend (Qwen3-0.6B q4, 4-row serving micro-batches, docs/benchmarks.md): a layer takes
 * 0.86 ms where its matmuls take 0.40 ms, the head about 4 ms, nearly all of it its matmul. Counting bytes alone put 19 |
 * 9 + head on two nodes, and the first stage took 40% longer per step than the second; with this, 16 | 12 + head. */
export const LAYER_WORK = 2

/** Largest-remainder apportionment of `total` items by `weights`, every share ≥ 1 (ties go to the lower index). */
export function largestRemainder(total: number, weights: readonly number[]): number[] {
  const n = weights.length
  if (n === 0) throw new PlanError('E_PLAN', 'a plan needs at least one node')
  if (total < n)
    throw new PlanError(
      'E_PLAN',
      `${total} layers cannot be spread over ${n} nodes (each needs at least one)`,
      'use fewer nodes',
    )
  if (weights.some((w) => !(w > 0))) throw new PlanError('E_PLAN', 'every node must report positive usable memory')
  const sum = weights.reduce((a, b) => a + b, 0)
  const quotas = weights.map((w) => (total * w) / sum)
  const shares = quotas.map(Math.floor)
  let left = total - shares.reduce((a, b) => a + b, 0)
  const order = quotas.map((q, i) => ({ i, frac: q - Math.floor(q) })).sort((a, b) => b.frac - a.frac || a.i - b.i)
  for (let k = 0; left > 0; k++, left--) shares[order[k % n]!.i]!++
  // A node with a tiny share of memory still holds one layer: take it from the largest share.
  for (let i = 0; i < n; i++) {
    while (shares[i]! < 1) {
      const donor = shares.indexOf(Math.max(...shares))
      shares[donor]!--
      shares[i]!++
    }
  }
  return shares
}

/** Layer counts per node so that each node's bytes (layers' weights and KV, plus the embedding before layer 0 and the
 * head after the last) come nearest its share of the memory: cut k falls on the boundary nearest the cumulative share. */
export function splitByBytes(
  layerCost: readonly number[],
  before: number,
  after: number,
  weights: readonly number[],
): number[] {
  const n = weights.length
  const layers = layerCost.length
  largestRemainder(layers, weights) // the same checks: enough layers, positive weights
  const total = before + after + layerCost.reduce((a, b) => a + b, 0)
  const sum = weights.reduce((a, b) => a + b, 0)
  const prefix = [before]
  for (const c of layerCost) prefix.push(prefix.at(-1)! + c)
  const counts: number[] = []
  let lo = 0
  let share = 0
  for (let i = 0; i < n - 1; i++) {
    share += weights[i]!
    const target = (total * share) / sum
    // leave at least one layer for this node and for each node after it
    let best = lo + 1
    for (let k = lo + 1; k <= layers - (n - 1 - i); k++)
      if (Math.abs(prefix[k]! - target) < Math.abs(prefix[best]! - target)) best = k
    counts.push(best - lo)
    lo = best
  }
  counts.push(layers - lo)
  return counts
}

export function planLayers(nodes: readonly PlanNode[], model: ModelFootprint, options: PlanOptions = {}): LayerPlan {
  if (model.layerBytes.length !== model.numLayers)
    throw new PlanError('E_PLAN', `layerBytes has ${model.layerBytes.length} entries for ${model.numLayers} layers`)
  const kv = options.kv ?? { sequences: 1, tokens: options.kvTokens ?? 4096 }
  const kvTokens = kv.sequences * kv.tokens
  const layerKv = (l: number) =>
    kv.sequences * (model.layerKvBytes ? model.layerKvBytes(l, kv.tokens) : kv.tokens * model.kvBytesPerTokenLayer)
  const stagesFor = (counts: readonly number[]): StagePlan[] => {
    const stages: StagePlan[] = []
    let lo = 0
    nodes.forEach((node, rank) => {
      const hi = lo + counts[rank]!
      let weightBytes = 0
      for (let l = lo; l < hi; l++) weightBytes += model.layerBytes[l]!
      if (rank === 0) weightBytes += model.embeddingBytes
      if (rank === nodes.length - 1) weightBytes += model.headBytes
      let kvBytes = 0
      for (let l = lo; l < hi; l++) kvBytes += layerKv(l)
      stages.push({
        node: node.id,
        rank,
        lo,
        hi,
        weightBytes,
        kvBytes,
        usableBytes: node.usableBytes,
        headroomBytes: node.usableBytes - weightBytes - kvBytes,
      })
      lo = hi
    })
    return stages
  }
  let rule: PlanRule
  let stages: StagePlan[]
  if (options.split) {
    if (options.split.length !== nodes.length) {
      throw new PlanError(
        'E_PLAN',
        `--split has ${options.split.length} parts for ${nodes.length} nodes`,
        'give one layer count per node',
      )
    }
    if (options.split.some((c) => !Number.isInteger(c) || c < 1))
      throw new PlanError('E_PLAN', '--split counts must be positive integers')
    const total = options.split.reduce((a, b) => a + b, 0)
    if (total !== model.numLayers) {
      throw new PlanError(
        'E_PLAN',
        `--split ${options.split.join(',')} covers ${total} layers, the model has ${model.numLayers}`,
      )
    }
    rule = 'manual'
    stages = stagesFor(options.split)
  } else {
    const shares = nodes.map((n) => n.usableBytes)
    rule = 'compute'
    stages = stagesFor(
      splitByBytes(
        model.layerBytes.map((b) => b * LAYER_WORK),
        0,
        model.headBytes,
        shares,
      ),
    )
    if (stages.some((s) => s.headroomBytes < 0)) {
      rule = 'memory'
      stages = stagesFor(
        splitByBytes(
          model.layerBytes.map((b, l) => b + layerKv(l)),
          model.embeddingBytes,
          model.headBytes,
          shares,
        ),
      )
    }
  }
  const shortfalls = stages
    .filter((s) => s.headroomBytes < 0)
    .map((s) => ({ node: s.node, shortBytes: -s.headroomBytes }))
  return { rule, stages, kvTokens, fits: shortfalls.length === 0, shortfalls }
}

const GiB = 1024 ** 3
export const formatGiB = (bytes: number): string => `${(bytes / GiB).toFixed(2)} GiB`

const RULES: Record<PlanRule, string> = {
  compute:
    'layers split by compute: each node gets its share (its share of the memory) of the weights streamed per step, a layer counted at twice its bytes for the work besides its matmuls',
  memory: 'layers split by memory (a split by compute does not fit): each node holds its share of weights and KV',
  manual: 'layers split as --split gives',
}

/** The plan as lines a user reads (`serve --plan`). */
export function describePlan(plan: LayerPlan): string[] {
  const lines = [RULES[plan.rule]]
  lines.push(
    ...plan.stages.map(
      (s) =>
        `rank ${s.rank} ${s.node}: layers [${s.lo}, ${s.hi}) (${s.hi - s.lo}), weights ${formatGiB(s.weightBytes)}, ` +
        `KV for ${plan.kvTokens} tokens ${formatGiB(s.kvBytes)}, usable ${formatGiB(s.usableBytes)}, headroom ${formatGiB(s.headroomBytes)}`,
    ),
  )
  for (const s of plan.shortfalls) lines.push(`does not fit: ${s.node} is short by ${formatGiB(s.shortBytes)}`)
  return lines
}
