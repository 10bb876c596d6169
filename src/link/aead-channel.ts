/** Sealed frames (docs/protocol.md §Sealed frames), AES-256-GCM by default or ChaCha20-Poly1305. Whole frames are sealed
 * and opened in C where the shim's libcrypto loads (link/native-channel.ts: one keyed context per direction, no
 * allocation); otherwise by the TypeScript channel here: AES through the runtime's native crypto, ChaCha20-Poly1305
 * through the shim's one-shot AEAD (link/native-aead.ts: Bun's crypto lacks it), else @noble/ciphers. Both write the
 * same bytes. Nonce = u32 direction ‖ u64 counter, never reused; AAD binds cluster id, request id, stage, sequence
 * number and frame type; frames must arrive in order, exactly once. Both sides rekey at the same counter boundary
 * (key' = HKDF-SHA256(key, zero salt, "dbcluster/v1 rekey")), so no extra messages cross the wire. */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { UsageError } from '../errors.ts'
import { LinkError } from './errors.ts'
import { FRAME_HEADER_BYTES, SEALED_HEADER_BYTES, TAG_BYTES } from './frames.ts'
import { nativeAead } from './native-aead.ts'
import { LCH, nativeChannel, NativeChannelError, NativeDirection } from './native-channel.ts'

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
  /** Who seals and opens: the shim's link channel where it loads ('auto', the default), or the TypeScript channel
   * ('script': tests and benchmarks compare the two). 'native' throws where the shim or the cipher is missing. */
  implementation?: 'auto' | 'native' | 'script'
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
const COUNTER_END = (1n << 64n) - 1n
const FRAME_OVERHEAD = FRAME_HEADER_BYTES + SEALED_HEADER_BYTES + TAG_BYTES

/** What seals and opens the link's frames with this cipher here: the shim's link channel (ffi/link_channel.c, keyed
 * once per direction) where it loads, else the TypeScript channel below over `aeadImplementation`'s AEAD. */
export function frameImplementation(
  cipher: CipherName,
  implementation: AeadOptions['implementation'] = 'auto',
): string {
  return implementation !== 'script' && nativeChannel()?.has.has(cipher)
    ? 'native, libcrypto through the shim (link channel)'
    : `TypeScript channel, ${aeadImplementation(cipher)}`
}

/** One direction of a link in TypeScript: the sender seals with increasing counters, the receiver accepts exactly the
 * next one. The nonce and AAD live in buffers of their own, rewritten per frame (no allocation besides the cipher's). */
class ScriptDirection {
  #key: Uint8Array
  #counter = 0n
  readonly #rekeyInterval: bigint
  readonly nonce = new Uint8Array(12)
  readonly aad: Uint8Array
  readonly #nonceView: DataView
  constructor(readonly options: AeadOptions) {
    this.#key = options.key
    const clusterId = new TextEncoder().encode(options.clusterId)
    this.aad = new Uint8Array(1 + SEALED_HEADER_BYTES + clusterId.byteLength)
    this.aad.set(clusterId, 1 + SEALED_HEADER_BYTES)
    this.#nonceView = new DataView(this.nonce.buffer)
    this.#nonceView.setUint32(0, options.direction, false)
    this.#rekeyInterval = options.rekeyInterval ?? 1n << 32n
  }
  get counter() {
    return this.#counter
  }
  /** docs/protocol.md §Sealed frames: rekey at the boundary, refuse an exhausted counter, then the nonce of this seq. */
  next(): { key: Uint8Array; seq: bigint } {
    if (this.#counter > 0n && this.#counter % this.#rekeyInterval === 0n)
      this.#key = hkdf(sha256, this.#key, undefined, REKEY_INFO, 32)
    if (this.#counter >= COUNTER_END)
      throw new LinkError('E_NONCE_EXHAUSTED', 'the nonce counter is exhausted', 'reconnect for fresh keys')
    const seq = this.#counter++
    this.#nonceView.setBigUint64(4, seq, false)
    return { key: this.#key, seq }
  }
}

/** Native directions are freed with their owner when it is collected (a link also frees them when it closes). */
const natives = new FinalizationRegistry<NativeDirection>((d) => d.free())

function nativeDirection(options: AeadOptions, opening: boolean, owner: object): NativeDirection | null {
  const wanted = options.implementation ?? 'auto'
  if (wanted === 'script') return null
  const native = nativeChannel()
  if (!native?.has.has(options.cipher)) {
    if (wanted === 'native')
      throw new LinkError('E_LINK', `the shim's link channel with ${options.cipher} is not available here`)
    return null
  }
  const d = new NativeDirection(
    native.lib,
    options.cipher,
    options.key,
    options.direction,
    new TextEncoder().encode(options.clusterId),
    options.rekeyInterval ?? 1n << 32n,
    opening,
  )
  natives.register(owner, d, owner)
  return d
}

function nativeFailure(error: unknown): never {
  if (error instanceof NativeChannelError && error.rc === LCH.exhausted)
    throw new LinkError('E_NONCE_EXHAUSTED', 'the nonce counter is exhausted', 'reconnect for fresh keys')
  throw new LinkError('E_LINK', `the link channel failed: ${(error as Error).message}`)
}

/** u64 LE at body[at] (a sealed header's seq or request id). */
function u64At(b: Uint8Array, at: number): bigint {
  const lo = (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0
  const hi = (b[at + 4]! | (b[at + 5]! << 8) | (b[at + 6]! << 16) | (b[at + 7]! << 24)) >>> 0
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo)
}
const u32At = (b: Uint8Array, at: number) =>
  (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0

/** Writes the 9-byte framing header and the 20-byte sealed header (docs/protocol.md §Sealed frames) into frame. */
function writeHeaders(frame: Uint8Array, header: SealedHeader, seq: bigint, aad: Uint8Array): void {
  const view = new DataView(aad.buffer, aad.byteOffset, 1 + SEALED_HEADER_BYTES)
  aad[0] = header.type
  view.setBigUint64(1, seq, true)
  view.setUint32(9, header.stage, true)
  view.setBigUint64(13, header.requestId, true)
  const length = frame.byteLength - 8 // < 2^53: split into two u32s
  const lo = length >>> 0
  const hi = Math.floor(length / 2 ** 32)
  frame[0] = lo & 0xff
  frame[1] = (lo >>> 8) & 0xff
  frame[2] = (lo >>> 16) & 0xff
  frame[3] = lo >>> 24
  frame[4] = hi & 0xff
  frame[5] = (hi >>> 8) & 0xff
  frame[6] = (hi >>> 16) & 0xff
  frame[7] = hi >>> 24
  frame.set(aad.subarray(0, 1 + SEALED_HEADER_BYTES), 8) // the type byte, then the sealed header: the AAD's first 21 bytes
}

export class AeadSender {
  readonly #script: ScriptDirection | null
  readonly #native: NativeDirection | null
  constructor(readonly options: AeadOptions) {
    this.#native = nativeDirection(options, false, this)
    this.#script = this.#native ? null : new ScriptDirection(options)
  }
  get sent(): bigint {
    return this.#native ? this.#native.counter : this.#script!.counter
  }
  /** Returns the sealed body: u64 seq | u32 stage | u64 request id | ciphertext ‖ tag. */
  seal(header: SealedHeader, plaintext: Uint8Array): Uint8Array {
    return this.sealFrame(header, plaintext).subarray(FRAME_HEADER_BYTES)
  }

  /** The whole wire frame (length, type, sealed body) in one buffer, written once; into `into` when it is given and has
   * exactly the frame's size (a caller that sends frames of one size again and again reuses one buffer). */
  sealFrame(header: SealedHeader, plaintext: Uint8Array, into?: Uint8Array): Uint8Array {
    const size = FRAME_OVERHEAD + plaintext.byteLength
    const frame = into?.byteLength === size ? into : new Uint8Array(size)
    if (this.#native) {
      try {
        this.#native.seal(header.type, header.stage, header.requestId, plaintext, frame)
      } catch (error) {
        nativeFailure(error)
      }
      return frame
    }
    const direction = this.#script!
    const { key, seq } = direction.next()
    writeHeaders(frame, header, seq, direction.aad)
    seal(
      this.options.cipher,
      key,
      direction.nonce,
      direction.aad,
      plaintext,
      frame,
      FRAME_HEADER_BYTES + SEALED_HEADER_BYTES,
    )
    return frame
  }

  /** Frees the native direction now (the link is closed); sealing afterwards throws. */
  free(): void {
    natives.unregister(this)
    this.#native?.free()
  }
}

export class AeadReceiver {
  readonly #script: ScriptDirection | null
  readonly #native: NativeDirection | null
  constructor(readonly options: AeadOptions) {
    this.#native = nativeDirection(options, true, this)
    this.#script = this.#native ? null : new ScriptDirection(options)
  }
  /** Opens the next frame; throws LinkError for a frame out of order, repeated, or failing authentication. */
  open(type: number, body: Uint8Array): { header: SealedHeader; seq: bigint; plaintext: Uint8Array } {
    const plaintext = new Uint8Array(Math.max(0, body.byteLength - SEALED_HEADER_BYTES - TAG_BYTES))
    return { ...this.openInto(type, body, plaintext, 0), plaintext }
  }

  /** As open, with the plaintext written into out[offset, offset + body.byteLength - 36) (a message's records opened
   * straight into its buffer). out is not usable when this throws. */
  openInto(type: number, body: Uint8Array, out: Uint8Array, offset: number): { header: SealedHeader; seq: bigint } {
    if (body.byteLength < SEALED_HEADER_BYTES + TAG_BYTES)
      throw new LinkError('E_FRAME_SHORT', `sealed frame of ${body.byteLength} bytes is too short`)
    if (out.byteLength - offset < body.byteLength - SEALED_HEADER_BYTES - TAG_BYTES)
      throw new RangeError('the output is too small for the frame')
    const header: SealedHeader = { type, stage: u32At(body, 8), requestId: u64At(body, 12) }
    if (this.#native) {
      try {
        this.#native.open(type, body, out, offset)
      } catch (error) {
        const rc = error instanceof NativeChannelError ? error.rc : 0
        const seq = u64At(body, 0)
        if (rc === LCH.replay || rc === LCH.order) throw outOfTurn(seq, this.#native.counter)
        if (rc === LCH.auth) throw failedAuthentication(seq, header.stage)
        nativeFailure(error)
      }
      return { header, seq: u64At(body, 0) }
    }
    const direction = this.#script!
    const seq = u64At(body, 0)
    if (seq !== direction.counter) throw outOfTurn(seq, direction.counter)
    const { key } = direction.next()
    const aad = direction.aad
    aad[0] = type
    aad.set(body.subarray(0, SEALED_HEADER_BYTES), 1)
    try {
      out.set(open(this.options.cipher, key, direction.nonce, aad, body.subarray(SEALED_HEADER_BYTES)), offset)
    } catch {
      throw failedAuthentication(seq, header.stage)
    }
    return { header, seq }
  }

  /** Frees the native direction now (the link is closed); opening afterwards throws. */
  free(): void {
    natives.unregister(this)
    this.#native?.free()
  }
}

function outOfTurn(seq: bigint, expected: bigint): LinkError {
  return new LinkError(
    seq < expected ? 'E_FRAME_REPLAY' : 'E_FRAME_ORDER',
    `frame ${seq} arrived when ${expected} was due (${seq < expected ? 'replayed' : 'out of order'})`,
    'the link was closed; it reconnects with fresh keys',
  )
}

function failedAuthentication(seq: bigint, stage: number): LinkError {
  return new LinkError(
    'E_FRAME_AUTH',
    `frame ${seq} (stage ${stage}) failed authentication`,
    'the link was closed; check the peer key pinned for this node',
  )
}
