/** The KV cache of one stage: per layer, key and value tensors [slots, kvHeads, maxLen, headDim]; one slot per sequence. */
import { DbcError } from '../errors.ts'
import type { Backend, Tensor } from '../tensor/backend.ts'

export class KvCache {
  readonly keys: Tensor[] = []
  readonly values: Tensor[] = []
  readonly #free: number[]

  constructor(
    backend: Backend,
    readonly layers: number,
    readonly slots: number,
    readonly maxLen: number,
    readonly kvHeads: number,
    readonly headDim: number,
  ) {
    for (let i = 0; i < layers; i++) {
      this.keys.push(backend.zeros([slots, kvHeads, maxLen, headDim], 'f32'))
      this.values.push(backend.zeros([slots, kvHeads, maxLen, headDim], 'f32'))
    }
    this.#free = Array.from({ length: slots }, (_, i) => slots - 1 - i)
  }

  /** Bytes the cache holds on this stage. */
  get bytes(): number {
    return 2 * this.layers * this.slots * this.kvHeads * this.maxLen * this.headDim * 4
  }

  get freeSlots(): number {
    return this.#free.length
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
}

/** Bytes of KV per token per layer (keys and values, f32 on the cpu backend). */
export const kvBytesPerTokenLayer = (kvHeads: number, headDim: number): number => 2 * kvHeads * headDim * 4
