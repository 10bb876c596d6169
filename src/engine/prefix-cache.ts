/** The prefix block store: the KV of processed prompts in blocks of a fixed number of tokens, each keyed by a hash chain
 * of its token ids (SHA-256 of the previous block's key and its own ids, seeded with a namespace: model fingerprint, KV
 * dtype and tenant), so a key names the whole prefix up to the block's end and a hit never crosses models, cache dtypes
 * or tenants. A prompt's longest run of cached blocks from its start is its hit. The pool is bounded in bytes; the least
 * recently used block is evicted first, never one pinned by a running request and never one that still has a child
 * (a child without its parent could not be reached). What a block holds (`T`) is up to the caller: the stages' copies
 * of their layers' keys and values (engine/stage-prefix.ts). */
import { createHash } from 'node:crypto'

/** Tokens per block: small enough that a prompt's partial last block costs little to recompute, large enough that a
 * block's copy is a few long runs of memory. */
export const PREFIX_BLOCK_TOKENS = 64

/** The counters /metrics shows (engine/metrics.ts gives the real ones). */
export interface PrefixCacheCounters {
  hitTokens: { inc(labels?: Record<string, string>, by?: number): void }
  queryTokens: { inc(labels?: Record<string, string>, by?: number): void }
  evictions: { inc(labels?: Record<string, string>, by?: number): void }
  blocks: { set(value: number): void }
}

export interface PrefixBlock<T> {
  readonly key: string
  readonly parent: string | null
  /** The block's own token ids, compared on every match (a hash collision can never give a wrong hit). */
  readonly tokens: Int32Array
  readonly payload: T
  readonly bytes: number
  /** Running requests that use it. */
  refs: number
  /** Blocks cached after it. */
  children: number
}

export interface PrefixCacheOptions<T> {
  /** The pool's bound: blocks are evicted to keep their bytes at or below it. */
  capacityBytes: number
  blockTokens?: number
  /** Frees an evicted block's payload. */
  release: (payload: T) => void
  counters?: PrefixCacheCounters
}

export class PrefixCache<T> {
  readonly blockTokens: number
  readonly capacityBytes: number
  /** Insertion order is recency order: a block is moved to the end whenever it is used. */
  readonly #blocks = new Map<string, PrefixBlock<T>>()
  #bytes = 0
  #evictions = 0

  constructor(private readonly options: PrefixCacheOptions<T>) {
    this.blockTokens = options.blockTokens ?? PREFIX_BLOCK_TOKENS
    this.capacityBytes = options.capacityBytes
    if (!(this.blockTokens >= 1 && Number.isInteger(this.blockTokens)))
      throw new RangeError(`a block holds a whole number of tokens ≥ 1, not ${this.blockTokens}`)
  }

  get blocks(): number {
    return this.#blocks.size
  }
  get bytes(): number {
    return this.#bytes
  }
  get evictions(): number {
    return this.#evictions
  }

  /** The keys of the first `count` whole blocks of `ids` (all of them by default) in `namespace`. */
  keys(namespace: string, ids: readonly number[], count = Math.floor(ids.length / this.blockTokens)): string[] {
    const out: string[] = []
    let previous = createHash('sha256').update(`dbcluster prefix v1\0${namespace}`).digest('hex')
    for (let b = 0; b < count; b++) {
      const hash = createHash('sha256').update(previous)
      hash.update(new Uint8Array(Int32Array.from(ids.slice(b * this.blockTokens, (b + 1) * this.blockTokens)).buffer))
      out.push((previous = hash.digest('hex')))
    }
    return out
  }

  /** The cached blocks that begin `ids`, in order, at most `maxTokens` tokens of them, each pinned (unpin them when
   * done). Counts nothing: the caller may keep fewer, and records what it keeps. */
  match(namespace: string, ids: readonly number[], maxTokens = ids.length): PrefixBlock<T>[] {
    const found: PrefixBlock<T>[] = []
    const n = Math.floor(Math.min(maxTokens, ids.length) / this.blockTokens)
    for (const [b, key] of this.keys(namespace, ids, n).entries()) {
      const block = this.#blocks.get(key)
      if (!block || !sameTokens(block.tokens, ids, b * this.blockTokens)) break
      found.push(block)
    }
    for (const block of found) block.refs++
    // the chain's end is touched last, so a parent is never less recent than its child
    for (const block of [...found].reverse()) this.#touch(block)
    return found
  }

  /** Counts one prompt's lookup for /metrics: `query` tokens asked for, `hit` of them served from blocks. */
  record(query: number, hit: number): void {
    this.options.counters?.queryTokens.inc({}, query)
    this.options.counters?.hitTokens.inc({}, hit)
  }

  pin(block: PrefixBlock<T>): void {
    block.refs++
  }

  unpin(blocks: readonly PrefixBlock<T>[]): void {
    for (const block of blocks) {
      if (block.refs <= 0) throw new Error(`prefix block ${block.key.slice(0, 12)} is not pinned`)
      block.refs--
    }
  }

  has(key: string): boolean {
    return this.#blocks.has(key)
  }

  get(key: string): PrefixBlock<T> | undefined {
    return this.#blocks.get(key)
  }

  /** Adds a block after `parent` (null: the prompt's first), evicting unpinned leaves as needed; false (and nothing
   * kept) when the pool cannot make room or the parent is gone. The caller's payload is then its to free. */
  insert(key: string, parent: string | null, tokens: Int32Array, payload: T, bytes: number): boolean {
    if (this.#blocks.has(key)) return false
    const up = parent === null ? null : this.#blocks.get(parent)
    if (up === undefined || bytes > this.capacityBytes) return false
    // the parent must outlive this search for room
    if (up) up.refs++
    try {
      if (!this.#makeRoom(bytes)) return false
    } finally {
      if (up) up.refs--
    }
    const block: PrefixBlock<T> = { key, parent, tokens, payload, bytes, refs: 0, children: 0 }
    this.#blocks.set(key, block)
    if (up) up.children++
    this.#bytes += bytes
    this.options.counters?.blocks.set(this.#blocks.size)
    return true
  }

  /** Frees every block no request pins (the store is being closed). */
  clear(): void {
    while (this.#evictOne()) {}
  }

  #touch(block: PrefixBlock<T>): void {
    this.#blocks.delete(block.key)
    this.#blocks.set(block.key, block)
  }

  #makeRoom(bytes: number): boolean {
    while (this.#bytes + bytes > this.capacityBytes) if (!this.#evictOne()) return false
    return true
  }

  /** Evicts the least recently used block that no request pins and no block follows. */
  #evictOne(): boolean {
    for (const block of this.#blocks.values()) {
      if (block.refs > 0 || block.children > 0) continue
      this.#blocks.delete(block.key)
      this.#bytes -= block.bytes
      if (block.parent !== null) this.#blocks.get(block.parent)!.children--
      this.options.release(block.payload)
      this.#evictions++
      this.options.counters?.evictions.inc()
      this.options.counters?.blocks.set(this.#blocks.size)
      return true
    }
    return false
  }
}

function sameTokens(tokens: Int32Array, ids: readonly number[], at: number): boolean {
  for (let i = 0; i < tokens.length; i++) if (tokens[i] !== ids[at + i]) return false
  return true
}
