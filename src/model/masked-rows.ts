/** Reading a logit row through a grammar's mask of allowed tokens without writing −∞ into a copy of it: the allowed
 * token with the best logit, and the allowed candidates at or above a floor, straight from the row and the packed mask
 * the matcher gives. The shim does it in one vectorized pass (ffi/sample.c); the same rules in TypeScript serve where
 * the shim cannot be opened and as the tests' reference. Both give the same ids. */
import { openSampleLibrary, type SampleSymbols } from '../tensor/native.ts'

/** Bit (id & 31) of word (id >> 5) set = id allowed; ids past its end are not allowed. */
type Mask = Uint32Array

export interface MaskedRows {
  /** The allowed id with the largest logit, the lowest on ties (NaN counts as below −∞; when no allowed logit is a
   * number, the lowest allowed id); -1 when the mask allows none of the row. */
  argmax(logits: Float32Array, allowed: Mask): number
  /** Writes into keys[0..), in id order, every allowed id whose logit v is >= floor as the sampler's key (float64 −v
   * with the id in the low mantissa bits); returns how many. `keys` holds at least logits.length. */
  candidates(logits: Float32Array, allowed: Mask, floor: number, keys: Float64Array): number
}

/** Calls `visit` with every allowed id below `n`, ascending; stops early when it returns true. */
function forAllowed(allowed: Mask, n: number, visit: (id: number) => boolean | void): void {
  const words = Math.min(allowed.length, (n + 31) >> 5)
  for (let w = 0; w < words; w++) {
    let bits = allowed[w]!
    while (bits !== 0) {
      const low = bits & -bits
      const id = (w << 5) | (31 - Math.clz32(low))
      if (id >= n) return
      if (visit(id)) return
      bits = (bits ^ low) >>> 0
    }
  }
}

let keyWords: Uint32Array = new Uint32Array(0)

export const typescriptMaskedRows: MaskedRows = {
  argmax(logits, allowed) {
    let best = -1
    let bestValue = -Infinity
    let firstInfinite = -1
    let first = -1
    forAllowed(allowed, logits.length, (id) => {
      const v = logits[id]!
      if (first < 0) first = id
      if (v > bestValue) {
        best = id
        bestValue = v
      } else if (v === -Infinity && firstInfinite < 0) firstInfinite = id
    })
    return best >= 0 ? best : firstInfinite >= 0 ? firstInfinite : first
  },
  candidates(logits, allowed, floor, keys) {
    if (keyWords.buffer !== keys.buffer) keyWords = new Uint32Array(keys.buffer, keys.byteOffset, keys.length * 2)
    let n = 0
    forAllowed(allowed, logits.length, (id) => {
      const v = logits[id]!
      if (!(v >= floor)) return
      keys[n] = -v
      keyWords[2 * n] = (keyWords[2 * n]! | id) >>> 0
      n++
    })
    return n
  },
}

const NONE_ALLOWED = -4 // DBC_SAMPLE_NONE_ALLOWED

/** The shim's calls (ffi/sample.h) behind the same interface. */
export function nativeMaskedRows(lib: SampleSymbols): MaskedRows {
  const fail = (rc: number): never => {
    throw new RangeError(`masked sampling failed (${rc}): ${lib.dbc_last_error()}`)
  }
  return {
    argmax(logits, allowed) {
      const rc = lib.dbc_masked_argmax(logits, logits.length, allowed, allowed.length)
      return rc >= 0 ? rc : rc === NONE_ALLOWED ? -1 : fail(rc)
    },
    candidates(logits, allowed, floor, keys) {
      if (keys.length < logits.length) throw new RangeError('masked candidates: keys shorter than the row')
      const rc = lib.dbc_masked_candidates(logits, logits.length, allowed, allowed.length, floor, keys)
      return rc >= 0 ? rc : fail(rc)
    },
  }
}

let current: MaskedRows | undefined
/** The shim's reader, opened once; the TypeScript one where the shim cannot be opened (a shim built before
 * ffi/sample.c): the same ids, only slower. */
export function maskedRows(): MaskedRows {
  if (current) return current
  try {
    current = nativeMaskedRows(openSampleLibrary())
  } catch {
    current = typescriptMaskedRows
  }
  return current
}
