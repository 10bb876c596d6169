/** A node alone: the whole model in one process, or only its plan against this machine's memory. */
import { describePlan, planLayers } from '../cluster/plan-layers.ts'
import { LocalPipeline } from '../engine/pipeline.ts'
import { checkpointFootprint } from '../model/footprint.ts'
import { ModelStage } from '../model/shard.ts'
import { DTYPE_BYTES } from '../tensor/backend.ts'
import type { NodeOptions, StartedNode } from './node-options.ts'
import { openPrefixCache } from './prefix-cache.ts'

export function startSingle(o: NodeOptions, dir: string): StartedNode {
  if (o.plan) {
    const plan = planLayers(
      [{ id: o.serial, usableBytes: o.usableBytes }],
      checkpointFootprint(dir, DTYPE_BYTES[o.backend.kvDtype]),
      { kv: { sequences: o.maxBatch, tokens: o.maxLen } },
    )
    for (const line of describePlan(plan)) console.log(line)
    if (!plan.fits) process.exitCode = 1
    return { role: 'finished' }
  }
  const stage = ModelStage.load(dir, o.backend, { slots: o.maxBatch, maxLen: o.maxLen })
  const prefix = openPrefixCache([stage], o, dir)
  return {
    role: 'serving',
    node: {
      modelDir: dir,
      pipeline: new LocalPipeline([stage], { prefix }),
      stage,
      microBatches: 1,
      health: () => ({
        backend: o.backend.name,
        nodes: 1,
        layers: stage.config.numLayers,
        head_layers: [stage.range.lo, stage.range.hi],
        kv_slots_free: stage.cache.freeSlots,
        ...(prefix && { prefix_cache: { blocks: prefix.pool.blocks, bytes: prefix.pool.bytes } }),
      }),
      connect: () => {},
      close: () => prefix?.close(),
    },
  }
}
