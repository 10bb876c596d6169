/** The pipeline ring across machines: node r holds layers [lo, hi), accepts a sealed link from its predecessor and keeps
 * one to its successor (the last node's successor is the head). The head (rank 0) runs the scheduler: each step it runs
 * its own layers and sends the composition with the activations along the ring; the last stage samples the rows that need
 * a token (or returns their logits, for parity checks). A dead link fails the steps in flight at once and marks the
 * cluster degraded until it is back; the rebuilt ring re-opens every slot the head holds, and the scheduler re-prefills. */
import { consola } from 'consola'
import { DbcError } from '../errors.ts'
import type { Pipeline } from '../model/pipeline.ts'
import type { RowSampling, SampledToken } from '../model/sampler.ts'
import type { StageInput } from '../model/shard.ts'
import type { StageRunner } from '../model/stage-runner.ts'
import { LinkError } from '../link/errors.ts'
import { FrameType } from '../link/frames.ts'
import { ReconnectingLink } from '../link/reconnecting-link.ts'
import type { LinkFrame, LinkOptions, SealedLink } from '../link/tcp-link.ts'
import { expectSender, expectStep, FrameMismatch } from './frame-header.ts'
import { announceRole, RoleListener } from './role-listener.ts'
import {
  decodeResult,
  decodeStep,
  encodeResult,
  encodeStep,
  type StepMessage,
  type StepResult,
} from './step-messages.ts'

const log = consola.withTag('cluster')

export interface RingAddress {
  host: string
  port: number
}

export interface RingOptions {
  rank: number
  peers: readonly RingAddress[]
  /** This node's layers: on a compute thread when serving (compute/stage-thread.ts), so hops and heartbeats keep moving
   * while a step computes; steps reach it, and come back, in the order they were sent. */
  stage: StageRunner
  link: LinkOptions & { backoffMs?: number }
  /** The node's listening port when it already exists (the head opens it to plan before it loads); else one is opened. */
  listener?: RoleListener
  /** On the head: where each step's time went — every stage's compute, in rank order, and the rest (the hops:
   * sealing, transfer, waiting), in seconds. */
  onStepTiming?: (timing: StepTiming) => void
}

export interface StepTiming {
  stageSeconds: number[]
  hopSeconds: number
  /** One row per sequence and no prompt chunk: a pure decode step. */
  decode: boolean
}

/** What every node runs: the listener for its predecessor and the reconnecting link to its successor. */
class RingNode {
  readonly successor: ReconnectingLink
  readonly listener: RoleListener
  inbound: SealedLink | null = null
  /** The rank whose frames arrive on the inbound link: the stage every frame there must carry. */
  readonly predecessor: number
  readonly #inboundListeners: ((link: SealedLink) => void)[] = []

  constructor(readonly options: RingOptions) {
    const { rank, peers } = options
    const me = peers[rank]!
    const next = peers[(rank + 1) % peers.length]!
    const predecessor = (this.predecessor = (rank + peers.length - 1) % peers.length)
    this.listener = options.listener ?? new RoleListener(me.host, me.port, options.link)
    this.listener.handle('ring', (link, from) => {
      if (from !== predecessor)
        return link.close(
          new LinkError('E_ROLE', `rank ${from} dialed rank ${rank} as its ring successor; rank ${predecessor} is`),
        )
      this.inbound?.close()
      this.inbound = link
      log.info(`rank ${rank}: predecessor ${link.peerSerial} connected`)
      this.#inboundListeners.forEach((l) => l(link))
    })
    this.successor = new ReconnectingLink(next.host, next.port, options.link)
    this.successor.on('connected', (link) => announceRole(link, 'ring', rank))
    this.successor.start()
  }

  onInbound(listener: (link: SealedLink) => void): void {
    this.#inboundListeners.push(listener)
  }

  stop(): void {
    this.successor.stop()
    this.inbound?.close()
    this.listener.stop()
  }
}

/** A stage that is not the head: runs each step it receives and passes it on. */
export class StageNode {
  readonly #node: RingNode
  /** Slots the head opened on this stage since it started: a step for any other slot is refused, so a stage that
   * restarted with an empty cache can never silently decode against KV it does not have. */
  readonly #held = new Set<number>()

  constructor(readonly options: RingOptions) {
    if (options.rank === 0) throw new DbcError('E_RING', 'rank 0 is the head; run it with HeadPipeline')
    this.#node = new RingNode(options)
    this.#node.onInbound((link) => link.onFrame((f) => f.type === FrameType.step && this.#run(f, link)))
    // a step lost past this stage would leave the head waiting: a dropped successor drops the predecessor too, and so
    // on back to the head, whose pending steps then fail with the first hop's reason
    let successorUp = false
    this.#node.successor.onState((s) => {
      if (s.state === 'connected') return void (successorUp = true)
      if (!successorUp) return // still forming: nothing was in flight
      successorUp = false
      this.#node.inbound?.close(
        new LinkError('E_SUCCESSOR_LOST', `rank ${options.rank}'s successor is unreachable: ${s.reason}`),
      )
    })
  }

  /** Checks a step frame and books its slots now, in arrival order; the step itself runs on the stage (in order with
   * the steps before it) and its result goes on when it is done. */
  #run(f: LinkFrame, from: SealedLink): void {
    const { stage, rank } = this.options
    let step: StepMessage
    try {
      expectSender(f, this.#node.predecessor, 'predecessor')
      step = decodeStep(f.payload)
      expectStep(f, step.stepId)
      for (const slot of step.closeSlots) (releaseQuietly(stage, slot), this.#held.delete(slot))
      for (const slot of step.openSlots) (claimQuietly(stage, slot), this.#held.add(slot))
      for (const slot of step.slots) {
        if (!this.#held.has(slot))
          throw new DbcError('E_KV_SLOT', `slot ${slot} was never opened on this stage (it restarted?)`)
      }
    } catch (error) {
      return this.#refuse(error, from)
    }
    void this.#compute(step).catch((error) => this.#refuse(error, from))
  }

  async #compute(step: StepMessage): Promise<void> {
    const { stage, rank } = this.options
    const logitRows = step.logitRows.length ? step.logitRows : Int32Array.of(0)
    const input = { hidden: step.hidden, tokens: step.tokens, slots: step.slots, positions: step.positions }
    if (stage.range.last) {
      // sampled where the logits are, unless the head asked for the logits themselves
      const sampling = step.sampling ? (step.logitRows.length ? step.sampling : []) : undefined
      const out = await stage.run({ ...input, logitRows, output: 'logits' }, sampling)
      const stageMicros = Int32Array.from([...step.stageMicros, out.micros])
      const result: StepResult = out.tokens
        ? { stepId: step.stepId, stageMicros, tokens: out.tokens }
        : { stepId: step.stepId, stageMicros, logits: out.logits!, vocab: stage.config.vocabSize }
      this.#node.successor.send(FrameType.activation, encodeResult(result), header(rank, step.stepId))
    } else {
      const out = await stage.run({ ...input, logitRows })
      const stageMicros = Int32Array.from([...step.stageMicros, out.micros])
      this.#node.successor.send(
        FrameType.step,
        encodeStep({ ...step, tokens: undefined, hidden: out.hidden, stageMicros }),
        header(rank, step.stepId),
      )
    }
  }

  #refuse(error: unknown, from: SealedLink): void {
    const { rank } = this.options
    if (error instanceof FrameMismatch) {
      log.error(`rank ${rank}: refused a frame: ${error.message}`)
      return from.close(error)
    }
    // a step this stage cannot run poisons the ring: drop the link so the head fails the step at once
    log.error(`rank ${rank}: step failed: ${(error as Error).message}`)
    const hung = error instanceof DbcError && error.code === 'E_COMPUTE_HUNG'
    from.close(
      new LinkError(
        hung ? 'E_COMPUTE_HUNG' : 'E_STEP',
        `stage ${rank} could not run a step: ${(error as Error).message}`,
      ),
    )
  }

  stop(): void {
    this.#node.stop()
  }
}

/** The head's view of the ring as a Pipeline: the scheduler drives it exactly like a local one. */
export class HeadPipeline implements Pipeline {
  readonly #node: RingNode
  readonly #pending = new Map<
    number,
    { resolve: (r: StepResult) => void; reject: (e: Error) => void; startedAt: number; decode: boolean }
  >()
  /** Steps failed while the last stage's link stayed up: their results may still come back, and are dropped. */
  readonly #abandoned = new Set<number>()
  #nextStep = 1
  /** Every slot the head holds, and those to open / close on the stages with the next step. */
  readonly #open = new Set<number>()
  #opens: number[] = []
  #closes: number[] = []
  #degradedListeners: ((reason: string | null) => void)[] = []
  #degraded: string | null = 'ring not formed yet'
  #stalledListeners: ((reason: string | null) => void)[] = []
  #stalled: string | null = null
  /** Set by halt (the cluster is stopping): every step fails with it, and a lost link no longer degrades the ring. */
  #halted: DbcError | null = null
  /** A running average of step wall times (ms): a step is overdue past a ping interval plus four of these. */
  #typicalStepMs = 0
  readonly #watchdog: ReturnType<typeof setInterval>

  constructor(readonly options: RingOptions) {
    if (options.rank !== 0) throw new DbcError('E_RING', 'HeadPipeline runs on rank 0')
    if (!options.stage.range.first) throw new DbcError('E_RING', 'the head must hold the first layers')
    this.#node = new RingNode(options)
    this.#watchdog = setInterval(() => this.#checkOverdue(), Math.max(50, Math.min(1000, this.#pingMs / 4)))
    this.#watchdog.unref?.()
    this.#node.onInbound((link) => {
      link.onFrame((f) => f.type === FrameType.activation && this.#result(f, link))
      link.onClose((reason) =>
        this.#down(`the last stage's link closed: ${reason ? `${reason.code}: ${reason.message}` : 'closed'}`),
      )
      this.#check()
    })
    this.#node.successor.onState((s) =>
      s.state === 'connected' ? this.#check() : this.#down(`stage 1 unreachable: ${s.reason}`),
    )
  }

  get vocabSize(): number {
    return this.options.stage.config.vocabSize
  }
  get maxLen(): number {
    return this.options.stage.cache.maxLen
  }
  get degraded(): string | null {
    return this.#degraded
  }

  onDegraded(listener: (reason: string | null) => void): void {
    this.#degradedListeners.push(listener)
  }

  /** A step overdue (reason), or none any more (null): the link may still be up, the stage frozen or swamped. */
  onStalled(listener: (reason: string | null) => void): void {
    this.#stalledListeners.push(listener)
  }

  get #pingMs(): number {
    return this.options.link.pingIntervalMs ?? 5000
  }

  #checkOverdue(): void {
    let oldest = Infinity
    for (const p of this.#pending.values()) oldest = Math.min(oldest, p.startedAt)
    const age = performance.now() - oldest
    const budget = this.#pingMs + 4 * this.#typicalStepMs
    const reason =
      this.#pending.size && age > budget
        ? `a step has waited ${(age / 1000).toFixed(1)} s for the stages (more than ${(budget / 1000).toFixed(1)} s): a stage is not answering`
        : null
    if ((reason === null) === (this.#stalled === null)) return
    this.#stalled = reason
    if (reason) log.warn(`cluster degraded: ${reason}`)
    else log.info('the overdue step was answered: the cluster is ok again')
    this.#stalledListeners.forEach((l) => l(reason))
  }

  openSequence(): number {
    const slot = this.options.stage.cache.allocate()
    this.#open.add(slot)
    this.#opens.push(slot)
    return slot
  }

  closeSequence(slot: number): void {
    this.options.stage.cache.release(slot)
    this.#open.delete(slot)
    this.#opens = this.#opens.filter((s) => s !== slot)
    this.#closes.push(slot)
  }

  async step(input: StageInput): Promise<Float32Array> {
    const r = await this.#send(input)
    if (!r.logits) throw new DbcError('E_RING', 'the last stage answered a logits step with tokens')
    return r.logits
  }

  async sample(input: StageInput, rows: readonly RowSampling[]): Promise<SampledToken[]> {
    const r = await this.#send(input, rows)
    if (!r.tokens || r.tokens.length !== rows.length)
      throw new DbcError(
        'E_RING',
        `the last stage answered ${r.tokens?.length ?? 'logits'} for ${rows.length} sampled rows`,
      )
    return r.tokens
  }

  async #send(input: StageInput, sampling?: readonly RowSampling[]): Promise<StepResult> {
    if (this.#halted) throw this.#halted
    if (this.#degraded)
      throw new DbcError('E_DEGRADED', `cluster degraded: ${this.#degraded}`, 'retry after the cluster recovers')
    const { stage, rank } = this.options
    const t0 = performance.now()
    const local = await stage.run({ ...input, logitRows: undefined })
    const headMicros = local.micros
    const stepId = this.#nextStep++
    const message = encodeStep({
      stepId,
      slots: input.slots,
      positions: input.positions,
      logitRows: input.logitRows ?? Int32Array.from(input.slots.keys()),
      sampling: sampling ? [...sampling] : undefined,
      closeSlots: Int32Array.from(this.#closes),
      openSlots: Int32Array.from(this.#opens),
      stageMicros: Int32Array.of(headMicros),
      hiddenSize: stage.config.hiddenSize,
      hidden: local.hidden,
    })
    const decode = new Set(input.slots).size === input.slots.length
    const result = new Promise<StepResult>((resolve, reject) =>
      this.#pending.set(stepId, { resolve, reject, startedAt: t0, decode }),
    )
    try {
      this.#node.successor.send(FrameType.step, message, header(rank, stepId)) // throws at once when the link is down
    } catch (error) {
      this.#pending.delete(stepId)
      throw error
    }
    this.#opens = []
    this.#closes = []
    return result
  }

  /** Members as seen from the head, for /health and `cluster status`. */
  status() {
    return {
      degraded: this.#degraded ?? this.#stalled,
      successor: this.#node.successor.link ? { serial: this.#node.successor.link.peerSerial, up: true } : { up: false },
      predecessor:
        this.#node.inbound && !this.#node.inbound.closed
          ? { serial: this.#node.inbound.peerSerial, up: true }
          : { up: false },
      steps_in_flight: this.#pending.size,
    }
  }

  stop(): void {
    clearInterval(this.#watchdog)
    this.#node.stop()
  }

  /** The cluster is stopping (cluster-stop.ts): the steps in flight and every later one fail with `error` — not a
   * resumable loss, so the scheduler ends their requests with it instead of waiting for the ring to return. */
  halt(error: DbcError): void {
    this.#halted = error
    for (const [stepId, p] of this.#pending) (p.reject(error), this.#abandoned.add(stepId))
    this.#pending.clear()
  }

  #result(f: LinkFrame, from: SealedLink): void {
    let r: StepResult
    try {
      expectSender(f, this.#node.predecessor, 'the last stage')
      r = decodeResult(f.payload)
      expectStep(f, r.stepId)
      if (!this.#pending.has(r.stepId)) {
        if (this.#abandoned.delete(r.stepId)) return log.debug(`dropped the late result of failed step ${r.stepId}`)
        throw new FrameMismatch(`result for step ${r.stepId}, which is not pending`)
      }
    } catch (error) {
      // closing the link fails every pending step at once (#down), with this reason
      return from.close(
        error instanceof LinkError
          ? error
          : new LinkError('E_STEP', `the last stage's result is unreadable: ${(error as Error).message}`),
      )
    }
    const waiter = this.#pending.get(r.stepId)!
    this.#pending.delete(r.stepId)
    const wallMs = performance.now() - waiter.startedAt
    // an overdue step says nothing of what steps take: only ordinary ones feed the average
    if (!this.#stalled) this.#typicalStepMs = this.#typicalStepMs ? 0.9 * this.#typicalStepMs + 0.1 * wallMs : wallMs
    if (this.options.onStepTiming) {
      const stageSeconds = [...r.stageMicros].map((us) => us / 1e6)
      const wall = wallMs / 1000
      this.options.onStepTiming({
        stageSeconds,
        hopSeconds: Math.max(0, wall - stageSeconds.reduce((a, b) => a + b, 0)),
        decode: waiter.decode,
      })
    }
    if (this.#stalled) this.#checkOverdue() // the overdue step came back: say so now, not at the next tick
    waiter.resolve(r)
  }

  #down(reason: string): void {
    if (this.#halted) return // stopping: the stages are meant to go
    const failure = new DbcError(
      'E_STAGE_LOST',
      `a stage is unreachable: ${reason}`,
      'the request failed; the cluster reports degraded until the stage returns',
    )
    for (const [stepId, p] of this.#pending) (p.reject(failure), this.#abandoned.add(stepId))
    this.#pending.clear()
    // bounded: only results still in the ring can come back, a few per stage
    for (const stepId of this.#abandoned) {
      if (this.#abandoned.size <= ABANDONED_KEPT) break
      this.#abandoned.delete(stepId)
    }
    if (this.#degraded === reason) return
    this.#degraded = reason
    log.warn(`cluster degraded: ${reason}`)
    this.#degradedListeners.forEach((l) => l(reason))
  }

  #check(): void {
    const up =
      this.#node.successor.link && !this.#node.successor.link.closed && this.#node.inbound && !this.#node.inbound.closed
    if (!up || this.#degraded === null) return
    // a stage that came back has an empty cache: open every slot the head holds again (the scheduler re-prefills them)
    this.#opens = [...this.#open]
    this.#degraded = null
    log.info('ring formed: every hop sealed')
    this.#degradedListeners.forEach((l) => l(null))
  }
}

/** Late results of failed steps remembered (far more than a ring holds in flight). */
const ABANDONED_KEPT = 1024

/** docs/protocol.md §Sealed frames: a ring frame's header carries its sender's rank and the step it belongs to. */
const header = (rank: number, stepId: number) => ({ stage: rank, requestId: BigInt(stepId) })

function releaseQuietly(stage: StageRunner, slot: number) {
  try {
    stage.cache.release(slot)
  } catch {
    // already free: this stage restarted since the slot was opened
  }
}
function claimQuietly(stage: StageRunner, slot: number) {
  try {
    stage.cache.claim(slot)
  } catch {
    // already held: a close for it was lost with a previous link; the head's view wins
  }
}
