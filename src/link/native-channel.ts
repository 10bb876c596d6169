/** The C shim's sealed-frame directions (ffi/link_channel.h): one direction of a link sealing or opening whole frames
 * in the link's wire format, keyed once, with no allocation per frame. aead-channel.ts uses them where the shim and
 * libcrypto load, and seals in TypeScript otherwise; both write the same bytes (test/link/native-channel.test.ts). */
import { dlopen, FFIType, ptr, type Pointer } from 'bun:ffi'
import { shimLocation } from '../shim-location.ts'
import { NATIVE_CIPHER_IDS, type NativeCipher } from './native-aead.ts'

const { ptr: P, i32, u32, i64, u64 } = FFIType

/** ffi/link_channel.h, in order (test/tensor/native-abi.test.ts checks it against the header). */
export const LINK_CHANNEL_SYMBOLS = {
  dbc_lch_available: { args: [i32], returns: i32 },
  dbc_lch_new: { args: [i32, P, i32, P, i64, u64, i32, P], returns: i32 },
  dbc_lch_seal: { args: [P, i32, u32, u64, P, i64, P], returns: i32 },
  dbc_lch_open: { args: [P, i32, P, i64, P], returns: i32 },
  dbc_lch_counter: { args: [P, P], returns: i32 },
  dbc_lch_free: { args: [P], returns: i32 },
  dbc_last_error: { args: [], returns: FFIType.cstring },
} as const

/** link_channel.h's codes. */
export const LCH = { auth: -4, replay: -7, order: -8, exhausted: -9, short: -10 } as const

type Symbols = ReturnType<typeof dlopen<typeof LINK_CHANNEL_SYMBOLS>>['symbols']

/** bun:ffi cannot take the address of an empty array: empty inputs point here (nothing is read or written). */
const EMPTY = new Uint8Array(1)
const at = (b: Uint8Array, offset = 0) => (b.byteLength > offset ? ptr(b, offset) : ptr(EMPTY))

/** A failed call: its DBC_LCH_* code and the shim's message. */
export class NativeChannelError extends Error {
  constructor(
    readonly rc: number,
    message: string,
  ) {
    super(message)
  }
}

/** One direction of a link in C. Free it when the link is done with it (the key is wiped). */
export class NativeDirection {
  #handle: Pointer | null
  readonly #lib: Symbols
  readonly #counter = new BigUint64Array(1)

  constructor(
    lib: Symbols,
    cipher: NativeCipher,
    key: Uint8Array,
    direction: 1 | 2,
    clusterId: Uint8Array,
    rekeyInterval: bigint,
    opening: boolean,
  ) {
    if (key.byteLength !== 32) throw new RangeError(`a link key is 32 bytes, not ${key.byteLength}`)
    if (rekeyInterval < 1n || rekeyInterval >= 1n << 64n)
      throw new RangeError(`a rekey interval is 1 to 2^64 - 1 frames, not ${rekeyInterval}`)
    this.#lib = lib
    const out = new BigUint64Array(1)
    const rc = lib.dbc_lch_new(
      NATIVE_CIPHER_IDS[cipher],
      ptr(key),
      direction,
      at(clusterId),
      clusterId.byteLength,
      rekeyInterval,
      opening ? 1 : 0,
      ptr(out),
    )
    if (rc !== 0) throw new NativeChannelError(rc, String(lib.dbc_last_error()))
    this.#handle = Number(out[0]!) as unknown as Pointer
  }

  get counter(): bigint {
    this.#lib.dbc_lch_counter(this.#live(), ptr(this.#counter))
    return this.#counter[0]!
  }

  /** The whole frame into frame[0, 45 + payload.byteLength). Throws NativeChannelError. */
  seal(type: number, stage: number, requestId: bigint, payload: Uint8Array, frame: Uint8Array): void {
    const rc = this.#lib.dbc_lch_seal(this.#live(), type, stage, requestId, at(payload), payload.byteLength, ptr(frame))
    if (rc !== 0) throw new NativeChannelError(rc, String(this.#lib.dbc_last_error()))
  }

  /** The body's plaintext into out[offset, offset + body.byteLength - 36). Throws NativeChannelError. */
  open(type: number, body: Uint8Array, out: Uint8Array, offset = 0): void {
    const rc = this.#lib.dbc_lch_open(this.#live(), type, at(body), body.byteLength, at(out, offset))
    if (rc !== 0) throw new NativeChannelError(rc, String(this.#lib.dbc_last_error()))
  }

  free(): void {
    if (this.#handle !== null) this.#lib.dbc_lch_free(this.#handle)
    this.#handle = null
  }

  #live(): Pointer {
    if (this.#handle === null) throw new NativeChannelError(-1, 'this direction was freed')
    return this.#handle
  }
}

let loaded: { lib: Symbols; has: Set<NativeCipher> } | null | undefined

/** The shim's sealed-frame calls, opened once; null where the shim (or an older one without them) or libcrypto is
 * missing. `has` says which ciphers libcrypto offers here. */
export function nativeChannel(): { lib: Symbols; has: Set<NativeCipher> } | null {
  if (loaded !== undefined) return loaded
  if (process.env.DBCLUSTER_LINK_NATIVE === '0') return (loaded = null) // the TypeScript path, on purpose (tests, benchmarks)
  let lib: Symbols
  try {
    lib = dlopen(shimLocation(), LINK_CHANNEL_SYMBOLS).symbols
  } catch {
    return (loaded = null)
  }
  const has = new Set(
    (Object.keys(NATIVE_CIPHER_IDS) as NativeCipher[]).filter((c) => lib.dbc_lch_available(NATIVE_CIPHER_IDS[c]) === 1),
  )
  return (loaded = has.size ? { lib, has } : null)
}
