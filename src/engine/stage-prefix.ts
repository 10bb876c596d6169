/** Prefix reuse over stages in this process: a hit's blocks are copied into the new sequence's slot on every stage
 * (each stage keeps the blocks of its own layers), and the whole blocks a prefill computed are copied out of it. */
import { DbcError } from '../errors.ts'
import type { KvBlock } from '../model/kv-cache.ts'
import type { PrefixReuse } from '../model/pipeline.ts'
import type { ModelStage } from '../model/shard.ts'
import { PrefixCache, type PrefixBlock, type PrefixCacheCounters } from './prefix-cache.ts'

export interface StagePrefixOptions {
  capacityBytes: number
  /** Names the model (serving fingerprint, or the folder); the KV dtype and the tenant join it in each namespace. */
  model: string
  blockTokens?: number
  counters?: PrefixCacheCounters
}

export class StagePrefixCache implements PrefixReuse {
  readonly pool: PrefixCache<KvBlock[]>
  /** Per slot, the last block of the chain its sequence holds: pinned, so the chain stays while the request runs. */
  readonly #tails = new Map<number, PrefixBlock<KvBlock[]>>()
  readonly #namespace: string

  constructor(
    readonly stages: readonly ModelStage[],
    options: StagePrefixOptions,
  ) {
    const refusal = StagePrefixCache.refusal(stages)
    if (refusal) throw new DbcError('E_PREFIX_CACHE', `prefix caching is not available: ${refusal}`)
    this.#namespace = `${options.model}\0kv:${stages.map((s) => s.cache.dtype).join(',')}`
    this.pool = new PrefixCache<KvBlock[]>({
      capacityBytes: options.capacityBytes,
      blockTokens: options.blockTokens,
      release: (blocks) => blocks.forEach((block, i) => stages[i]!.cache.freeBlock(block)),
      counters: options.counters,
    })
  }

  /** Why these stages cannot reuse prefixes (null: they can). */
  get blockTokens(): number {
    return this.pool.blockTokens
  }

  static refusal(stages: readonly ModelStage[]): string | null {
    for (const s of stages) if (s.cache.blockReuseRefusal) return s.cache.blockReuseRefusal
    return null
  }

  restore(slot: number, ids: readonly number[], tenant: string): number {
    this.finish(slot)
    const found = this.pool.match(this.#ns(tenant), ids, ids.length - 1)
    const n = Math.min(...this.stages.map((s, i) => s.cache.restorableBlocks(found.map((block) => block.payload[i]!))))
    // the chain's tail stays pinned for the request: the blocks after it hang on it
    this.pool.unpin(n ? [...found.slice(0, n - 1), ...found.slice(n)] : found)
    if (n) {
      const kept = found.slice(0, n)
      this.stages.forEach((s, i) =>
        s.cache.restoreBlocks(
          slot,
          kept.map((block) => block.payload[i]!),
        ),
      )
      this.#tails.set(slot, kept.at(-1)!)
    }
    const hit = n * this.pool.blockTokens
    this.pool.record(ids.length, hit)
    return hit
  }

  store(slot: number, ids: readonly number[], upTo: number, tenant: string): void {
    const size = this.pool.blockTokens
    const keys = this.pool.keys(this.#ns(tenant), ids, Math.floor(upTo / size))
    for (const [b, key] of keys.entries()) {
      if (this.pool.has(key)) continue
      const parent = b ? keys[b - 1]! : null
      const blocks = this.stages.map((s) => s.cache.saveBlock(slot, b * size, (b + 1) * size, upTo))
      const bytes = blocks.reduce((n, block) => n + block.bytes, 0)
      const tokens = Int32Array.from(ids.slice(b * size, (b + 1) * size))
      if (!this.pool.insert(key, parent, tokens, blocks, bytes)) {
        blocks.forEach((block, i) => this.stages[i]!.cache.freeBlock(block))
        break // no room (every block pinned), or the parent was evicted meanwhile
      }
    }
    // move this slot's pin to the end of its chain
    const tail = keys.length ? this.pool.get(keys.at(-1)!) : undefined
    if (tail && tail !== this.#tails.get(slot)) {
      this.pool.pin(tail)
      this.finish(slot)
      this.#tails.set(slot, tail)
    }
  }

  finish(slot: number): void {
    const tail = this.#tails.get(slot)
    if (tail) this.pool.unpin([tail])
    this.#tails.delete(slot)
  }

  /** Frees every block (the stages are closing). */
  close(): void {
    for (const slot of [...this.#tails.keys()]) this.finish(slot)
    this.pool.clear()
  }

  #ns(tenant: string): string {
    return `${this.#namespace}\0tenant:${tenant}`
  }
}
