/** Sealed frames (docs/protocol.md §Sealed frames): AES-256-GCM by default through the runtime's native crypto, ChaCha20-Poly1305
 * selectable, native through the C shim's libcrypto (link/native-aead.ts: Bun's crypto lacks it), else @noble/ciphers. Nonce = u32 direction ‖ u64 counter, never reused; AAD binds
 * cluster id, request id, stage, sequence number and frame type; frames must arrive in order, exactly once. Both sides
 * rekey at the same counter boundary (key' = HKDF-SHA256(key, zero salt, "dbcluster/v1 rekey")), so no extra messages cross the wire. */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { UsageError } from '../errors.ts'
import { LinkError } from './errors.ts'
import { FRAME_HEADER_BYTES, SEALED_HEADER_BYTES, TAG_BYTES } from './frames.ts'
import { nativeAead } from './native-aead.ts'

export const CIPHERS = ['aes-256-gcm', 'chacha20-poly1305'] as const
export type CipherName = (typeof CIPHERS)[number]

/** A --cipher value, or a usage error naming the flag and the ciphers there are. */
export function parseCipher(value: string, flag = '--cipher'): CipherName {
  if ((CIPHERS as readonly string[]).includes(value)) return value as CipherName
  throw new UsageError(`unknown ${flag} '${value}'`, `use ${CIPHERS.join(' or ')} (the same on every node)`)
}

/** What seals with this cipher here, for logs: ChaCha20-Poly1305 is native only where the shim's libcrypto has it. */
export function aeadImplementation(cipher: CipherName): string {
  if (cipher === 'aes-256-gcm') return 'native, node:crypto'
  return nativeAead()?.has(cipher) ? 'native, libcrypto through the shim' : 'JavaScript, @noble/ciphers'
}

export interface SealedHeader {
  type: number
  stage: number
  requestId: bigint
}

export interface AeadOptions {
  cipher: CipherName
  key: Uint8Array
  /** 1 = initiator → responder, 2 = responder → initiator. */
  direction: 1 | 2
  clusterId: string
  /** Frames per key before both sides derive the next one (default 2^32, far below the 2^64 nonce space). */
  rekeyInterval?: bigint
}

export function nonceFor(direction: number, counter: bigint): Uint8Array {
  const nonce = new Uint8Array(12)
  const view = new DataView(nonce.buffer)
  view.setUint32(0, direction, false)
  view.setBigUint64(4, counter, false)
  return nonce
}

export function aadFor(clusterId: Uint8Array, header: SealedHeader, seq: bigint): Uint8Array {
  const aad = new Uint8Array(21 + clusterId.byteLength)
  const view = new DataView(aad.buffer)
  aad[0] = header.type
  view.setBigUint64(1, seq, true)
  view.setUint32(9, header.stage, true)
  view.setBigUint64(13, header.requestId, true)
  aad.set(clusterId, 21)
  return aad
}

/** Low-level AEAD: seal(key, nonce, aad, plaintext) → ciphertext ‖ tag; open throws on any mismatch.
 * With `into`/`at`, the result is written there (one copy on the hot path instead of three). */
export function seal(
  cipher: CipherName,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  into?: Uint8Array,
  at = 0,
): Uint8Array {
  const out = into ?? new Uint8Array(plaintext.byteLength + TAG_BYTES)
  if (cipher === 'chacha20-poly1305') {
    const native = nativeAead()
    if (native?.has(cipher)) native.seal(cipher, key, nonce, aad, plaintext, out, at)
    else out.set(chacha20poly1305(key, nonce, aad).encrypt(plaintext), at)
    return out
  }
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES })
  c.setAAD(aad)
  const head = c.update(plaintext)
  const tail = c.final()
  out.set(head, at)
  out.set(tail, at + head.byteLength)
  out.set(c.getAuthTag(), at + head.byteLength + tail.byteLength)
  return out
}

export function open(
  cipher: CipherName,
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  sealed: Uint8Array,
): Uint8Array {
  if (sealed.byteLength < TAG_BYTES) throw new Error('sealed payload shorter than its tag')
  if (cipher === 'chacha20-poly1305') {
    const native = nativeAead()
    return native?.has(cipher)
      ? native.open(cipher, key, nonce, aad, sealed)
      : chacha20poly1305(key, nonce, aad).decrypt(sealed)
  }
  const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES })
  d.setAAD(aad)
  d.setAuthTag(sealed.subarray(sealed.byteLength - TAG_BYTES))
  const head = d.update(sealed.subarray(0, sealed.byteLength - TAG_BYTES))
  const tail = d.final() // throws when the tag does not verify
  if (tail.byteLength === 0) return new Uint8Array(head.buffer, head.byteOffset, head.byteLength)
  const out = new Uint8Array(head.byteLength + tail.byteLength)
  out.set(head)
  out.set(tail, head.byteLength)
  return out
}

const REKEY_INFO = new TextEncoder().encode('dbcluster/v1 rekey')

/** One direction of a link: the sender seals with increasing counters, the receiver accepts exactly the next one. */
class Direction {
  #key: Uint8Array
  #counter = 0n
  readonly #clusterId: Uint8Array
  readonly #rekeyInterval: bigint
  constructor(readonly options: AeadOptions) {
    this.#key = options.key
    this.#clusterId = new TextEncoder().encode(options.clusterId)
    this.#rekeyInterval = options.rekeyInterval ?? 1n << 32n
  }
  get counter() {
    return this.#counter
  }
  next(): { key: Uint8Array; seq: bigint; clusterId: Uint8Array } {
    if (this.#counter > 0n && this.#counter % this.#rekeyInterval === 0n)
      this.#key = hkdf(sha256, this.#key, undefined, REKEY_INFO, 32)
    if (this.#counter >= (1n << 64n) - 1n)
      throw new LinkError('E_NONCE_EXHAUSTED', 'the nonce counter is exhausted', 'reconnect for fresh keys')
    return { key: this.#key, seq: this.#counter++, clusterId: this.#clusterId }
  }
}

export class AeadSender {
  readonly #dir: Direction
  constructor(readonly options: AeadOptions) {
    this.#dir = new Direction(options)
  }
  get sent(): bigint {
    return this.#dir.counter
  }
  /** Returns the sealed body: u64 seq | u32 stage | u64 request id | ciphertext ‖ tag. */
  seal(header: SealedHeader, plaintext: Uint8Array): Uint8Array {
    return this.sealFrame(header, plaintext).subarray(FRAME_HEADER_BYTES)
  }

  /** The whole wire frame (length, type, sealed body) in one buffer, written once; into `into` when it is given and has
   * exactly the frame's size (a caller that sends frames of one size again and again reuses one buffer). */
  sealFrame(header: SealedHeader, plaintext: Uint8Array, into?: Uint8Array): Uint8Array {
    const { key, seq, clusterId } = this.#dir.next()
    const size = FRAME_HEADER_BYTES + SEALED_HEADER_BYTES + plaintext.byteLength + TAG_BYTES
    const frame = into?.byteLength === size ? into : new Uint8Array(size)
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
    view.setBigUint64(0, BigInt(frame.byteLength - 8), true)
    frame[8] = header.type
    view.setBigUint64(FRAME_HEADER_BYTES, seq, true)
    view.setUint32(FRAME_HEADER_BYTES + 8, header.stage, true)
    view.setBigUint64(FRAME_HEADER_BYTES + 12, header.requestId, true)
    seal(
      this.options.cipher,
      key,
      nonceFor(this.options.direction, seq),
      aadFor(clusterId, header, seq),
      plaintext,
      frame,
      FRAME_HEADER_BYTES + SEALED_HEADER_BYTES,
    )
    return frame
  }
}

export class AeadReceiver {
  readonly #dir: Direction
  constructor(readonly options: AeadOptions) {
    this.#dir = new Direction(options)
  }
  /** Opens the next frame; throws LinkError for a frame out of order, repeated, or failing authentication. */
  open(type: number, body: Uint8Array): { header: SealedHeader; seq: bigint; plaintext: Uint8Array } {
    if (body.byteLength < SEALED_HEADER_BYTES + TAG_BYTES)
      throw new LinkError('E_FRAME_SHORT', `sealed frame of ${body.byteLength} bytes is too short`)
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength)
    const seq = view.getBigUint64(0, true)
    const header: SealedHeader = { type, stage: view.getUint32(8, true), requestId: view.getBigUint64(12, true) }
    const expected = this.#dir.counter
    if (seq !== expected) {
      throw new LinkError(
        seq < expected ? 'E_FRAME_REPLAY' : 'E_FRAME_ORDER',
        `frame ${seq} arrived when ${expected} was due (${seq < expected ? 'replayed' : 'out of order'})`,
        'the link was closed; it reconnects with fresh keys',
      )
    }
    const { key, clusterId } = this.#dir.next()
    try {
      const plaintext = open(
        this.options.cipher,
        key,
        nonceFor(this.options.direction, seq),
        aadFor(clusterId, header, seq),
        body.subarray(SEALED_HEADER_BYTES),
      )
      return { header, seq, plaintext }
    } catch {
      throw new LinkError(
        'E_FRAME_AUTH',
        `frame ${seq} (stage ${header.stage}) failed authentication`,
        'the link was closed; check the peer key pinned for this node',
      )
    }
  }
}
