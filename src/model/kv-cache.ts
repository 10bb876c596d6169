/** The KV cache of one stage: per layer, key and value tensors [slots, kvHeads, length, headDim]; one slot per sequence.
 * Each layer has its own kind: `full` keeps every position up to maxLen; `window` (sliding-window attention) keeps a ring
 * of the last 2·window positions, so its memory stays flat however long a sequence runs. Slots are shared by all layers:
 * allocate/claim/release work the same whatever the kinds. */
import { DbcError } from '../errors.ts'
import type { Backend, Tensor } from '../tensor/backend.ts'

export type LayerCacheSpec = { kind: 'full'; kvHeads: number; headDim: number } | { kind: 'window'; kvHeads: number; headDim: number; window: number }

/** What a layer's attention needs to write its keys/values and read them back. */
export interface LayerCache {
  keys: Tensor
  values: Tensor
  /** Keys attended per row: 0 for all positions up to the row's own, else the sliding window. */
  window: number
  /** The tensors are rings (position p at index p mod length). */
  ring: boolean
}

export const fullLayers = (layers: number, kvHeads: number, headDim: number): LayerCacheSpec[] =>
  Array.from({ length: layers }, () => ({ kind: 'full', kvHeads, headDim }))

export class KvCache {
  readonly keys: Tensor[] = []
  readonly values: Tensor[] = []
  readonly layerCaches: LayerCache[] = []
  /** The most rows one forward call may carry (a ring of 2·window holds the keys of window + 1 consecutive rows). */
  readonly maxStepRows: number
  readonly #free: number[]
  #bytes = 0

  constructor(
    private readonly backend: Backend,
    readonly specs: readonly LayerCacheSpec[],
    readonly slots: number,
    readonly maxLen: number,
  ) {
    let maxStepRows = Infinity
    for (const spec of specs) {
      const window = spec.kind === 'window' ? spec.window : 0
      // a ring only pays when it is shorter than the context; rows of one call span ≤ length − window positions
      const ring = window > 0 && 2 * window < maxLen
      const length = ring ? 2 * window : maxLen
      if (ring) maxStepRows = Math.min(maxStepRows, length - window + 1)
      const keys = backend.zeros([slots, spec.kvHeads, length, spec.headDim], 'f32')
      const values = backend.zeros([slots, spec.kvHeads, length, spec.headDim], 'f32')
      this.keys.push(keys)
      this.values.push(values)
      this.layerCaches.push({ keys, values, window, ring })
      this.#bytes += 2 * slots * spec.kvHeads * length * spec.headDim * 4
    }
    this.maxStepRows = maxStepRows
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
  attend(layer: number, q: Tensor, k: Tensor, v: Tensor, slots: Tensor, positions: Tensor, options: { scale: number; sinks?: Tensor }): Tensor {
    const b = this.backend
    const c = this.layerCaches[layer]!
    b.kvWrite(c.keys, k, slots, positions, { ring: c.ring })
    b.kvWrite(c.values, v, slots, positions, { ring: c.ring })
    return b.attention(q, c.keys, c.values, slots, positions, { scale: options.scale, causal: true, window: c.window, ring: c.ring, sinks: options.sinks })
  }

  allocate(): number {
    const slot = this.#free.pop()
    if (slot === undefined) throw new DbcError('E_KV_FULL', `all ${this.slots} KV slots are in use`, 'wait for a request to finish or start with more slots')
    return slot
  }

  /** Claims a specific slot (a remote stage mirrors the head's choice). */
  claim(slot: number): void {
    const at = this.#free.indexOf(slot)
    if (at < 0) throw new DbcError('E_KV_SLOT', `KV slot ${slot} is not free`)
    this.#free.splice(at, 1)
  }

  release(slot: number): void {
    if (slot < 0 || slot >= this.slots || this.#free.includes(slot)) throw new DbcError('E_KV_SLOT', `KV slot ${slot} is not in use`)
    this.#free.push(slot)
  }

  /** Frees the tensors; the cache cannot be used afterwards. */
  close(): void {
    for (const t of [...this.keys, ...this.values]) this.backend.free(t)
  }
}

/** Bytes of KV per token per layer (keys and values, f32 on the cpu backend). */
export const kvBytesPerTokenLayer = (kvHeads: number, headDim: number): number => 2 * kvHeads * headDim * 4
