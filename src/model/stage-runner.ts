/** The seam a node drives a stage through: the stage in this thread (ModelStage itself) or on a compute thread of its own
 * (compute/stage-thread.ts), so that a long step never blocks the event loop that serves HTTP, links and heartbeats. */
import type { LayerRange } from './architecture.ts'
import type { DecoderConfig } from './config.ts'
import { sampleRows, type RowSampling, type SampledToken } from './sampler.ts'
import type { ModelStage, StageInput, StageOutput } from './shard.ts'

/** The KV slots of a stage as the node sees them: which are taken, and the sizes planning and /health report. */
export interface SlotLedger {
  readonly maxLen: number
  readonly freeSlots: number
  /** Bytes the KV cache holds on this stage. */
  readonly bytes: number
  allocate(): number
  /** Claims a specific slot (a remote stage mirrors the head's choice). */
  claim(slot: number): void
  release(slot: number): void
  /** Every slot free again. */
  releaseAll(): void
}

/** What one step gave back, and how long the stage computed it. */
export interface StageRun extends StageOutput {
  /** With sampling, on the last stage: one token per sampling row. */
  tokens?: SampledToken[]
  micros: number
}

export interface StageRunner {
  readonly config: DecoderConfig
  readonly range: LayerRange
  readonly weightBytes: number
  readonly cache: SlotLedger
  /** One step. With `sampling` on the last stage the logits are sampled at once where they are (one token per row of
   * `logitRows`; an empty `sampling` computes the step and samples nothing), and only the tokens come back. */
  run(input: StageInput, sampling?: readonly RowSampling[]): Promise<StageRun>
  close(): void
}

/** The step of `run`, in the calling thread. */
export function runStageNow(stage: ModelStage, input: StageInput, sampling?: readonly RowSampling[]): StageRun {
  const t0 = performance.now()
  if (!sampling || !stage.range.last) {
    const out = stage.forward(input)
    return { ...out, micros: Math.round((performance.now() - t0) * 1000) }
  }
  // the last stage still needs a row to compute when nothing is sampled (a middle prefill chunk)
  const logitRows = sampling.length ? input.logitRows : Int32Array.of(0)
  const { logits } = stage.forward({ ...input, logitRows, output: 'reused-logits' })
  const tokens = sampling.length ? sampleRows(logits!, stage.config.vocabSize, sampling) : []
  return { tokens, micros: Math.round((performance.now() - t0) * 1000) }
}
