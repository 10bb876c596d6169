/** Greedy decoding of a fixed prompt through one stage: the first step's logits and the next tokens, for parity tests. */
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import type { Pipeline } from '../../src/model/pipeline.ts'
import { argmax } from '../../src/model/sampler.ts'
import type { ModelStage } from '../../src/model/shard.ts'

export const PROMPT = [9707, 11, 1879, 0, 3555, 525]

export async function greedy(
  stage: ModelStage | Pipeline,
  steps: number,
): Promise<{ first: Float32Array; out: number[] }> {
  const pipeline = 'forward' in stage ? new LocalPipeline([stage]) : stage
  const slot = pipeline.openSequence()
  let logits = await pipeline.step({
    tokens: Int32Array.from(PROMPT),
    slots: new Int32Array(PROMPT.length).fill(slot),
    positions: Int32Array.from(PROMPT.keys()),
    logitRows: Int32Array.of(PROMPT.length - 1),
  })
  const first = logits
  const out: number[] = []
  for (let i = 0; i < steps; i++) {
    const id = argmax(logits)
    out.push(id)
    logits = await pipeline.step({
      tokens: Int32Array.of(id),
      slots: Int32Array.of(slot),
      positions: Int32Array.of(PROMPT.length + i),
      logitRows: Int32Array.of(0),
    })
  }
  pipeline.closeSequence(slot)
  return { first, out }
}
