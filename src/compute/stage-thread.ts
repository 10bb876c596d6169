/** A stage on a compute thread of its own (issue 26): the weights, the KV cache and the prefix cache live in a Worker
 * (stage-worker.ts) and every step runs there, so a prefill chunk that computes for seconds leaves this thread free for
 * HTTP, SSE, link I/O and heartbeats. Slots are booked here at once (the scheduler needs the answer now) and mirrored to
 * the worker, whose queue keeps them in order with the steps. A step the thread has not answered for `hungAfterMs` is a
 * hung compute thread: its callers fail with E_COMPUTE_HUNG (not a dead peer) and /health says so. */
import { consola } from 'consola'
import { DbcError } from '../errors.ts'
import type { ServingMetrics } from '../engine/metrics.ts'
import { PREFIX_BLOCK_TOKENS } from '../engine/prefix-cache.ts'
import type { LayerRange } from '../model/architecture.ts'
import type { DecoderConfig } from '../model/config.ts'
import type { PrefixReuse } from '../model/pipeline.ts'
import type { RowSampling } from '../model/sampler.ts'
import { readModelConfig, type StageInput } from '../model/shard.ts'
import type { SlotLedger, StageRun, StageRunner } from '../model/stage-runner.ts'
import {
  fromWire,
  type FromCompute,
  type LoadedStage,
  type PrefixTally,
  type StageLoad,
  type ToCompute,
} from './stage-messages.ts'

/** The worker's entry: beside this file from source; in the compiled binary, bundled as compute/stage-worker at the
 * root of its file system, where this code's own URL is the binary's (scripts/compile-binary.ts adds the entry). */
const WORKER_ENTRY = import.meta.dir.includes('$bunfs')
  ? new URL('./compute/stage-worker.ts', import.meta.url).href
  : new URL('./stage-worker.ts', import.meta.url).href

/** A step unanswered this long means the compute thread is stuck (the longest honest prefill chunk is far shorter). */
export const DEFAULT_HUNG_AFTER_MS = 120_000

export interface StageThreadOptions extends StageLoad {
  hungAfterMs?: number
}

interface Waiting {
  resolve: (value: any) => void
  reject: (error: Error) => void
  sentAt: number
  what: string
}

export class StageThread implements StageRunner {
  readonly config: DecoderConfig
  readonly range: LayerRange
  readonly weightBytes: number
  readonly cache: ThreadSlots
  readonly kvDtype: 'f32' | 'f16'
  readonly blockReuseRefusal: string | null
  readonly #worker: Worker
  readonly #waiting = new Map<number, Waiting>()
  #nextId = 1
  #hung: string | null = null
  #hungListeners: ((reason: string | null) => void)[] = []
  #watchdog: ReturnType<typeof setInterval> | undefined
  #closed = false

  private constructor(
    worker: Worker,
    options: StageThreadOptions,
    loaded: LoadedStage,
    readonly hungAfterMs: number,
  ) {
    this.#worker = worker
    this.config = readModelConfig(options.dir)
    this.range = loaded.range
    this.weightBytes = loaded.weightBytes
    this.kvDtype = loaded.kvDtype
    this.blockReuseRefusal = loaded.blockReuseRefusal
    this.cache = new ThreadSlots(options.slots, options.maxLen, loaded.kvBytes, (m) => this.#post(m))
  }

  /** Starts the thread and loads the stage there (its errors, e.g. a truncated checkpoint, come back as they are). */
  static async start(options: StageThreadOptions): Promise<StageThread> {
    const worker = new Worker(WORKER_ENTRY)
    const { hungAfterMs, ...load } = options
    try {
      const loaded = await new Promise<LoadedStage>((resolve, reject) => {
        worker.onerror = (e) => reject(new DbcError('E_COMPUTE', `the compute thread failed to start: ${e.message}`))
        worker.onmessage = (e: MessageEvent<FromCompute>) => {
          const m = e.data
          if ('fault' in m) consola.warn(`compute thread: ${m.fault}`)
          else if (m.ok && 'loaded' in m) resolve(m.loaded)
          else if (!m.ok) reject(fromWire(m.error))
        }
        worker.postMessage({ op: 'load', id: 0, load } satisfies ToCompute)
      })
      const thread = new StageThread(worker, options, loaded, hungAfterMs ?? DEFAULT_HUNG_AFTER_MS)
      thread.#listen()
      return thread
    } catch (error) {
      worker.terminate()
      throw error
    }
  }

  get hung(): string | null {
    return this.#hung
  }

  /** `listener(reason)` when the thread is found hung, and `listener(null)` should it answer again. */
  onHung(listener: (reason: string | null) => void): void {
    this.#hungListeners.push(listener)
  }

  run(input: StageInput, sampling?: readonly RowSampling[]): Promise<StageRun> {
    return this.#ask<StageRun>({ op: 'run', id: 0, input, sampling }, 'a step')
  }

  /** A prefix cache for this stage, kept on the compute thread beside its KV (engine/stage-prefix.ts). */
  async openPrefix(capacityBytes: number, model: string, metrics: ServingMetrics): Promise<ThreadPrefix> {
    const prefix = new ThreadPrefix(this, metrics)
    prefix.apply(await this.#ask<{ tally: PrefixTally }>({ op: 'prefix-open', id: 0, capacityBytes, model }, 'prefix'))
    return prefix
  }

  /** @internal ThreadPrefix's way in. */
  ask<T>(message: ToCompute & { id: number }, what: string): Promise<T> {
    return this.#ask(message, what)
  }

  /** @internal */
  post(message: ToCompute): void {
    this.#post(message)
  }

  /** Test hook: the next step spins `ms` on the compute thread first, as a stuck kernel would. */
  stall(ms: number): void {
    this.#post({ op: 'stall', ms })
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#watchdog)
    for (const [id, w] of this.#waiting)
      (this.#waiting.delete(id), w.reject(new DbcError('E_CLOSED', 'the stage is closing')))
    // the stage's memory goes with the thread; a hung thread is not waited for
    const done = () => this.#worker.terminate()
    if (this.#hung) return done()
    // its tensors are this process's memory, not the thread's: terminate only once the stage has freed them
    this.#worker.onmessage = (e: MessageEvent<FromCompute>) => 'id' in e.data && e.data.id === 0 && done()
    keepAlive(this.#worker, true) // until the stage has freed its memory
    this.#worker.postMessage({ op: 'close', id: 0 } satisfies ToCompute)
  }

  #listen(): void {
    keepAlive(this.#worker, false) // an idle thread never keeps the process alive
    this.#worker.onmessage = (e: MessageEvent<FromCompute>) => this.#answer(e.data)
    this.#worker.onerror = (e) => this.#failAll(new DbcError('E_COMPUTE', `the compute thread died: ${e.message}`))
    this.#watchdog = setInterval(() => this.#check(), Math.min(1000, this.hungAfterMs / 4))
    this.#watchdog.unref?.()
  }

  #answer(m: FromCompute): void {
    if ('fault' in m) return void consola.warn(`compute thread: ${m.fault}`)
    if (this.#hung) this.#setHung(null)
    const w = this.#waiting.get(m.id)
    if (!w) return // its caller was failed as hung; the late answer is dropped
    this.#waiting.delete(m.id)
    if (this.#waiting.size === 0) keepAlive(this.#worker, false)
    if (!m.ok) return w.reject(fromWire(m.error))
    w.resolve('run' in m ? m.run : m)
  }

  #ask<T>(message: ToCompute & { id: number }, what: string): Promise<T> {
    if (this.#closed && message.op !== 'close') return Promise.reject(new DbcError('E_CLOSED', 'the stage is closed'))
    if (this.#hung) return Promise.reject(this.#hungError())
    const id = this.#nextId++
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject, sentAt: performance.now(), what })
      keepAlive(this.#worker, true) // an answer awaited keeps the process alive (a one-shot `generate` has nothing else)
      this.#worker.postMessage({ ...message, id })
    })
  }

  #post(message: ToCompute): void {
    if (!this.#closed) this.#worker.postMessage(message)
  }

  #check(): void {
    const now = performance.now()
    for (const w of this.#waiting.values()) {
      if (now - w.sentAt < this.hungAfterMs) continue
      this.#setHung(
        `the compute thread has not finished ${w.what} in ${((now - w.sentAt) / 1000).toFixed(1)} s (a stuck kernel or backend call)`,
      )
      return this.#failAll(this.#hungError())
    }
  }

  #hungError(): DbcError {
    return new DbcError('E_COMPUTE_HUNG', this.#hung ?? 'the compute thread is hung', 'restart this node')
  }

  #setHung(reason: string | null): void {
    if (reason === this.#hung) return
    this.#hung = reason
    if (reason) consola.error(`compute thread hung: ${reason}`)
    else consola.info('compute thread answers again')
    this.#hungListeners.forEach((l) => l(reason))
  }

  #failAll(error: DbcError): void {
    for (const [id, w] of this.#waiting) (this.#waiting.delete(id), w.reject(error))
    keepAlive(this.#worker, false)
  }
}

/** Bun's Worker has ref/unref (the DOM's type, which the type library picks, does not say so). */
const keepAlive = (worker: Worker, on: boolean) =>
  (worker as unknown as { ref(): void; unref(): void })[on ? 'ref' : 'unref']()

/** The slot ledger on this side: booked at once, mirrored to the compute thread in order with the steps. */
export class ThreadSlots implements SlotLedger {
  readonly #free: number[]

  constructor(
    readonly slots: number,
    readonly maxLen: number,
    readonly bytes: number,
    private readonly send: (message: ToCompute) => void,
  ) {
    this.#free = Array.from({ length: slots }, (_, i) => slots - 1 - i)
  }

  get freeSlots(): number {
    return this.#free.length
  }

  allocate(): number {
    const slot = this.#free.at(-1)
    if (slot === undefined)
      throw new DbcError(
        'E_KV_FULL',
        `all ${this.slots} KV slots are in use`,
        'wait for a request to finish or start with more slots',
      )
    this.claim(slot)
    return slot
  }

  claim(slot: number): void {
    const at = this.#free.indexOf(slot)
    if (at < 0) throw new DbcError('E_KV_SLOT', `KV slot ${slot} is not free`)
    this.#free.splice(at, 1)
    this.send({ op: 'claim', slot })
  }

  release(slot: number): void {
    if (slot < 0 || slot >= this.slots || this.#free.includes(slot))
      throw new DbcError('E_KV_SLOT', `KV slot ${slot} is not in use`)
    this.#free.push(slot)
    this.send({ op: 'release', slot })
  }

  releaseAll(): void {
    this.#free.splice(0, this.#free.length, ...Array.from({ length: this.slots }, (_, i) => this.slots - 1 - i))
    this.send({ op: 'releaseAll' })
  }
}

/** The prefix cache kept on the compute thread, as the scheduler drives it (model/pipeline.ts PrefixReuse): each call
 * is queued with the steps, so a restore lands in the slot before the prefill that reads it. */
export class ThreadPrefix implements PrefixReuse {
  /** The worker's cache keeps the default block size. */
  readonly blockTokens = PREFIX_BLOCK_TOKENS
  #blocks = 0
  #bytes = 0

  constructor(
    private readonly thread: StageThread,
    private readonly metrics: ServingMetrics,
  ) {}

  get blocks(): number {
    return this.#blocks
  }

  get bytes(): number {
    return this.#bytes
  }

  async restore(slot: number, ids: readonly number[], tenant: string): Promise<number> {
    const answer = await this.thread.ask<{ value: number; tally: PrefixTally }>(
      { op: 'prefix-restore', id: 0, slot, ids, tenant },
      'a prefix restore',
    )
    this.apply(answer)
    return answer.value
  }

  async store(slot: number, ids: readonly number[], upTo: number, tenant: string): Promise<void> {
    this.apply(
      await this.thread.ask<{ tally: PrefixTally }>(
        { op: 'prefix-store', id: 0, slot, ids, upTo, tenant },
        'a prefix store',
      ),
    )
  }

  finish(slot: number): void {
    this.thread.post({ op: 'prefix-finish', slot })
  }

  /** @internal The counters that moved on the compute thread, into this node's metrics. */
  apply({ tally }: { tally: PrefixTally }): void {
    const c = this.metrics.prefixCache
    if (tally.hitTokens) c.hitTokens.inc({}, tally.hitTokens)
    if (tally.queryTokens) c.queryTokens.inc({}, tally.queryTokens)
    if (tally.evictions) c.evictions.inc({}, tally.evictions)
    c.blocks.set(tally.blocks)
    this.#blocks = tally.blocks
    this.#bytes = tally.bytes
  }
}
