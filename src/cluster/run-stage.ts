/** What `dbcluster serve --peers … --rank N` (N ≥ 1) runs: join the head, receive the files of the layers the plan
 * gives this node (those already here and verified are kept), load only those layers, and serve them in the ring. When
 * the head goes away the stage keeps its layers and joins again; a new plan with another range reloads. */
import { consola } from 'consola'
import { join } from 'node:path'
import { DbcError } from '../errors.ts'
import { isSafeName } from '../distribution/manifest.ts'
import { receiveShards } from '../distribution/shard-transfer.ts'
import type { SealedLink } from '../link/tcp-link.ts'
import { ModelStage } from '../model/shard.ts'
import { stateDir } from '../state-dir.ts'
import { signAttestation } from '../trust/attestation.ts'
import { chipName, machineFacts, osVersion } from '../trust/machine-info.ts'
import type { Backend } from '../tensor/backend.ts'
import type { CoordinatorClient } from '../coordinator/client.ts'
import { checkRoster, type RosterRefused } from './cluster-roster.ts'
import { StageNode, type RingAddress, type RingOptions } from './ring.ts'
import { joinHead, type StagePlan } from './stage-join.ts'

const log = consola.withTag('cluster')

export interface RunStageOptions {
  rank: number
  peers: readonly RingAddress[]
  link: RingOptions['link']
  backend: Backend
  usableBytes: number
  /** This node's copy of the model, if it has one; else received files go under the state folder. */
  modelDir?: string
  /** Wait between attempts to reach the head, in ms. */
  retryMs: number
  signal: AbortSignal
  /** Told once per load: the line tests and `cluster local` wait for. */
  onReady?: (plan: StagePlan) => void
  /** With --coordinator: the head's roster must verify and name this node before anything loads (cluster-roster.ts). */
  coordinator?: CoordinatorClient
}

/** Where a stage without --model keeps what the head sends it. */
export const receivedModelDir = (model: string) => join(stateDir(), 'models', 'received', model)

export async function runStage(o: RunStageOptions): Promise<void> {
  let current: { plan: StagePlan; stage: ModelStage; node: StageNode } | null = null
  const stopped = new Promise<void>((done) => o.signal.addEventListener('abort', () => done(), { once: true }))
  try {
    while (!o.signal.aborted) {
      const joined = await Promise.race([
        joinHead({
          head: o.peers[0]!,
          join: {
            rank: o.rank,
            usableBytes: o.usableBytes,
            loaded: current ? { lo: current.plan.lo, hi: current.plan.hi } : null,
            backend: o.backend.name,
            osVersion: osVersion(),
            chip: chipName(),
          },
          link: o.link,
          retryMs: o.retryMs,
          signal: o.signal,
          // the head relays it when it registers the cluster with its coordinator
          attest: async () =>
            JSON.stringify(
              await signAttestation(o.link.identity, { ...machineFacts(), serial: o.link.serial, rdmaEnabled: false }),
            ),
        }),
        stopped.then(() => null),
      ])
      if (!joined) break
      const { link, plan } = joined
      await checkHeadRoster(o, link, plan)
      if (!current || !samePlan(current.plan, plan)) {
        if (current) log.info(`the head's plan moved this node to layers [${plan.lo}, ${plan.hi}): reloading`)
        current?.node.stop()
        current?.stage.close()
        current = null
        current = await load(o, link, plan)
        o.onReady?.(plan)
      }
      // the stage serves until the head goes away; then it joins again (the head restarted) and keeps its layers
      await Promise.race([new Promise<void>((done) => link.onClose(() => done())), stopped])
      link.close()
      if (!o.signal.aborted) log.warn('the head closed the control link; joining again when it returns')
    }
  } finally {
    current?.node.stop()
    current?.stage.close()
  }
}

/** A refused roster ends this stage with its reason, before a byte of the plan is applied (the head is told why). */
async function checkHeadRoster(o: RunStageOptions, link: SealedLink, plan: StagePlan): Promise<void> {
  if (!o.coordinator) {
    if (plan.roster) log.info('the head sent a coordinator-signed roster; this stage has no --coordinator to check it')
    return
  }
  try {
    const body = await checkRoster(
      o.coordinator,
      plan.roster,
      { serial: o.link.serial, publicKey: o.link.identity.publicKey },
      { serial: link.peerSerial, publicKey: link.peerPublicKey },
    )
    log.info(
      `roster ${body.cluster_id}: the coordinator vouches for ${body.members.map((m) => m.serial).join(', ')} (trust ${body.trust_level})`,
    )
  } catch (error) {
    log.error((error as Error).message)
    link.close(error as RosterRefused)
    throw error
  }
}

const samePlan = (a: StagePlan, b: StagePlan) =>
  a.lo === b.lo &&
  a.hi === b.hi &&
  a.numLayers === b.numLayers &&
  a.slots === b.slots &&
  a.maxLen === b.maxLen &&
  a.model === b.model

async function load(
  o: RunStageOptions,
  link: SealedLink,
  plan: StagePlan,
): Promise<{ plan: StagePlan; stage: ModelStage; node: StageNode }> {
  if (!isSafeName(plan.model) || plan.model.includes('/'))
    throw new DbcError('E_PLAN', `the head named its model ${JSON.stringify(plan.model)}, which is not a folder name`)
  const dir = o.modelDir ?? receivedModelDir(plan.model)
  log.info(
    `rank ${o.rank}: layers [${plan.lo}, ${plan.hi}) of ${plan.numLayers}; checking the files of ${dir} against the head's signed manifest`,
  )
  let lastSaid = 0
  const got = await receiveShards(link, {
    dir,
    lo: plan.lo,
    hi: plan.hi,
    first: plan.lo === 0,
    last: plan.hi === plan.numLayers,
    headKey: link.peerPublicKey,
    onProgress: (p) => {
      if (Date.now() - lastSaid < 2000) return
      lastSaid = Date.now()
      const eta = p.etaSeconds === null ? '' : `, ${Math.ceil(p.etaSeconds)} s left`
      log.info(
        `receiving ${p.file}: ${(p.bytes / 1024 ** 2).toFixed(0)} of ${(p.total / 1024 ** 2).toFixed(0)} MiB at ${(p.rate / 1024 ** 2).toFixed(1)} MiB/s${eta}`,
      )
    },
  })
  log.info(
    got.received.length
      ? `received ${got.received.length} file(s), ${(got.bytes / 1024 ** 2).toFixed(1)} MiB, each verified by its hash`
      : `every file was here already, verified by its hash`,
  )
  const stage = ModelStage.load(dir, o.backend, { lo: plan.lo, hi: plan.hi, slots: plan.slots, maxLen: plan.maxLen })
  if (stage.config.numLayers !== plan.numLayers) {
    stage.close()
    throw new DbcError(
      'E_PLAN',
      `this node's model has ${stage.config.numLayers} layers, the head's ${plan.numLayers}`,
      'serve the same model on every node, or let the head send it (no --model on stages)',
    )
  }
  return { plan, stage, node: new StageNode({ rank: o.rank, peers: o.peers, stage, link: o.link }) }
}
