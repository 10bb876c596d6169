/** The C shim's one-shot AEAD (ffi/aead.h): AES-256-GCM and ChaCha20-Poly1305 from the system's libcrypto, for the link's
 * sealed frames. Where the shim or libcrypto does not load, `nativeAead()` is null and aead-channel.ts seals in
 * JavaScript instead; the ciphertexts are the same bytes either way (test/link/native-aead.test.ts). */
import { dlopen, FFIType, ptr } from 'bun:ffi'
import { shimLocation } from '../shim-location.ts'
import { TAG_BYTES } from './frames.ts'

const { ptr: P, i32, i64 } = FFIType

/** ffi/aead.h, in order (test/tensor/native-abi.test.ts checks it against the header). */
export const AEAD_SYMBOLS = {
  dbc_aead_available: { args: [i32], returns: i32 },
  dbc_aead_seal: { args: [i32, P, P, P, i64, P, i64, P], returns: i32 },
  dbc_aead_open: { args: [i32, P, P, P, i64, P, i64, P], returns: i32 },
  dbc_last_error: { args: [], returns: FFIType.cstring },
} as const

/** aead.h's cipher ids. */
export const NATIVE_CIPHER_IDS = { 'aes-256-gcm': 0, 'chacha20-poly1305': 1 } as const
export type NativeCipher = keyof typeof NATIVE_CIPHER_IDS

const AUTH_FAILED = -4
/** bun:ffi cannot take the address of an empty array: empty inputs point here (nothing is read or written). */
const EMPTY = new Uint8Array(1)
const at = (b: Uint8Array, offset = 0) => (b.byteLength > offset ? ptr(b, offset) : ptr(EMPTY))

export interface NativeAead {
  /** Whether libcrypto has this cipher. */
  has(cipher: NativeCipher): boolean
  /** ciphertext ‖ tag into out[offset, offset + plaintext + 16). */
  seal(
    cipher: NativeCipher,
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
    offset: number,
  ): void
  /** The plaintext, or an Error('invalid tag') when anything sealed was altered. */
  open(cipher: NativeCipher, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array
}

let loaded: NativeAead | null | undefined

/** The shim's AEAD, opened once; null where the shim cannot be opened or libcrypto is missing. */
export function nativeAead(): NativeAead | null {
  if (loaded !== undefined) return loaded
  let lib: ReturnType<typeof dlopen<typeof AEAD_SYMBOLS>>['symbols']
  try {
    lib = dlopen(shimLocation(), AEAD_SYMBOLS).symbols
  } catch {
    return (loaded = null) // no shim (or an older one without ffi/aead.c): the JavaScript ciphers serve
  }
  const has = new Map(
    Object.entries(NATIVE_CIPHER_IDS).map(([name, id]) => [name, lib.dbc_aead_available(id) === 1] as const),
  )
  if (![...has.values()].some(Boolean)) return (loaded = null)
  // the C side reads 32 key and 12 nonce bytes: anything else is refused here, as @noble refuses it
  const sizes = (key: Uint8Array, nonce: Uint8Array) => {
    if (key.byteLength !== 32 || nonce.byteLength !== 12)
      throw new RangeError(`AEAD key and nonce must be 32 and 12 bytes, got ${key.byteLength} and ${nonce.byteLength}`)
  }
  const fail = (rc: number): never => {
    if (rc === AUTH_FAILED) throw new Error('invalid tag')
    throw new Error(`native AEAD failed: ${lib.dbc_last_error()}`)
  }
  loaded = {
    has: (cipher) => has.get(cipher) === true,
    seal(cipher, key, nonce, aad, plaintext, out, offset) {
      sizes(key, nonce)
      if (out.byteLength - offset < plaintext.byteLength + TAG_BYTES)
        throw new RangeError('the output is too small for the sealed message')
      const rc = lib.dbc_aead_seal(
        NATIVE_CIPHER_IDS[cipher],
        ptr(key),
        ptr(nonce),
        at(aad),
        aad.byteLength,
        at(plaintext),
        plaintext.byteLength,
        ptr(out, offset),
      )
      if (rc !== 0) fail(rc)
    },
    open(cipher, key, nonce, aad, sealed) {
      sizes(key, nonce)
      if (sealed.byteLength < TAG_BYTES) throw new Error('sealed payload shorter than its tag')
      const plaintext = new Uint8Array(sealed.byteLength - TAG_BYTES)
      const rc = lib.dbc_aead_open(
        NATIVE_CIPHER_IDS[cipher],
        ptr(key),
        ptr(nonce),
        at(aad),
        aad.byteLength,
        ptr(sealed),
        sealed.byteLength,
        at(plaintext),
      )
      if (rc !== 0) fail(rc)
      return plaintext
    },
  }
  return loaded
}
