/** Continuous batching at the head: requests join and leave the running batch at any step; each step carries every
 * decoding row plus at most one prefill chunk, so a long prompt never stalls the others. The running batch is split into
 * micro-batches that step independently, so a pipeline of N stages can keep N steps in flight. */
import { DbcError } from '../errors.ts'
import { IncrementalDetokenizer } from './detokenizer.ts'
import type { FinishReason } from './generate.ts'
import type { ServingMetrics } from './metrics.ts'
import type { Pipeline } from './pipeline.ts'
import { makeSampler, type Sampler, type SamplingParams } from './sampler.ts'
import { StopMatcher } from './stop.ts'

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
  stop?: readonly string[]
  eosTokenIds: readonly number[]
  /** Report log-probabilities: 0 = of the chosen token only, k = also the k most likely. */
  logprobs?: number
  signal?: AbortSignal
  timeoutMs?: number
}

export interface TokenLogprob {
  id: number
  logprob: number
}

export type RequestEvent =
  | { type: 'token'; id: number; text: string; logprob?: number; topLogprobs?: TokenLogprob[] }
  | { type: 'text'; text: string }
  | { type: 'done'; finishReason: FinishReason; text: string; tokens: number[]; promptTokens: number }
  | { type: 'error'; error: DbcError }

export interface SchedulerOptions {
  maxBatch: number
  maxQueue: number
  prefillChunk: number
  microBatches: number
  requestTimeoutMs: number
}

export const DEFAULT_SCHEDULER: SchedulerOptions = { maxBatch: 8, maxQueue: 64, prefillChunk: 256, microBatches: 1, requestTimeoutMs: 300_000 }

interface Running {
  id: number
  request: ScheduledRequest
  emit: (event: RequestEvent) => void
  slot: number
  /** Prompt tokens already in the KV cache. */
  prefilled: number
  tokens: number[]
  history: number[]
  sample: Sampler
  detok: IncrementalDetokenizer
  stops: StopMatcher
  text: string
  arrived: number
  lastTokenAt: number
  deadline: number
  cancelled: 'client' | 'timeout' | null
}

export class Scheduler {
  readonly options: SchedulerOptions
  readonly #queue: { id: number; request: ScheduledRequest; emit: (e: RequestEvent) => void; arrived: number }[] = []
  readonly #groups: Running[][]
  readonly #inFlight: (Promise<void> | null)[]
  #driving = false
  #nextId = 1
  #degraded: string | null = null
  #closed = false

  constructor(
    readonly pipeline: Pipeline,
    private readonly decode: (ids: number[]) => string,
    options: Partial<SchedulerOptions> = {},
    private readonly metrics?: ServingMetrics,
  ) {
    this.options = { ...DEFAULT_SCHEDULER, ...options }
    this.#groups = Array.from({ length: this.options.microBatches }, () => [])
    this.#inFlight = this.#groups.map(() => null)
  }

  get queueDepth(): number {
    return this.#queue.length
  }
  get running(): number {
    return this.#groups.reduce((n, g) => n + g.length, 0)
  }
  get degraded(): string | null {
    return this.#degraded
  }

  /** While degraded, new requests are refused at once (the API answers 503 with Retry-After). */
  setDegraded(reason: string | null): void {
    this.#degraded = reason
  }

  /** Queues a request; events arrive through `emit`. Throws at once when it can never run or the queue is full. */
  submit(request: ScheduledRequest, emit: (event: RequestEvent) => void): number {
    if (this.#closed) throw new DbcError('E_CLOSED', 'the server is shutting down')
    if (this.#degraded) throw new DegradedError(this.#degraded)
    const need = request.promptIds.length + request.maxTokens
    if (request.promptIds.length === 0) throw new ContextLengthError('E_PROMPT', 'the prompt is empty')
    if (need > this.pipeline.maxLen) {
      throw new ContextLengthError(
        'E_CONTEXT',
        `prompt (${request.promptIds.length} tokens) + max_tokens (${request.maxTokens}) exceeds the context of ${this.pipeline.maxLen} tokens`,
        'shorten the prompt or lower max_tokens',
      )
    }
    if (this.#queue.length >= this.options.maxQueue) {
      this.metrics?.requests.inc({ outcome: 'rejected' })
      throw new QueueFullError(this.options.maxQueue)
    }
    const id = this.#nextId++
    this.#queue.push({ id, request, emit, arrived: performance.now() })
    this.metrics?.queueDepth.set(this.#queue.length)
    void this.#drive()
    return id
  }

  close(): void {
    this.#closed = true
    for (const q of this.#queue.splice(0)) q.emit({ type: 'error', error: new DbcError('E_CLOSED', 'the server is shutting down') })
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
        prefilled: 0,
        tokens: [],
        history: [...q.request.promptIds],
        sample: makeSampler(q.request.sampling),
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
          if (group.length && !this.#inFlight[g]) {
            this.#inFlight[g] = this.#step(group).finally(() => (this.#inFlight[g] = null))
          }
          if (this.#inFlight[g]) pending.push(this.#inFlight[g]!)
        })
        if (pending.length === 0) {
          // nothing runs but requests wait: no stage has KV room (a stage is gone); expire old ones, retry shortly
          if (this.#queue.length) this.#expireQueued()
          if (this.#queue.length) setTimeout(() => void this.#drive(), 100)
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

  /** Drops cancelled and timed-out requests, freeing their KV slots on every stage. */
  #reap(group: Running[]): void {
    const now = performance.now()
    for (const r of [...group]) {
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
    try {
      this.pipeline.closeSequence(r.slot)
    } catch {
      // the stage that held it is gone; its slot died with it
    }
    this.metrics?.batchSize.set(this.running)
  }

  async #step(group: Running[]): Promise<void> {
    const tokens: number[] = []
    const slots: number[] = []
    const positions: number[] = []
    const logitRows: number[] = []
    const owners: Running[] = []
    for (const r of group) {
      if (r.prefilled < r.request.promptIds.length) continue
      const last = r.tokens.at(-1)!
      logitRows.push(tokens.length)
      owners.push(r)
      tokens.push(last)
      slots.push(r.slot)
      positions.push(r.request.promptIds.length + r.tokens.length - 1)
    }
    // one prefill chunk per step, after the decode rows
    const filling = group.find((r) => r.prefilled < r.request.promptIds.length)
    let prefillTokens = 0
    if (filling) {
      const start = filling.prefilled
      const end = Math.min(filling.request.promptIds.length, start + this.options.prefillChunk)
      for (let p = start; p < end; p++) {
        tokens.push(filling.request.promptIds[p]!)
        slots.push(filling.slot)
        positions.push(p)
      }
      prefillTokens = end - start
      filling.prefilled = end
      if (end === filling.request.promptIds.length) {
        logitRows.push(tokens.length - 1)
        owners.push(filling)
      }
    }
    const t0 = performance.now()
    let logits: Float32Array
    try {
      logits = await this.pipeline.step({
        tokens: Int32Array.from(tokens),
        slots: Int32Array.from(slots),
        positions: Int32Array.from(positions),
        logitRows: logitRows.length ? Int32Array.from(logitRows) : Int32Array.of(0),
      })
    } catch (error) {
      const failure = error instanceof DbcError ? error : new DbcError('E_STEP', `pipeline step failed: ${(error as Error).message}`)
      for (const r of [...group]) {
        this.#remove(group, r)
        this.metrics?.requests.inc({ outcome: 'error' })
        r.emit({ type: 'error', error: failure })
      }
      return
    }
    const now = performance.now()
    this.metrics?.stepTime.observe((now - t0) / 1000)
    this.metrics?.promptTokens.inc({}, prefillTokens)
    const vocab = this.pipeline.vocabSize
    owners.forEach((r, i) => {
      if (r.cancelled || !group.includes(r)) return
      this.#accept(group, r, logits.subarray(i * vocab, (i + 1) * vocab), now)
    })
  }

  /** Samples one token for a request and emits it; finishes the request on EOS, a stop string or a limit. */
  #accept(group: Running[], r: Running, logits: Float32Array, now: number): void {
    const id = r.sample(logits, r.history)
    const finish = (reason: FinishReason) => {
      const tail = r.stops.stopped ? '' : r.stops.push(r.detok.flush()) + r.stops.flush()
      if (tail) {
        r.text += tail
        r.emit({ type: 'text', text: tail })
      }
      this.#remove(group, r)
      this.metrics?.requests.inc({ outcome: 'ok' })
      r.emit({ type: 'done', finishReason: reason, text: r.text, tokens: r.tokens, promptTokens: r.request.promptIds.length })
    }
    if (r.request.eosTokenIds.includes(id)) return finish('stop')
    if (r.tokens.length === 0) this.metrics?.ttft.observe((now - r.arrived) / 1000)
    else this.metrics?.interToken.observe((now - r.lastTokenAt) / 1000)
    r.lastTokenAt = now
    r.tokens.push(id)
    r.history.push(id)
    this.metrics?.generatedTokens.inc()
    const piece = r.stops.push(r.detok.push(id))
    r.text += piece
    const event: RequestEvent = { type: 'token', id, text: piece }
    if (r.request.logprobs !== undefined) Object.assign(event, logprobsOf(logits, id, r.request.logprobs))
    r.emit(event)
    if (r.stops.stopped) return finish('stop')
    if (r.tokens.length >= r.request.maxTokens) return finish('length')
  }
}

/** log-softmax of the chosen token, and the top-k alternatives when asked. */
export function logprobsOf(logits: Float32Array, id: number, top: number): { logprob: number; topLogprobs?: TokenLogprob[] } {
  let max = -Infinity
  for (const v of logits) if (v > max) max = v
  let sum = 0
  for (const v of logits) sum += Math.exp(v - max)
  const norm = max + Math.log(sum)
  const result: { logprob: number; topLogprobs?: TokenLogprob[] } = { logprob: logits[id]! - norm }
  if (top > 0) {
    const best: TokenLogprob[] = []
    for (let i = 0; i < logits.length; i++) {
      const v = logits[i]!
      if (best.length < top || v > best.at(-1)!.logprob) {
        best.push({ id: i, logprob: v })
        best.sort((a, b) => b.logprob - a.logprob || a.id - b.id)
        if (best.length > top) best.pop()
      }
    }
    result.topLogprobs = best.map((b) => ({ id: b.id, logprob: b.logprob - norm }))
  }
  return result
}
