/** A rank of a tensor-parallel group: meets the other ranks (over sealed sockets, or MLX distributed when named), loads
 * its slice of every layer; rank 0 drives the steps and serves the API, the others follow it until it stops. */
import { consola } from 'consola'
import { writeSync } from 'node:fs'
import { ModelStage } from '../model/shard.ts'
import { servingFingerprint } from '../model/serving-fingerprint.ts'
import { followTensorParallel, TensorParallelPipeline, type StepBroadcast } from '../tensor-parallel/pipeline.ts'
import { followRankZero, keepTensorParallelWhole } from '../tensor-parallel/recovery.ts'
import { MlxGroup } from '../tensor-parallel/mlx-group.ts'
import { SealedTpGroup } from '../tensor-parallel/sealed-group.ts'
import { startTensorParallel } from '../tensor-parallel/start-mlx.ts'
import { startSealedTensorParallel } from '../tensor-parallel/start-sealed.ts'
import { ownLogs } from './node-logs.ts'
import type { NodeOptions, StartedNode } from './node-options.ts'

export async function startTensorParallelRank(o: NodeOptions, dir: string): Promise<StartedNode> {
  const r = o.tensorParallel!
  const sealed = r.transport === 'sealed'
  const started = sealed
    ? await startSealedTensorParallel(
        {
          size: r.size,
          rank: r.rank,
          listen: r.listen,
          peer: r.peer,
          timeoutMs: r.timeoutMs,
          identity: r.identity!,
          serial: o.serial,
          authorize: r.authorize!,
          clusterId: r.clusterId!,
          cipher: r.cipher,
          coordinator: o.coordinator,
          fingerprint: servingFingerprint(dir, { maxBatch: o.maxBatch, maxLen: o.maxLen, tp: r.size }),
          log: (l) => consola.info(l),
        },
        o.backend,
      )
    : await startTensorParallel(
        {
          size: r.size,
          rank: r.rank,
          transport: r.transport,
          listen: r.listen,
          peer: r.peer,
          rdmaDevice: r.rdmaDevice,
          timeoutMs: r.timeoutMs,
          log: r.log,
        },
        o.backend,
      )
  const { group, tp } = started
  const rejoin = 'rejoin' in started ? started.rejoin : undefined
  const vouched = 'vouched' in started ? started.vouched : null
  const stage = ModelStage.load(dir, o.backend, { slots: o.maxBatch, maxLen: o.maxLen, tp })
  if (r.rank > 0) {
    // the other ranks replay rank 0's steps on their slice until rank 0 stops; rank 0 serves the API
    const steps =
      group instanceof SealedTpGroup && rejoin
        ? await followRankZero(stage, group, rejoin, r.peer!)
        : followOnce(stage, group, r.log ? 2 : 1)
    ;(r.log ?? ((l: string) => consola.info(l)))(`tensor-parallel rank ${r.rank}: rank 0 stopped after ${steps} steps`)
    group.close()
    return { role: 'finished', followedSteps: steps }
  }
  const pipeline = new TensorParallelPipeline(stage, group, (seconds) => o.metrics.tpExchangeTime.observe(seconds))
  // each rank summarizes its vocabulary slice ('split'), or rank 0 gathers the logits
  const sampling = pipeline.splitSampling ? 'split' : 'gathered'
  // the dashboard's transport line and RDMA banner read which MLX backend the group joined
  const transport = sealed ? 'sealed' : group instanceof MlxGroup && group.transport !== 'any' ? group.transport : 'mlx'
  process.once('exit', () => pipeline.stop())
  return {
    role: 'serving',
    node: {
      modelDir: dir,
      pipeline,
      stage,
      microBatches: 1,
      health: () => ({
        backend: o.backend.name,
        nodes: r.size,
        tensor_parallel: { ranks: r.size, transport, sampling },
        layers: stage.config.numLayers,
        head_layers: [stage.range.lo, stage.range.hi],
        kv_slots_free: stage.cache.freeSlots,
        // the coordinator's verdict on every rank (null without --coordinator): the weakest rank's trust
        cluster_trust: vouched?.trust ?? null,
      }),
      // the other ranks' lines stay on their machines: their sockets carry only the group's exchanges
      logs: async (after, limit) => [ownLogs(0, o.serial, after, limit)],
      connect(scheduler) {
        if (group instanceof SealedTpGroup && rejoin) keepTensorParallelWhole(group, pipeline, rejoin, scheduler)
      },
      close() {
        // the followers return, then the group lets go of its sockets
        pipeline.stop()
        group.close()
        void vouched?.registration.close()
      },
    },
  }
}

/** An MLX group's rank > 0: follows rank 0 until it stops (a lost rank ends the process: see start-mlx.ts). The line is
 * written synchronously: from here on this thread blocks in the group's receive. It goes to stdout (`serve`), or to
 * stderr where the command routes its lines itself (`generate --json` keeps stdout for its one object). */
function followOnce(stage: ModelStage, group: StepBroadcast, fd: 1 | 2): number {
  writeSync(fd, `tensor-parallel rank ${group.rank} ready: following rank 0\n`)
  return followTensorParallel(stage, group)
}
