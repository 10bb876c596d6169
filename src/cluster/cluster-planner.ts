/** The head's side of joining (docs/cluster.md §Joining): every stage dials the head's port on a control link and says
 * how much memory it offers; once all have, the head weighs the checkpoint (checkpointFootprint), plans the layers,
 * answers each stage with its range and the KV geometry, and then serves each stage the files of its layers over that
 * same sealed link (model distribution). A stage that joins again later (it restarted) gets the same answer. */
import { consola } from 'consola'
import { freemem } from 'node:os'
import { chipName, osVersion } from '../trust/machine-info.ts'
import { fingerprint } from '../trust/identity.ts'
import type { Manifest } from '../distribution/manifest.ts'
import { serveShards } from '../distribution/shard-transfer.ts'
import { LinkError } from '../link/errors.ts'
import { FrameType } from '../link/frames.ts'
import type { SealedLink } from '../link/tcp-link.ts'
import type { Identity } from '../trust/identity.ts'
import { expectSender, FrameMismatch, HEAD_RANK } from './frame-header.ts'
import { decodeJoin, encodePlan, type JoinMessage, type PlanMessage } from './join-messages.ts'
import { decodeNodeHealth, type NodeHealth } from './node-health.ts'
import type { PressureLevel } from './memory-pressure.ts'
import { planLayers, type LayerPlan, type ModelFootprint } from './plan-layers.ts'
import type { RoleListener } from './role-listener.ts'
import { encodeStop, type StopMessage } from './stop-message.ts'

const log = consola.withTag('cluster')

/** How long a control link has to send its join after saying its role. */
const JOIN_TIMEOUT_MS = 10_000

export interface Joined extends JoinMessage {
  serial: string
  link: SealedLink
  /** The stage's clock minus the head's when its join arrived (ms; a few ms of transit included). */
  skewMs: number
}

export interface MemberStatus {
  rank: number
  serial: string | null
  backend: string | null
  layers: [number, number] | null
  usable_bytes: number | null
  weight_bytes: number | null
  kv_bytes: number | null
  headroom_bytes: number | null
  os_version: string | null
  chip: string | null
  /** This node's clock minus the head's, in ms, when it joined (0 for the head). */
  clock_skew_ms: number | null
  /** Free memory now: as of the node's last pong (node-health.ts), or its join before one came (the head: now). */
  free_bytes: number | null
  /** Free memory the node reported when it joined (the head: now). */
  free_bytes_at_join: number | null
  /** As of the last pong: the node's memory pressure, and whether it holds its layers (null before a pong). */
  memory_pressure: PressureLevel | null
  model_loaded: boolean | null
  /** How old free_bytes, memory_pressure and model_loaded are, in ms (0: the head's own; null: no pong yet). */
  health_ms_ago: number | null
  /** The identity key's fingerprint (the key the link's handshake checked against this node's pin). */
  fingerprint: string | null
  /** How the key is trusted: the head's own, or pinned for the node's serial. */
  trust: 'self' | 'pinned' | null
  /** The stage's control link to the head: up, when the head last heard from it, the last ping's round trip. */
  link: { up: boolean; last_heard_ms_ago: number | null; rtt_ms: number | null } | null
}

export interface PlannerOptions {
  listener: RoleListener
  /** Nodes in the cluster (the head included). */
  nodes: number
  head: { serial: string; usableBytes: number; fingerprint: string }
  footprint: ModelFootprint
  split?: readonly number[]
  slots: number
  maxLen: number
  model: string
  onProgress?: (line: string) => void
  /** The head's own live health (its member entry); default: free memory only. */
  health?: () => NodeHealth
}

export class ClusterPlanner {
  readonly #joined = new Map<number, Joined>()
  #all: { resolve: () => void; promise: Promise<void> }
  #plan: LayerPlan | null = null
  #files: { dir: string; manifest: Manifest; identity: Identity } | null = null
  #refusal: { code: string; message: string } | null = null
  /** The coordinator-signed roster (JSON) every plan carries, or '' without a coordinator. */
  #roster = ''
  /** Read once: on a Mac they come from subprocesses, and /health (the dashboard polls it) lists them every time. */
  readonly #headFacts = { osVersion: osVersion(), chip: chipName() }
  /** Every stage has joined: the roster is fixed (a stage that drops now and joins again keeps its place). */
  #complete = false
  /** The cluster is stopping: a stage that joins now is told to stop at once. */
  #stopping: StopMessage | null = null

  constructor(readonly options: PlannerOptions) {
    let resolve!: () => void
    const promise = new Promise<void>((r) => (resolve = r))
    this.#all = { resolve, promise }
    options.listener.handle('control', (link, rank) => this.#control(link, rank))
  }

  get joined(): ReadonlyMap<number, Joined> {
    return this.#joined
  }

  /** Waits for every stage to join, then plans. Throws PlanError on a bad --split; a plan that does not fit is returned
   * (plan.fits false) for the caller to report. */
  async gather(): Promise<LayerPlan> {
    const { nodes, onProgress = () => {} } = this.options
    if (this.#joined.size < nodes - 1)
      onProgress(`waiting for ${nodes - 1 - this.#joined.size} of ${nodes - 1} stages to join`)
    await this.#all.promise
    const ranks = Array.from({ length: nodes }, (_, r) => r)
    return planLayers(
      ranks.map((r) =>
        r === 0
          ? { id: this.options.head.serial, usableBytes: this.options.head.usableBytes }
          : { id: this.#joined.get(r)!.serial, usableBytes: this.#joined.get(r)!.usableBytes },
      ),
      this.options.footprint,
      { split: this.options.split, kv: { sequences: this.options.slots, tokens: this.options.maxLen } },
    )
  }

  /** Sends every stage its range (and the roster, with a coordinator), then serves it the files it lacks from `dir`,
   * signed by `identity`. */
  commit(plan: LayerPlan, files: { dir: string; manifest: Manifest; identity: Identity }, roster = ''): void {
    this.#plan = plan
    this.#files = files
    this.#roster = roster
    for (const [rank, j] of this.#joined) this.#answer(rank, j)
  }

  /** Every member as the head sees it (for /health and `cluster status`): rank, serial, layer range, memory and the
   * plan's weights, KV and headroom, and the health of its control link (the head's own entry has none). */
  members(headBackend: string): MemberStatus[] {
    const plan = this.#plan
    const now = Date.now()
    const headHealth = this.options.health?.() ?? null
    return Array.from({ length: this.options.nodes }, (_, rank) => {
      const j = rank === 0 ? null : this.#joined.get(rank)
      const s = plan?.stages[rank]
      const live = rank === 0 ? (headHealth ? { health: headHealth, at: now } : null) : j ? peerHealth(j.link) : null
      return {
        rank,
        serial: rank === 0 ? this.options.head.serial : (j?.serial ?? null),
        backend: rank === 0 ? headBackend : (j?.backend ?? null),
        layers: s ? [s.lo, s.hi] : null,
        usable_bytes: rank === 0 ? this.options.head.usableBytes : (j?.usableBytes ?? null),
        weight_bytes: s?.weightBytes ?? null,
        kv_bytes: s?.kvBytes ?? null,
        headroom_bytes: s?.headroomBytes ?? null,
        fingerprint: rank === 0 ? this.options.head.fingerprint : j ? fingerprint(j.link.peerPublicKey) : null,
        trust: rank === 0 ? 'self' : j ? 'pinned' : null,
        os_version: rank === 0 ? this.#headFacts.osVersion : (j?.osVersion ?? null),
        chip: rank === 0 ? this.#headFacts.chip : (j?.chip ?? null),
        clock_skew_ms: rank === 0 ? 0 : (j?.skewMs ?? null),
        free_bytes: live?.health.freeBytes ?? (rank === 0 ? freemem() : (j?.freeBytes ?? null)),
        free_bytes_at_join: rank === 0 ? freemem() : (j?.freeBytes ?? null),
        memory_pressure: live?.health.memoryPressure ?? null,
        model_loaded: live?.health.modelLoaded ?? null,
        health_ms_ago: live ? now - live.at : null,
        link:
          rank === 0
            ? null
            : j
              ? {
                  up: !j.link.closed,
                  last_heard_ms_ago: j.link.stats.lastHeardAt ? Date.now() - j.link.stats.lastHeardAt : null,
                  rtt_ms: j.link.stats.rttMs,
                }
              : { up: false, last_heard_ms_ago: null, rtt_ms: null },
      }
    })
  }

  /** Tells every stage to stop (a `stop` frame on its control link, stop-message.ts) and waits until each has closed
   * that link, for at most `timeoutMs`; a stage that joins after this is told to stop at once. Resolves with the ranks
   * that had not stopped in time. */
  async stopStages(message: StopMessage, timeoutMs: number): Promise<number[]> {
    this.#stopping = message
    const late = [...this.#joined].map(([rank, j]) => this.#tellStop(rank, j.link, timeoutMs))
    return (await Promise.all(late)).filter((rank): rank is number => rank !== null)
  }

  /** Null once the stage closed its link (it stopped), or its rank after `timeoutMs`. */
  #tellStop(rank: number, link: SealedLink, timeoutMs: number): Promise<number | null> {
    if (link.closed) return Promise.resolve(null)
    try {
      link.send(FrameType.stop, encodeStop(this.#stopping!), { stage: HEAD_RANK })
    } catch {
      return Promise.resolve(null) // closed meanwhile
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(rank), timeoutMs)
      link.onClose(() => (clearTimeout(timer), resolve(null)))
    })
  }

  /** Tells every stage there is no plan for it (code and message), now and when it joins again. */
  refuse(code: string, message: string): void {
    this.#refusal = { code, message }
    for (const [rank, j] of this.#joined) this.#answer(rank, j)
  }

  #answer(rank: number, j: Joined): void {
    if (j.link.closed) return
    const plan = this.#plan
    let message: PlanMessage
    if (this.#refusal) message = { ok: false, ...this.#refusal }
    else if (plan) {
      const s = plan.stages[rank]!
      message = {
        ok: true,
        lo: s.lo,
        hi: s.hi,
        numLayers: this.options.footprint.numLayers,
        nodes: this.options.nodes,
        slots: this.options.slots,
        maxLen: this.options.maxLen,
        model: this.options.model,
        roster: this.#roster,
      }
    } else return
    j.link.send(FrameType.plan, encodePlan(message), { stage: HEAD_RANK })
    if (message.ok && this.#files) {
      log.info(`rank ${rank} (${j.serial}): layers [${message.lo}, ${message.hi}); its files are offered over the link`)
      serveShards(j.link, this.#files.dir, this.#files.manifest, this.#files.identity, (e) =>
        log.debug(`rank ${rank} verified ${e.file ?? e.sha256}`),
      )
    }
  }

  #control(link: SealedLink, rank: number): void {
    const { nodes } = this.options
    if (rank < 1 || rank >= nodes)
      return link.close(new PlanRefusal(`rank ${rank} is not a stage of this ${nodes}-node cluster`))
    link
      .nextFrame((f) => f.type === FrameType.join, JOIN_TIMEOUT_MS)
      .then((f) => {
        expectSender(f, rank, 'the rank its role announced')
        const join = decodeJoin(f.payload)
        if (join.rank !== rank) throw new PlanRefusal(`the join says rank ${join.rank}, the role said ${rank}`)
        const before = this.#joined.get(rank)
        if (before && before.link !== link) before.link.close()
        this.#joined.set(rank, { ...join, serial: link.peerSerial, link, skewMs: join.clockMs - Date.now() })
        log.info(
          `rank ${rank} joined: ${link.peerSerial}, ${(join.usableBytes / 1024 ** 3).toFixed(1)} GiB usable, ${join.backend} backend`,
        )
        if (this.#stopping) void this.#tellStop(rank, link, 0)
        else if (this.#plan || this.#refusal) this.#answer(rank, this.#joined.get(rank)!)
        else if (this.#joined.size === nodes - 1) {
          this.#complete = true
          this.#all.resolve()
        }
      })
      .catch((error) => {
        log.warn(`control link from ${link.peerSerial}: ${(error as Error).message}`)
        link.close(
          error instanceof PlanRefusal || error instanceof FrameMismatch
            ? error
            : new PlanRefusal((error as Error).message),
        )
      })
    link.onClose(() => {
      if (this.#joined.get(rank)?.link === link && !this.#complete) this.#joined.delete(rank)
    })
  }
}

/** A stage's health from its last pong, or null before one (or when its bytes are not a node health). */
function peerHealth(link: SealedLink): { health: NodeHealth; at: number } | null {
  const pong = link.stats.peerPong
  if (!pong) return null
  try {
    return { health: decodeNodeHealth(pong.payload), at: pong.at }
  } catch {
    return null
  }
}

class PlanRefusal extends LinkError {
  constructor(message: string) {
    super('E_JOIN', message)
  }
}
