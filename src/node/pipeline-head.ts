/** The head of a pipeline cluster (rank 0): gathers the stages, plans the layers by their memory, ships each stage its
 * layers' files, loads its own layers and drives the ring; it serves the API, and on `cluster stop` stops its stages. */
import { consola } from 'consola'
import { ClusterPlanner } from '../cluster/cluster-planner.ts'
import { nodeStop } from '../cluster/cluster-stop.ts'
import { encodeNodeHealth, NodeHealthSampler } from '../cluster/node-health.ts'
import { DbcError } from '../errors.ts'
import { layerRanges } from '../cluster/membership.ts'
import { describePlan, formatGiB, PlanError } from '../cluster/plan-layers.ts'
import { HeadPipeline } from '../cluster/ring.ts'
import { vouchForCluster } from '../cluster/cluster-roster.ts'
import { RoleListener } from '../cluster/role-listener.ts'
import { PLAN_ONLY } from '../cluster/stage-join.ts'
import { manifestFor } from '../distribution/manifest.ts'
import { checkpointFootprint } from '../model/footprint.ts'
import { readModelConfig } from '../model/shard.ts'
import { DTYPE_BYTES } from '../tensor/backend.ts'
import { fingerprint } from '../trust/identity.ts'
import { computeHealth, degradeWhileHung, startComputeStage } from './compute-stage.ts'
import { modelName } from './model-folder.ts'
import { clusterLogs } from './node-logs.ts'
import type { NodeOptions, StartedNode } from './node-options.ts'

/** How long the head waits for its stages to stop after telling them to. */
const STAGES_STOP_MS = 10_000

export async function startPipelineHead(o: NodeOptions, dir: string): Promise<StartedNode> {
  const { peers, rank } = o.membership!
  const sampler = new NodeHealthSampler()
  let loaded = false
  // every pong the head sends carries its health too (docs/protocol.md §Health)
  const link = { ...o.link!, pongPayload: () => encodeNodeHealth(sampler.sample(loaded)) }
  const config = readModelConfig(dir)
  const split = o.split ? layerRanges(config.numLayers, peers.length, o.split).map(([lo, hi]) => hi - lo) : undefined
  const listener = new RoleListener(peers[0]!.host, peers[0]!.port, link)
  const planner = new ClusterPlanner({
    listener,
    nodes: peers.length,
    head: { serial: o.serial, usableBytes: o.usableBytes, fingerprint: fingerprint(link.identity.publicKey) },
    footprint: checkpointFootprint(dir, DTYPE_BYTES[o.backend.kvDtype]),
    split,
    slots: o.maxBatch,
    maxLen: o.maxLen,
    model: modelName(o.modelSpec ?? dir),
    onProgress: (line) => consola.start(line),
    health: () => sampler.sample(loaded),
  })
  const plan = await planner.gather()
  const lines = describePlan(plan)
  if (o.plan) {
    for (const line of lines) console.log(line)
    planner.refuse(PLAN_ONLY, 'the head only printed the plan (--plan)')
    await Bun.sleep(200) // let the answers leave before the links close
    listener.stop()
    if (!plan.fits) process.exitCode = 1
    return { role: 'finished' }
  }
  for (const line of lines) consola.info(line)
  if (!plan.fits) {
    const short = plan.shortfalls.map((s) => `${s.node} is short by ${formatGiB(s.shortBytes)}`).join('; ')
    planner.refuse('E_PLAN_FIT', `the plan does not fit: ${short}`)
    await Bun.sleep(200)
    listener.stop()
    throw new PlanError(
      'E_PLAN_FIT',
      `the plan does not fit: ${short}`,
      'add a node or memory (--memory), lower --max-batch or --max-context, or give a --split',
    )
  }
  const vouched = o.coordinator ? await vouch(o, planner, listener) : null
  let hashing = ''
  const manifest = manifestFor(
    dir,
    (file) => file !== hashing && consola.start(`hashing ${(hashing = file)} for the manifest`),
  )
  planner.commit(plan, { dir, manifest, identity: link.identity }, vouched ? JSON.stringify(vouched.roster) : '')
  const mine = plan.stages[0]!
  const stage = await startComputeStage(o.backend, dir, {
    lo: mine.lo,
    hi: mine.hi,
    slots: o.maxBatch,
    maxLen: o.maxLen,
  })
  loaded = true
  consola.info(
    `rank 0 of ${peers.length}: layers [${mine.lo}, ${mine.hi}) of ${config.numLayers}; link ${peers[0]!.host}:${peers[0]!.port}`,
  )
  const { metrics } = o
  const ring = new HeadPipeline({
    rank,
    peers,
    stage,
    link,
    listener,
    onStepTiming: (t) => {
      t.stageSeconds.forEach((s, r) => metrics.stageStepTime.observe(String(r), s))
      metrics.hopTime.observe(t.hopSeconds)
      if (t.decode) {
        t.stageSeconds.forEach((s, r) => metrics.decodeStageStepTime.observe(String(r), s))
        metrics.decodeHopTime.observe(t.hopSeconds)
      }
    },
  })
  return {
    role: 'serving',
    node: {
      modelDir: dir,
      pipeline: ring,
      stage,
      // with N stages, N micro-batches in flight keep every stage busy at once
      microBatches: peers.length,
      health: () => ({
        backend: o.backend.name,
        nodes: peers.length,
        layers: stage.config.numLayers,
        head_layers: [stage.range.lo, stage.range.hi],
        kv_slots_free: stage.cache.freeSlots,
        compute: computeHealth(stage),
        ring: ring.status(),
        members: planner.members(o.backend.name),
        // the coordinator's verdict on every member: the cluster is as trusted as its weakest (null: no coordinator)
        cluster_trust: vouched?.trust ?? null,
        // a `cluster stop` under way (null: none)
        stopping: nodeStop.status,
      }),
      logs: (after, limit) => clusterLogs(planner, o.serial, after, limit),
      connect(scheduler) {
        // cluster stop (cluster-stop.ts): the ring fails what still runs; every stage is told, then the links close
        nodeStop.register({
          halt: (error) => ring.halt(error),
          stopMembers: async ({ now }) => {
            ring.halt(new DbcError('E_CLUSTER_STOPPED', 'the cluster is stopping (dbcluster cluster stop)'))
            const late = await planner.stopStages({ now, reason: 'dbcluster cluster stop' }, STAGES_STOP_MS)
            if (late.length)
              consola.warn(`stage(s) ${late.join(', ')} did not stop within ${STAGES_STOP_MS / 1000} s; the head stops`)
            else consola.info(`every stage (${peers.length - 1}) has stopped`)
            ring.stop()
            listener.stop()
            void vouched?.registration.close()
          },
        })
        ring.onStalled((reason) => scheduler.setStalled(reason))
        scheduler.setDegraded(ring.degraded)
        degradeWhileHung(stage, scheduler, () => ring.degraded)
        let formed = false // the hops not yet up while the ring first forms are not link errors
        ring.onDegraded((reason) => {
          scheduler.setDegraded(reason)
          if (!reason) formed = true
          else if (formed) metrics.linkErrors.inc({ reason: reason.split(':')[0] ?? 'link' })
        })
      },
      close: () => {
        ring.stop()
        stage.close()
        void vouched?.registration.close()
      },
    },
  }
}

/** With --coordinator: the roster and the cluster's registration, or every stage is told why not and serve ends. */
async function vouch(o: NodeOptions, planner: ClusterPlanner, listener: RoleListener) {
  const stages = [...planner.joined.values()].map((j) => ({
    rank: j.rank,
    serial: j.serial,
    publicKey: j.link.peerPublicKey,
    attestation: j.attestation,
  }))
  try {
    const vouched = await vouchForCluster(o.coordinator!, { serial: o.serial, identity: o.link!.identity }, stages)
    const t = vouched.trust
    consola.success(
      `the coordinator vouches for cluster ${t.cluster_id}: trust ${t.trust_level} (${t.members.map((m) => `${m.serial} ${m.trust_level}`).join(', ')})`,
    )
    return vouched
  } catch (error) {
    planner.refuse('E_ROSTER', (error as Error).message)
    await Bun.sleep(200) // let the refusals leave before the links close
    listener.stop()
    throw error
  }
}
