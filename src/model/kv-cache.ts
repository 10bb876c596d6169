/** The per-sequence caches of one stage, one slot per sequence. Each layer has its own kind: `full` keeps key and value
 * tensors [slots, kvHeads, maxLen, headDim]; `window` (sliding-window attention) keeps a ring of the last 2·window
 * positions, so its memory stays flat however long a sequence runs; `recurrent` (linear attention, Qwen3.5's Gated
 * DeltaNet) keeps a fixed-size state per slot instead of one entry per token: the last K−1 inputs of its causal conv and
 * the [heads, valueDim, keyDim] delta-rule state. Slots are shared by all layers: allocate/claim/release work the same
 * whatever the kinds (a recurrent state restarts at position 0, so a reused slot needs no clearing). */
import { DbcError } from '../errors.ts'
import { DTYPE_BYTES, numel, type Backend, type Tensor } from '../tensor/backend.ts'

export type LayerCacheSpec =
  | { kind: 'full'; kvHeads: number; headDim: number }
  | { kind: 'window'; kvHeads: number; headDim: number; window: number }
  | { kind: 'recurrent'; convChannels: number; convKernel: number; heads: number; keyDim: number; valueDim: number }

/** What a layer needs to keep per sequence: keys/values for attention, or the recurrent states of linear attention. */
export type LayerCache =
  | {
      kind: 'attention'
      keys: Tensor
      values: Tensor
      /** Keys attended per row: 0 for all positions up to the row's own, else the sliding window. */
      window: number
      /** The tensors are rings (position p at index p mod length). */
      ring: boolean
    }
  | { kind: 'recurrent'; conv: Tensor; state: Tensor }

/** One layer's copy of a block: keys and values of positions [from, block end) as [kvHeads, n, headDim] in the cache
 * dtype, the bytes the cache held (Backend.kvReadBlock: each head's positions are consecutive in the cache too, so both
 * directions copy one run per head). */
export interface KvBlockLayer {
  keys: Tensor
  values: Tensor
  from: number
}

/** The keys and values of positions [start, end) of one sequence, for every attention layer of a stage. A layer is null
 * where its ring no longer held any of them when the block was saved (a sliding-window layer keeps only its last 2·window
 * positions), and starts after `start` where it held only the last ones. */
export interface KvBlock {
  start: number
  end: number
  layers: (KvBlockLayer | null)[]
  bytes: number
}

export const fullLayers = (layers: number, kvHeads: number, headDim: number): LayerCacheSpec[] =>
  Array.from({ length: layers }, () => ({ kind: 'full', kvHeads, headDim }))

export class KvCache {
  /** Keys and values by layer index (attention layers only). */
  readonly keys: Tensor[] = []
  readonly values: Tensor[] = []
  readonly layerCaches: LayerCache[] = []
  /** The most rows one forward call may carry (a ring of 2·window holds the keys of window + 1 consecutive rows). */
  readonly maxStepRows: number
  readonly #free: number[]
  readonly #tensors: Tensor[] = []
  /** Recurrent layers: the position each slot's state has reached (its next row must continue there or restart at 0). */
  readonly #next: Int32Array | null
  #bytes = 0

  constructor(
    private readonly backend: Backend,
    readonly specs: readonly LayerCacheSpec[],
    readonly slots: number,
    readonly maxLen: number,
    /** Of the attention caches (recurrent states are always f32). */
    readonly dtype: 'f32' | 'f16' = backend.kvDtype,
  ) {
    let maxStepRows = Infinity
    const zeros = (shape: number[], dtype: 'f32' | 'f16') => {
      const t = backend.zeros(shape, dtype)
      this.#tensors.push(t)
      this.#bytes += numel(shape) * DTYPE_BYTES[dtype]
      return t
    }
    for (const [i, spec] of specs.entries()) {
      if (spec.kind === 'recurrent') {
        // recurrent states are updated in place every step: they stay f32, as rounding would accumulate
        const conv = zeros([slots, spec.convKernel - 1, spec.convChannels], 'f32')
        const state = zeros([slots, spec.heads, spec.valueDim, spec.keyDim], 'f32')
        this.layerCaches.push({ kind: 'recurrent', conv, state })
        continue
      }
      const window = spec.kind === 'window' ? spec.window : 0
      // a ring only pays when it is shorter than the context; rows of one call span ≤ length − window positions
      const ring = window > 0 && 2 * window < maxLen
      const length = ring ? 2 * window : maxLen
      if (ring) maxStepRows = Math.min(maxStepRows, length - window + 1)
      const keys = zeros([slots, spec.kvHeads, length, spec.headDim], dtype)
      const values = zeros([slots, spec.kvHeads, length, spec.headDim], dtype)
      this.keys[i] = keys
      this.values[i] = values
      this.layerCaches.push({ kind: 'attention', keys, values, window, ring })
    }
    this.maxStepRows = maxStepRows
    this.#next = specs.some((s) => s.kind === 'recurrent') ? new Int32Array(slots) : null
    this.#free = Array.from({ length: slots }, (_, i) => slots - 1 - i)
  }

  get layers(): number {
    return this.specs.length
  }

  /** Bytes the cache holds on this stage. */
  get bytes(): number {
    return this.#bytes
  }

  get freeSlots(): number {
    return this.#free.length
  }

  /** Writes this step's keys/values [rows, kvHeads, headDim] of `layer` and attends q [rows, heads, headDim] over them. */
  attend(
    layer: number,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slots: Tensor,
    positions: Tensor,
    options: { scale: number; sinks?: Tensor },
  ): Tensor {
    const b = this.backend
    const c = this.layerCaches[layer]!
    if (c.kind !== 'attention')
      throw new DbcError('E_KV_KIND', `layer ${layer} keeps a recurrent state, not keys and values`)
    b.kvWrite(c.keys, k, slots, positions, { ring: c.ring })
    b.kvWrite(c.values, v, slots, positions, { ring: c.ring })
    return b.attention(q, c.keys, c.values, slots, positions, {
      scale: options.scale,
      causal: true,
      window: c.window,
      ring: c.ring,
      sinks: options.sinks,
    })
  }

  /** The recurrent states of `layer`. */
  recurrent(layer: number): { conv: Tensor; state: Tensor } {
    const c = this.layerCaches[layer]!
    if (c.kind !== 'recurrent')
      throw new DbcError('E_KV_KIND', `layer ${layer} keeps keys and values, not a recurrent state`)
    return c
  }

  /** With recurrent layers, each slot's rows must continue where its state stopped (or restart at 0): a state cannot
   * rewind. Checks a step's rows in order and records where each slot ends. Attention-only caches accept any rows. */
  admitRows(slots: Int32Array, positions: Int32Array): void {
    const next = this.#next
    if (!next) return
    const after = Int32Array.from(next)
    for (let r = 0; r < slots.length; r++) {
      const slot = slots[r]!,
        position = positions[r]!
      if (slot < 0 || slot >= this.slots)
        throw new DbcError('E_KV_SLOT', `slot ${slot} is outside 0..${this.slots - 1}`)
      if (position !== 0 && position !== after[slot]) {
        throw new DbcError(
          'E_STEP',
          `slot ${slot}: row at position ${position}, but its recurrent state is at position ${after[slot]}`,
          'linear-attention layers cannot rewind or skip: continue the sequence in order or restart it at position 0',
        )
      }
      after[slot] = position + 1
    }
    next.set(after)
  }

  /** Why blocks of this cache cannot be saved and restored (null: they can). A recurrent layer keeps one state per
   * sequence, not one entry per position: its state at a block boundary exists only where a step ended there. */
  get blockReuseRefusal(): string | null {
    return this.specs.some((s) => s.kind === 'recurrent')
      ? 'linear-attention (recurrent) layers keep one state per sequence, not keys per position'
      : null
  }

  /** Copies the keys and values of positions [start, end) of `slot`, whose first `filled` positions are written. */
  saveBlock(slot: number, start: number, end: number, filled: number): KvBlock {
    const b = this.backend
    if (this.blockReuseRefusal) throw new DbcError('E_KV_KIND', this.blockReuseRefusal)
    if (slot < 0 || slot >= this.slots) throw new DbcError('E_KV_SLOT', `slot ${slot} is outside 0..${this.slots - 1}`)
    if (!(0 <= start && start < end && end <= filled && filled <= this.maxLen))
      throw new DbcError('E_KV_BLOCK', `block [${start}, ${end}) is not inside the ${filled} positions written`)
    // in a scope: a copy that fails frees the layers copied before it
    return b.scope(() => {
      let bytes = 0
      const layers = this.layerCaches.map((c) => {
        if (c.kind !== 'attention') return null
        // a ring holds positions [filled − length, filled)
        const from = c.ring ? Math.max(start, filled - c.keys.shape[2]!) : start
        if (from >= end) return null
        const keys = b.kvReadBlock(c.keys, slot, from, end, { ring: c.ring })
        const values = b.kvReadBlock(c.values, slot, from, end, { ring: c.ring })
        bytes += 2 * numel(keys.shape) * DTYPE_BYTES[keys.dtype]
        return { keys, values, from }
      })
      return { start, end, layers, bytes }
    })
  }

  /** Of `blocks` (consecutive, from position 0), how many can be restored together: those up to the last block end at
   * which every sliding-window layer still has the keys its next row attends. */
  restorableBlocks(blocks: readonly KvBlock[]): number {
    for (let n = blocks.length; n > 0; n--) {
      const end = blocks[n - 1]!.end
      const ok = this.layerCaches.every((c, i) => {
        if (c.kind !== 'attention' || !c.ring) return true
        // the row at position `end` attends keys (end − window, end]: each block must hold its part of them
        const need = Math.max(0, end - c.window + 1)
        return blocks.slice(0, n).every((k) => {
          const lo = Math.max(k.start, need)
          return lo >= k.end || (k.layers[i] != null && k.layers[i]!.from <= lo)
        })
      })
      if (ok) return n
    }
    return 0
  }

  /** Writes `blocks` (consecutive, from position 0) into `slot`, which then holds their positions as if computed: the
   * very bits they were saved with. */
  restoreBlocks(slot: number, blocks: readonly KvBlock[]): void {
    const b = this.backend
    if (this.blockReuseRefusal) throw new DbcError('E_KV_KIND', this.blockReuseRefusal)
    if (slot < 0 || slot >= this.slots) throw new DbcError('E_KV_SLOT', `slot ${slot} is outside 0..${this.slots - 1}`)
    for (const block of blocks)
      for (const [i, c] of this.layerCaches.entries()) {
        const part = block.layers[i]
        if (c.kind !== 'attention' || !part) continue
        b.kvWriteBlock(c.keys, part.keys, slot, part.from, { ring: c.ring })
        b.kvWriteBlock(c.values, part.values, slot, part.from, { ring: c.ring })
      }
  }

  /** Frees a saved block's tensors. */
  freeBlock(block: KvBlock): void {
    for (const part of block.layers) if (part) (this.backend.free(part.keys), this.backend.free(part.values))
  }

  allocate(): number {
    const slot = this.#free.pop()
    if (slot === undefined)
      throw new DbcError(
        'E_KV_FULL',
        `all ${this.slots} KV slots are in use`,
        'wait for a request to finish or start with more slots',
      )
    return slot
  }

  /** Claims a specific slot (a remote stage mirrors the head's choice). */
  claim(slot: number): void {
    const at = this.#free.indexOf(slot)
    if (at < 0) throw new DbcError('E_KV_SLOT', `KV slot ${slot} is not free`)
    this.#free.splice(at, 1)
  }

  release(slot: number): void {
    if (slot < 0 || slot >= this.slots || this.#free.includes(slot))
      throw new DbcError('E_KV_SLOT', `KV slot ${slot} is not in use`)
    this.#free.push(slot)
  }

  /** Every slot free again: a tensor-parallel rank whose rank 0 went away starts over when it rejoins (rank 0 opens the
   * slots it still holds, and their requests re-prefill). */
  releaseAll(): void {
    this.#free.splice(0, this.#free.length, ...Array.from({ length: this.slots }, (_, i) => this.slots - 1 - i))
  }

  /** Frees the tensors; the cache cannot be used afterwards. */
  close(): void {
    for (const t of this.#tensors) this.backend.free(t)
  }
}

/** Bytes of KV per token per layer: keys and values of `elementBytes` each (Backend.kvDtype: 2 on cpu, 4 on mlx). */
export const kvBytesPerTokenLayer = (kvHeads: number, headDim: number, elementBytes: number): number =>
  2 * kvHeads * headDim * elementBytes
