/** A node alone: the whole model on its compute thread, or only its plan against this machine's memory. */
import { describePlan, planLayers } from '../cluster/plan-layers.ts'
import { LocalPipeline } from '../engine/pipeline.ts'
import { checkpointFootprint } from '../model/footprint.ts'
import { DTYPE_BYTES } from '../tensor/backend.ts'
import { computeHealth, degradeWhileHung, startComputeStage } from './compute-stage.ts'
import type { NodeOptions, StartedNode } from './node-options.ts'
import { ownLogs } from './node-logs.ts'
import { openPrefixCache } from './prefix-cache.ts'

export async function startSingle(o: NodeOptions, dir: string): Promise<StartedNode> {
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
  const stage = await startComputeStage(o.backend, dir, { slots: o.maxBatch, maxLen: o.maxLen })
  const prefix = await openPrefixCache(stage, o, dir).catch((error) => (stage.close(), Promise.reject(error)))
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
        compute: computeHealth(stage),
        ...(prefix && { prefix_cache: { blocks: prefix.blocks, bytes: prefix.bytes } }),
      }),
      logs: async (after, limit) => [ownLogs(0, o.serial, after, limit)],
      connect: (scheduler) => degradeWhileHung(stage, scheduler),
      close: () => stage.close(),
    },
  }
}
