/** What `dbcluster serve --peers … --rank N` (N ≥ 1) runs: join the head, receive the files of the layers the plan
 * gives this node (those already here and verified are kept), load only those layers, and serve them in the ring. When
 * the head goes away the stage keeps its layers and joins again; a new plan with another range reloads. A `stop` from
 * the head ends it (`cluster stop`), and so does a head gone for longer than the orphan timeout. */
import { consola } from 'consola'
import { join } from 'node:path'
import { DbcError } from '../errors.ts'
import { isSafeName } from '../distribution/manifest.ts'
import { receiveShards } from '../distribution/shard-transfer.ts'
import { FrameType } from '../link/frames.ts'
import type { LinkFrame, SealedLink } from '../link/tcp-link.ts'
import { StageThread } from '../compute/stage-thread.ts'
import { stateDir } from '../state-dir.ts'
import { signAttestation } from '../trust/attestation.ts'
import { chipName, machineFacts, osVersion } from '../trust/machine-info.ts'
import type { Backend } from '../tensor/backend.ts'
import type { CoordinatorClient } from '../coordinator/client.ts'
import { checkRoster, type RosterRefused } from './cluster-roster.ts'
import { FrameMismatch, HEAD_RANK, senderMismatch } from './frame-header.ts'
import { encodeNodeHealth, NodeHealthSampler } from './node-health.ts'
import { answerLogs } from './log-messages.ts'
import { decodeStop } from './stop-message.ts'
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
  /** How long the head may be gone (its control link closed, no new one) before this stage exits, in ms; 0: for ever. */
  orphanTimeoutMs?: number
}

/** The head has been gone longer than the orphan timeout: the stage ends with this (exit 1, one line saying why). */
export class OrphanedStage extends DbcError {}

/** Where a stage without --model keeps what the head sends it. */
export const receivedModelDir = (model: string) => join(stateDir(), 'models', 'received', model)

export async function runStage(options: RunStageOptions): Promise<void> {
  let current: { plan: StagePlan; stage: StageThread; node: StageNode } | null = null
  // ends on SIGINT / SIGTERM (options.signal) or on the head's stop frame
  const ending = new AbortController()
  if (options.signal.aborted) ending.abort()
  options.signal.addEventListener('abort', () => ending.abort(), { once: true })
  const sampler = new NodeHealthSampler()
  // every pong this stage sends carries its health (docs/protocol.md §Health), on the control link and the ring's
  const o: RunStageOptions = {
    ...options,
    signal: ending.signal,
    link: { ...options.link, pongPayload: () => encodeNodeHealth(sampler.sample(current !== null)) },
  }
  const stopped = new Promise<void>((done) => ending.signal.addEventListener('abort', () => done(), { once: true }))
  /** When the control link to the head closed (null: this stage has it, or never had one). */
  let headLostAt: number | null = null
  try {
    while (!o.signal.aborted) {
      const giveUp = new AbortController()
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
        orphaned(o, headLostAt, giveUp.signal),
      ]).finally(() => giveUp.abort())
      if (!joined) break
      const { link, plan } = joined
      headLostAt = null
      link.onFrame((f) => f.type === FrameType.stop && onStop(f, link, ending))
      link.onFrame((f) => f.type === FrameType.logsRequest && answerLogsQuietly(f, link))
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
      if (o.signal.aborted) {
        // stop the ring before the control link closes: the head takes that close as this stage's answer
        current?.node.stop()
        current?.stage.close()
        current = null
      }
      link.close()
      if (!o.signal.aborted) {
        headLostAt = Date.now()
        const limit = o.orphanTimeoutMs ? ` (for at most ${seconds(o.orphanTimeoutMs)}, --orphan-timeout)` : ''
        log.warn(`the head closed the control link; joining again when it returns${limit}`)
      }
    }
  } finally {
    ending.abort() // a join still trying (this stage was orphaned) gives up too
    current?.node.stop()
    current?.stage.close()
  }
}

/** `dbcluster cluster logs` through the head: this stage's lines (a malformed request is logged, not fatal). */
function answerLogsQuietly(f: LinkFrame, link: SealedLink): void {
  try {
    answerLogs(f, link)
  } catch (error) {
    log.warn(`the head's logs request could not be answered: ${(error as Error).message}`)
  }
}

/** The head's `stop`: this stage finishes (the step it runs completes first: frames are handled one at a time). */
function onStop(f: LinkFrame, link: SealedLink, ending: AbortController): void {
  const mismatch = senderMismatch(f, HEAD_RANK, 'the head')
  if (mismatch) return link.close(mismatch)
  let reason: string
  try {
    const stop = decodeStop(f.payload)
    reason = `${stop.reason}${stop.now ? ', at once' : ''}`
  } catch (error) {
    return link.close(new FrameMismatch(`stop frame: ${(error as Error).message}`))
  }
  log.info(`the head asked this stage to stop (${reason}): stopping`)
  ending.abort()
}

/** Never settles while the head is here or the timeout is off; rejects once it has been gone for the timeout. */
function orphaned(o: RunStageOptions, lostAt: number | null, done: AbortSignal): Promise<never> {
  const limit = o.orphanTimeoutMs ?? 0
  if (lostAt === null || limit <= 0) return new Promise<never>(() => {})
  return new Promise<never>((_, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new OrphanedStage(
            'E_ORPHANED',
            `the head at ${o.peers[0]!.host}:${o.peers[0]!.port} has been gone for ${seconds(limit)} (--orphan-timeout): this stage stops`,
            'start the head again, then this stage; or give the stage --orphan-timeout 0 to wait for it for ever',
          ),
        ),
      Math.max(0, lostAt + limit - Date.now()),
    )
    done.addEventListener('abort', () => clearTimeout(timer), { once: true })
  })
}

const seconds = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`)

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
): Promise<{ plan: StagePlan; stage: StageThread; node: StageNode }> {
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
  // on a compute thread: the ring's hops and heartbeats keep moving while a step computes
  const stage = await StageThread.start({
    dir,
    backend: { name: o.backend.name, threads: o.backend.threads, precision: o.backend.precision },
    lo: plan.lo,
    hi: plan.hi,
    slots: plan.slots,
    maxLen: plan.maxLen,
  })
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
