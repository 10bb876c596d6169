/** Continuous batching at the head: requests join and leave the running batch at any step; each step carries every
 * decoding row, then prompt chunks while the step's token budget lasts (several prompts may share a step), so a long
 * prompt never stalls the others for longer than a budget's worth of rows. The running batch is split into
 * micro-batches that step independently, so a pipeline of N stages can keep N steps in flight. Tokens are sampled where
 * the logits are (the last stage); the head keeps each request's random stream and sends one uniform draw per row.
 * A request whose step is lost with a stage is suspended, not failed: when the ring is rebuilt the head re-prefills its
 * prompt plus the tokens already sent, and the stream continues where it stopped. A request with a constraint (a JSON
 * Schema, a grammar) has a matcher per choice here at the head: each step sends the tokens it allows with the row's
 * sampling, the matcher accepts the sampled token, and the choice ends ('stop') when its grammar terminates. */
import { DbcError, UsageError } from '../errors.ts'
import type { Constraint, ConstraintCompiler, ConstraintMatcher } from './constraint.ts'
import { IncrementalDetokenizer } from './detokenizer.ts'
import type { ServingMetrics } from './metrics.ts'
import type { Pipeline } from './pipeline.ts'
import {
  logitBiasFor,
  rowSampling,
  seededRandom,
  type LogitAdjustments,
  type SampledToken,
  type SamplingParams,
  type TokenLogprob,
} from '../model/sampler.ts'
import { StopMatcher } from './stop.ts'

export type { TokenLogprob }

export class QueueFullError extends DbcError {
  constructor(limit: number) {
    super('E_QUEUE_FULL', `the queue is full (${limit} requests waiting)`, 'retry later')
  }
}
export class DegradedError extends DbcError {
  constructor(reason: string) {
    super('E_DEGRADED', `cluster degraded: ${reason}`, 'retry after the cluster recovers')
  }
}
export class RequestTimeoutError extends DbcError {
  constructor(ms: number) {
    super('E_TIMEOUT', `the request did not finish within ${Math.round(ms / 1000)} s`)
  }
}
export class ContextLengthError extends DbcError {}

export interface ScheduledRequest {
  promptIds: readonly number[]
  maxTokens: number
  sampling: SamplingParams
  /** logit bias, presence and frequency penalties (absent: none) */
  adjustments?: LogitAdjustments
  stop?: readonly string[]
  eosTokenIds: readonly number[]
  /** Report log-probabilities: 0 = of the chosen token only, k = also the k most likely. */
  logprobs?: number
  /** Only tokens this compiled grammar allows are sampled (engine/constraint.ts); absent: unconstrained. */
  constraint?: Constraint
  signal?: AbortSignal
  timeoutMs?: number
  /** Whose prefix-cache blocks this prompt may reuse (absent: the one shared namespace). */
  cacheTenant?: string
}

/** One request as GET /queue shows it: no prompt or completion text, only where it stands. */
export interface QueueEntry {
  id: number
  state: 'waiting' | 'prefill' | 'decode' | 'suspended'
  age_ms: number
  prompt_tokens: number
  generated_tokens: number
}

export type FinishReason = 'stop' | 'length'

export type RequestEvent =
  | { type: 'token'; id: number; text: string; logprob?: number; topLogprobs?: TokenLogprob[] }
  | { type: 'text'; text: string }
  | {
      type: 'done'
      finishReason: FinishReason
      text: string
      tokens: number[]
      promptTokens: number
      /** Prompt tokens whose KV came from the prefix cache (absent: the pipeline keeps none). */
      cachedTokens?: number
    }
  | { type: 'error'; error: DbcError }

export interface SchedulerOptions {
  maxBatch: number
  maxQueue: number
  /** The most prompt tokens one request prefills in a step. */
  prefillChunk: number
  /** The most rows one step computes, decoding rows and prompt chunks together (--max-step-tokens); given, several
   * prompts share a step while it lasts. Absent: maxBatch + prefillChunk, room for every decoding row beside one whole
   * chunk, and one prompt a step. Never below maxBatch, so every running request decodes in every step. */
  maxStepTokens?: number
  microBatches: number
  requestTimeoutMs: number
  /** How long a request whose stage was lost waits for the ring to be rebuilt before it fails. */
  resumeWindowMs: number
  /** How many times one request may be resumed before it fails (a step that keeps failing is not retried forever). */
  maxResumes: number
}

export const DEFAULT_SCHEDULER: SchedulerOptions = {
  maxBatch: 8,
  maxQueue: 64,
  prefillChunk: 256,
  microBatches: 1,
  requestTimeoutMs: 300_000,
  resumeWindowMs: 15_000,
  maxResumes: 3,
}

/** Failures that come from the ring (a stage or a hop went away), after which a request can resume by re-prefilling. */
const RESUMABLE = new Set([
  'E_STAGE_LOST',
  'E_PEER_UNAVAILABLE',
  'E_DEGRADED',
  'E_LINK_CLOSED',
  'E_HEARTBEAT',
  'E_STEP_REMOTE',
])
export const isResumable = (error: unknown): boolean => error instanceof DbcError && RESUMABLE.has(error.code)

interface Running {
  id: number
  request: ScheduledRequest
  emit: (event: RequestEvent) => void
  slot: number
  /** Tokens of `history` already in the KV cache on every stage (0 again after a resume). */
  cached: number
  /** Prompt tokens the prefix cache gave its first prefill. */
  prefixHit?: number
  /** Completion tokens sent to the client. */
  tokens: number[]
  /** How often each completion token occurred (what presence and frequency penalties look at). */
  counts: Map<number, number>
  /** The choice's state in its constraint's grammar (made at its first step; null: none yet or unconstrained). */
  matcher: ConstraintMatcher | null
  /** Prompt, then every completion token: what the KV cache must hold. */
  history: number[]
  random: () => number
  /** The uniform draw for the token being computed, kept when a step is lost so a resumed request draws the same. */
  pendingU: number | null
  /** When its step was lost (null: running normally). */
  suspendedAt: number | null
  resumes: number
  detok: IncrementalDetokenizer
  stops: StopMatcher
  text: string
  arrived: number
  lastTokenAt: number
  deadline: number
  cancelled: 'client' | 'timeout' | null
}

/** The step's token budget these options give, refused when it cannot hold a decoding row per running request. */
export function stepBudget(o: Pick<SchedulerOptions, 'maxBatch' | 'prefillChunk' | 'maxStepTokens'>): number {
  const budget = o.maxStepTokens ?? o.maxBatch + o.prefillChunk
  if (budget < o.maxBatch)
    throw new UsageError(
      `--max-step-tokens ${budget} is below --max-batch ${o.maxBatch}`,
      'a step must hold a decoding row for every running request: raise --max-step-tokens or lower --max-batch',
    )
  return budget
}

export class Scheduler {
  readonly options: SchedulerOptions
  readonly maxStepTokens: number
  readonly #queue: { id: number; request: ScheduledRequest; emit: (e: RequestEvent) => void; arrived: number }[] = []
  readonly #groups: Running[][]
  readonly #inFlight: (Promise<void> | null)[]
  #driving = false
  #nextId = 1
  #degraded: string | null = null
  /** Bumped when the ring goes down: a step begun in an older epoch has no effect when it returns. */
  #epoch = 0
  #closed = false
  /** Compiles requests' constraints against this model's tokenizer (null: constrained decoding is not offered). */
  constraints: ConstraintCompiler | null = null

  constructor(
    readonly pipeline: Pipeline,
    private readonly decode: (ids: number[]) => string,
    options: Partial<SchedulerOptions> = {},
    private readonly metrics?: ServingMetrics,
  ) {
    this.options = { ...DEFAULT_SCHEDULER, ...options }
    this.maxStepTokens = stepBudget(this.options)
    this.#groups = Array.from({ length: this.options.microBatches }, () => [])
    this.#inFlight = this.#groups.map(() => null)
  }

  get queueDepth(): number {
    return this.#queue.length
  }

  /** Every request waiting or running now, oldest first, without its text (GET /queue). */
  requests(now = performance.now()): QueueEntry[] {
    const waiting = this.#queue.map((q) => ({
      id: q.id,
      state: 'waiting' as const,
      age_ms: Math.round(now - q.arrived),
      prompt_tokens: q.request.promptIds.length,
      generated_tokens: 0,
    }))
    const running = this.#groups.flat().map((r) => ({
      id: r.id,
      state:
        r.suspendedAt !== null
          ? ('suspended' as const)
          : r.cached < r.request.promptIds.length
            ? ('prefill' as const)
            : ('decode' as const),
      age_ms: Math.round(now - r.arrived),
      prompt_tokens: r.request.promptIds.length,
      generated_tokens: r.tokens.length,
    }))
    return [...running, ...waiting].sort((a, b) => b.age_ms - a.age_ms || a.id - b.id)
  }
  get running(): number {
    return this.#groups.reduce((n, g) => n + g.length, 0)
  }
  /** Why new requests are refused now: the ring is down, or a step is overdue (a stage not answering). */
  get degraded(): string | null {
    return this.#degraded ?? this.#stalled
  }

  #stalled: string | null = null
  /** A step is overdue (a frozen stage): new requests are refused (503) and /health says degraded, while the running
   * ones keep waiting for it — a stage that resumes answers the step, and nothing has to start over. */
  setStalled(reason: string | null): void {
    this.#stalled = reason
  }

  /** While degraded, new requests are refused at once (the API answers 503 with Retry-After) and no step starts; when
   * the ring is back, suspended requests resume. `recoverable: false` (nothing will bring the lost part back, as with a
   * tensor-parallel rank): running requests fail at once with the reason instead of waiting out the resume window. */
  setDegraded(reason: string | null, options: { recoverable?: boolean } = {}): void {
    const was = this.#degraded
    this.#degraded = reason
    if (reason && options.recoverable === false) {
      for (const group of this.#groups)
        for (const r of [...group])
          this.#fail(
            group,
            r,
            new DbcError(
              'E_STAGE_LOST',
              `a stage was lost: ${reason}`,
              'retry the request once the cluster reports ok at /health',
            ),
          )
    } else if (reason && !was) {
      // a stage may have restarted with an empty cache: every running request starts its cache over once the ring is back
      this.#epoch++
      for (const group of this.#groups)
        for (const r of [...group]) this.#suspend(group, r, new DbcError('E_STAGE_LOST', `a stage was lost: ${reason}`))
    }
    if (!reason && was) {
      for (const group of this.#groups) for (const r of group) r.suspendedAt = null
      void this.#drive()
    }
  }

  /** Requests waiting for the ring to come back. */
  get suspended(): number {
    return this.#groups.reduce((n, g) => n + g.filter((r) => r.suspendedAt !== null).length, 0)
  }

  /** Queues a request; events arrive through `emit`. Throws at once when it can never run or the queue is full. */
  submit(request: ScheduledRequest, emit: (event: RequestEvent) => void): number {
    return this.submitChoices(request, 1, (_, event) => emit(event))[0]!
  }

  /** Queues `n` independent completions of one prompt (OpenAI's `n`), all or none: choice i samples from its own stream,
   * seeded `seed + i` when the request has a seed. Each one prefills the prompt itself. Events arrive with the choice's
   * index; the request's signal cancels every choice. */
  submitChoices(request: ScheduledRequest, n: number, emit: (index: number, event: RequestEvent) => void): number[] {
    if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`a request has 1 or more choices, not ${n}`)
    if (this.#closed) throw new DbcError('E_CLOSED', 'the server is shutting down')
    if (this.degraded) throw new DegradedError(this.degraded)
    const need = request.promptIds.length + request.maxTokens
    if (request.promptIds.length === 0) throw new ContextLengthError('E_PROMPT', 'the prompt is empty')
    if (need > this.pipeline.maxLen) {
      throw new ContextLengthError(
        'E_CONTEXT',
        `prompt (${request.promptIds.length} tokens) + max_tokens (${request.maxTokens}) exceeds the context of ${this.pipeline.maxLen} tokens`,
        'shorten the prompt or lower max_tokens',
      )
    }
    // the choices that free slots take at once need no place in the queue
    const free = Math.max(0, this.options.maxBatch - this.running - this.#queue.length)
    if (this.#queue.length + n - free > this.options.maxQueue) {
      this.metrics?.requests.inc({ outcome: 'rejected' })
      throw new QueueFullError(this.options.maxQueue)
    }
    const ids: number[] = []
    for (let index = 0; index < n; index++) {
      const seed = request.sampling.seed
      const choice =
        index === 0 || seed === undefined
          ? request
          : { ...request, sampling: { ...request.sampling, seed: seed + index } }
      const id = this.#nextId++
      const queued = {
        id,
        request: choice,
        emit: (event: RequestEvent) => emit(index, event),
        arrived: performance.now(),
      }
      this.#queue.push(queued)
      ids.push(id)
      // a client that leaves while its request waits is dropped from the queue at once, not when a slot frees
      request.signal?.addEventListener(
        'abort',
        () => {
          const at = this.#queue.indexOf(queued)
          if (at < 0) return // admitted already: the running request is cancelled by the step loop
          this.#queue.splice(at, 1)
          this.metrics?.requests.inc({ outcome: 'cancelled' })
          this.metrics?.queueDepth.set(this.#queue.length)
        },
        { once: true },
      )
    }
    this.metrics?.queueDepth.set(this.#queue.length)
    void this.#drive()
    return ids
  }

  close(): void {
    this.#closed = true
    for (const q of this.#queue.splice(0))
      q.emit({ type: 'error', error: new DbcError('E_CLOSED', 'the server is shutting down') })
  }

  /** Moves queued requests into free KV slots, each into the smallest micro-batch. */
  #admit(): void {
    while (this.#queue.length && this.running < this.options.maxBatch) {
      let slot: number
      try {
        slot = this.pipeline.openSequence()
      } catch {
        break // no KV room on some stage: wait for a request to finish
      }
      const q = this.#queue.shift()!
      if (q.request.signal?.aborted) {
        this.pipeline.closeSequence(slot)
        this.metrics?.requests.inc({ outcome: 'cancelled' })
        continue
      }
      const group = this.#groups.reduce((best, g) => (g.length < best.length ? g : best))
      const now = performance.now()
      group.push({
        id: q.id,
        request: q.request,
        emit: q.emit,
        slot,
        cached: 0,
        tokens: [],
        counts: new Map(),
        matcher: null,
        history: [...q.request.promptIds],
        random: seededRandom(q.request.sampling.seed ?? Math.floor(Math.random() * 2 ** 32)),
        pendingU: null,
        suspendedAt: null,
        resumes: 0,
        detok: new IncrementalDetokenizer(this.decode),
        stops: new StopMatcher(q.request.stop ?? []),
        text: '',
        arrived: q.arrived,
        lastTokenAt: now,
        deadline: q.arrived + (q.request.timeoutMs ?? this.options.requestTimeoutMs),
        cancelled: null,
      })
    }
    this.metrics?.queueDepth.set(this.#queue.length)
    this.metrics?.batchSize.set(this.running)
  }

  /** The one driver: admits, reaps, and keeps one step in flight per non-empty micro-batch until all work is done. */
  async #drive(): Promise<void> {
    if (this.#driving) return
    this.#driving = true
    try {
      for (;;) {
        this.#admit()
        for (const group of this.#groups) this.#reap(group)
        const pending: Promise<void>[] = []
        this.#groups.forEach((group, g) => {
          if (group.length && !this.#inFlight[g] && !this.#degraded) {
            this.#inFlight[g] = this.#step(group).finally(() => (this.#inFlight[g] = null))
          }
          if (this.#inFlight[g]) pending.push(this.#inFlight[g]!)
        })
        if (pending.length === 0) {
          // nothing runs but requests wait (no KV room, or the ring is down): expire old ones, look again shortly
          if (this.#queue.length) this.#expireQueued()
          if (this.#queue.length || this.running) setTimeout(() => void this.#drive(), 100)
          break
        }
        await Promise.race(pending)
        // let sockets and timers run between steps
        await new Promise((resolve) => setImmediate(resolve))
      }
    } finally {
      this.#driving = false
    }
  }

  #expireQueued(): void {
    const now = performance.now()
    for (const q of [...this.#queue]) {
      const limit = q.request.timeoutMs ?? this.options.requestTimeoutMs
      if (now - q.arrived <= limit && !q.request.signal?.aborted) continue
      this.#queue.splice(this.#queue.indexOf(q), 1)
      if (!q.request.signal?.aborted) q.emit({ type: 'error', error: new RequestTimeoutError(limit) })
    }
    this.metrics?.queueDepth.set(this.#queue.length)
  }

  /** Drops cancelled and timed-out requests, freeing their KV slots on every stage; fails suspended requests whose
   * ring did not come back in time. */
  #reap(group: Running[]): void {
    const now = performance.now()
    for (const r of [...group]) {
      if (r.suspendedAt !== null && now - r.suspendedAt > this.options.resumeWindowMs) {
        this.#fail(
          group,
          r,
          new DbcError(
            'E_STAGE_LOST',
            `a stage was lost and the cluster did not recover within ${Math.round(this.options.resumeWindowMs / 1000)} s${this.#degraded ? ` (${this.#degraded})` : ''}`,
            'retry the request once the cluster reports ok at /health',
          ),
        )
        continue
      }
      if (!r.cancelled && r.request.signal?.aborted) r.cancelled = 'client'
      if (!r.cancelled && now > r.deadline) r.cancelled = 'timeout'
      if (!r.cancelled) continue
      this.#remove(group, r)
      this.metrics?.requests.inc({ outcome: r.cancelled === 'client' ? 'cancelled' : 'timeout' })
      if (r.cancelled === 'timeout') r.emit({ type: 'error', error: new RequestTimeoutError(r.deadline - r.arrived) })
    }
  }

  #remove(group: Running[], r: Running): void {
    group.splice(group.indexOf(r), 1)
    r.matcher?.dispose()
    r.matcher = null
    this.pipeline.prefix?.finish(r.slot)
    try {
      this.pipeline.closeSequence(r.slot)
    } catch {
      // the stage that held it is gone; its slot died with it
    }
    this.metrics?.batchSize.set(this.running)
  }

  /** A prefill that starts from nothing first loads the longest cached prefix of what its slot must hold (model/pipeline.ts
   * PrefixReuse); a failed restore only means a full prefill, which overwrites whatever it wrote. */
  async #restorePrefix(r: Running): Promise<void> {
    const prefix = this.pipeline.prefix
    if (!prefix) return
    try {
      r.cached = await prefix.restore(r.slot, r.history, r.request.cacheTenant ?? '')
    } catch {
      r.cached = 0
    }
    if (r.resumes === 0) r.prefixHit = r.cached
  }

  /** A prompt not yet started whose first block another prompt is prefilling now waits for that one's blocks (it would
   * otherwise compute the shared prefix a second time beside it). */
  #awaitsSharedPrefix(group: Running[], r: Running, fills: readonly { r: Running }[]): boolean {
    const size = this.pipeline.prefix?.blockTokens
    if (!size || r.history.length <= size) return false
    return group.some(
      (o) =>
        o !== r &&
        (fills.some((f) => f.r === o) || (o.cached > 0 && o.history.length - o.cached > 1)) &&
        o.history.length > size &&
        o.history.slice(0, size).every((id, i) => id === r.history[i]),
    )
  }

  /** After a step of its prefill, the slot's whole blocks are kept for later prompts (a failed save costs only reuse). */
  async #storePrefix(r: Running): Promise<void> {
    if (r.cancelled) return // its slot may already be freed
    try {
      await this.pipeline.prefix?.store(r.slot, r.history, r.cached, r.request.cacheTenant ?? '')
    } catch {
      // the blocks are not kept; this request is unaffected
    }
  }

  async #step(group: Running[]): Promise<void> {
    const tokens: number[] = []
    const slots: number[] = []
    const positions: number[] = []
    const logitRows: number[] = []
    const owners: Running[] = []
    // decode rows: requests whose cache holds all but the newest token
    for (const r of group) {
      if (r.history.length - r.cached !== 1) continue
      logitRows.push(tokens.length)
      owners.push(r)
      tokens.push(r.history.at(-1)!)
      slots.push(r.slot)
      positions.push(r.cached)
    }
    // then prompt chunks in admission order while the step's token budget lasts (a new prompt, or a resumed request's
    // prompt + completion): a burst of short prompts shares one step, and a long one never makes a step longer than the
    // budget, whatever else is running
    let budget = this.maxStepTokens - tokens.length
    const fills: { r: Running; end: number }[] = []
    let prefillTokens = 0
    for (const r of group) {
      if (budget <= 0) break
      if (r.history.length - r.cached <= 1) continue
      if (r.cached === 0 && this.#awaitsSharedPrefix(group, r, fills)) continue
      if (r.cached === 0) await this.#restorePrefix(r)
      const start = r.cached
      const end = Math.min(r.history.length, start + this.options.prefillChunk, start + budget)
      for (let p = start; p < end; p++) {
        tokens.push(r.history[p]!)
        slots.push(r.slot)
        positions.push(p)
      }
      budget -= end - start
      if (r.resumes === 0) prefillTokens += end - start
      if (end === r.history.length) {
        logitRows.push(tokens.length - 1)
        owners.push(r)
      }
      fills.push({ r, end })
      // without an explicit budget, one prompt a step: on bf16 and f32 weights a step's row count picks the kernel
      // (GEMV or GEMM), whose roundings differ, so a seeded prompt's tokens would depend on the prompts beside it
      if (this.options.maxStepTokens === undefined) break
    }
    const epoch = this.#epoch
    let sampled: SampledToken[] | null = null
    let t0 = performance.now()
    try {
      // the grammar's allowed tokens for each constrained row, from the tokens its matcher accepted so far
      const masks = owners.some((r) => r.request.constraint)
        ? await Promise.all(owners.map((r) => this.#allowed(group, r)))
        : []
      const sampling = owners.map((r, i) => {
        r.pendingU ??= r.request.sampling.temperature > 0 ? r.random() : 0
        const bias = logitBiasFor(r.request.adjustments, r.counts)
        return rowSampling(r.request.sampling, r.history, r.pendingU, r.request.logprobs ?? -1, bias, masks[i])
      })
      t0 = performance.now()
      const input = {
        tokens: Int32Array.from(tokens),
        slots: Int32Array.from(slots),
        positions: Int32Array.from(positions),
        logitRows: Int32Array.from(logitRows),
      }
      sampled = await this.pipeline.sample(input, sampling)
    } catch (error) {
      if (epoch === this.#epoch) this.#lost(group, error)
      return
    }
    if (epoch !== this.#epoch) return // the ring went down meanwhile: these requests were suspended and start over
    for (const r of owners) r.suspendedAt = null
    const filled = new Set(fills.map((f) => f.r))
    for (const r of owners) if (!filled.has(r)) r.cached++
    for (const { r, end } of fills) {
      r.suspendedAt = null
      r.cached = end
      // not waited for: a compute thread queues the save before the next step, and the tokens go out now
      void this.#storePrefix(r)
    }
    const now = performance.now()
    this.metrics?.stepTime.observe((now - t0) / 1000)
    this.metrics?.promptTokens.inc({}, prefillTokens)
    owners.forEach((r, i) => {
      r.pendingU = null
      if (r.cancelled || !group.includes(r)) return
      this.#accept(group, r, sampled![i]!, now)
    })
  }

  /** The tokens a constrained row may take next (undefined: unconstrained). */
  async #allowed(group: Running[], r: Running): Promise<Uint32Array | undefined> {
    if (!r.request.constraint) return undefined
    const matcher = (r.matcher ??= await r.request.constraint.matcher())
    // removed meanwhile (cancelled): its matcher is gone and its token will be dropped
    if (!group.includes(r)) return (matcher.dispose(), new Uint32Array(0))
    return matcher.nextMask()
  }

  /** A step failed. Ring failures suspend the group's requests until the ring is rebuilt (their caches start over);
   * anything else ends them with the error. */
  #lost(group: Running[], error: unknown): void {
    const failure =
      error instanceof DbcError ? error : new DbcError('E_STEP', `pipeline step failed: ${(error as Error).message}`)
    for (const r of [...group]) {
      if (isResumable(failure)) this.#suspend(group, r, failure)
      else this.#fail(group, r, failure)
    }
  }

  #suspend(group: Running[], r: Running, failure: DbcError): void {
    if (r.suspendedAt !== null) return
    if (r.resumes >= this.options.maxResumes) return this.#fail(group, r, failure)
    r.resumes++
    r.suspendedAt = performance.now()
    r.cached = 0
  }

  #fail(group: Running[], r: Running, error: DbcError): void {
    this.#remove(group, r)
    this.metrics?.requests.inc({ outcome: 'error' })
    r.emit({ type: 'error', error })
  }

  /** Samples one token for a request and emits it; finishes the request on EOS, a stop string or a limit. */
  #accept(group: Running[], r: Running, sampled: SampledToken, now: number): void {
    const id = sampled.id
    if (r.matcher && !r.matcher.accept(id))
      return this.#fail(
        group,
        r,
        new DbcError('E_CONSTRAINT', `token ${id} was sampled outside the grammar's mask`, 'report this as a bug'),
      )
    const finish = (reason: FinishReason) => {
      const tail = r.stops.stopped ? '' : r.stops.push(r.detok.flush()) + r.stops.flush()
      if (tail) {
        r.text += tail
        r.emit({ type: 'text', text: tail })
      }
      this.#remove(group, r)
      this.metrics?.requests.inc({ outcome: 'ok' })
      r.emit({
        type: 'done',
        finishReason: reason,
        text: r.text,
        tokens: r.tokens,
        promptTokens: r.request.promptIds.length,
        ...(this.pipeline.prefix ? { cachedTokens: r.prefixHit ?? 0 } : {}),
      })
    }
    if (r.request.eosTokenIds.includes(id)) return finish('stop')
    if (r.tokens.length === 0) this.metrics?.ttft.observe((now - r.arrived) / 1000)
    else this.metrics?.interToken.observe((now - r.lastTokenAt) / 1000)
    r.lastTokenAt = now
    r.tokens.push(id)
    r.counts.set(id, (r.counts.get(id) ?? 0) + 1)
    r.history.push(id)
    this.metrics?.generatedTokens.inc()
    const piece = r.stops.push(r.detok.push(id))
    r.text += piece
    const event: RequestEvent = { type: 'token', id, text: piece }
    if (r.request.logprobs !== undefined)
      Object.assign(event, {
        logprob: sampled.logprob,
        ...(sampled.topLogprobs ? { topLogprobs: sampled.topLogprobs } : {}),
      })
    r.emit(event)
    if (r.stops.stopped) return finish('stop')
    // a grammar that accepted its stop token ends the choice; its other stop tokens are EOS ids, handled above
    if (r.matcher?.terminated) return finish('stop')
    if (r.tokens.length >= r.request.maxTokens) return finish('length')
  }
}
