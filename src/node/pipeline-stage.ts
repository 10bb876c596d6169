/** A stage of a pipeline cluster (rank ≥ 1): joins the head, loads (or receives) the layers the head plans for it and
 * serves its hops until stopped. */
import { consola } from 'consola'
import { formatGiB } from '../cluster/plan-layers.ts'
import { runStage } from '../cluster/run-stage.ts'
import { UsageError } from '../errors.ts'
import type { NodeOptions, StartedNode } from './node-options.ts'

export async function runPipelineStage(o: NodeOptions): Promise<StartedNode> {
  const { peers, rank } = o.membership!
  if (o.plan)
    throw new UsageError('--plan is for the head (rank 0): it gathers every node’s memory and prints the plan')
  if (o.split) consola.warn('--split is decided by the head (rank 0); ignored on a stage')
  consola.info(
    `rank ${rank} of ${peers.length}: joining the head at ${peers[0]!.host}:${peers[0]!.port}; link ${peers[rank]!.host}:${peers[rank]!.port}; offering ${formatGiB(o.usableBytes)}`,
  )
  await runStage({
    rank,
    peers,
    link: o.link!,
    backend: o.backend,
    usableBytes: o.usableBytes,
    modelDir: o.modelDir,
    retryMs: o.link!.backoffMs,
    signal: o.signal,
    coordinator: o.coordinator,
    orphanTimeoutMs: o.link!.orphanTimeoutMs,
    onReady: () => console.log(`stage ${rank} ready`),
  })
  return { role: 'finished' }
}
