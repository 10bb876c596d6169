/** The link handshake (docs/protocol.md §Handshake), SIGMA-style, as a pure state machine: randomness and authorization
 * are injected, bytes go in and out, nothing touches a socket.
 *
 *   HELLO  i→r: version, cluster id, serial_i, identity_i, ephemeral_i (X25519), nonce_i, cipher_i
 *   ACK    r→i: version, serial_r, identity_r, ephemeral_r, nonce_r, cipher_r, sig_r(th1), mac_r(th1 ‖ sig_r)
 *   FINISH i→r: sig_i(th2), mac_i(th2 ‖ sig_i)
 *
 * th1 = SHA-256(HELLO ‖ ACK core), th2 = SHA-256(th1 ‖ sig_r ‖ mac_r). Both identities sign the transcript, which holds
 * both ephemeral keys and nonces, so a swapped key or a replayed HELLO breaks a signature; it holds both sides' frame
 * cipher too, so each refuses a peer that seals with another one and no one in between can change either. MAC keys and the two traffic
 * keys come from HKDF-SHA256 over the X25519 secret, salted with both nonces, labelled with the protocol version and
 * bound to the final transcript hash. A peer's identity key must be authorized (pinned, or in a signed roster). */
import { x25519 } from '@noble/curves/ed25519.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { hmac } from '@noble/hashes/hmac.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { equalBytes } from '@noble/ciphers/utils.js'
import { concatBytes } from '@noble/hashes/utils.js'
import { TrustError } from './errors.ts'
import { verifySignature, type Identity } from './identity.ts'

/** v2: HELLO and ACK carry the cipher each side seals its frames with. */
export const PROTOCOL_VERSION = 2
/** The frame cipher a side names when its options do not (link/aead-channel.ts's default). */
export const DEFAULT_CIPHER = 'aes-256-gcm'
const LABEL = new TextEncoder().encode(`dbcluster/v${PROTOCOL_VERSION}`)

export type Authorization = 'authorized' | 'not-pinned' | 'key-mismatch'

export interface HandshakeOptions {
  identity: Identity
  serial: string
  clusterId: string
  /** Decides whether the peer's identity key may speak for its serial (pin store or coordinator roster). */
  authorize: (serial: string, publicKey: Uint8Array) => Authorization | Promise<Authorization>
  randomBytes: (n: number) => Uint8Array
  /** Clock for the handshake deadline (ms); default Date.now. */
  now?: () => number
  /** A message that arrives later than this after the machine was created fails with E_HANDSHAKE_TIMEOUT (default 5000). */
  timeoutMs?: number
  version?: number
  /** The AEAD this side seals frames with (link/aead-channel.ts CipherName); the peer's must be the same. */
  cipher?: string
}

export const HANDSHAKE_TIMEOUT_MS = 5000

export interface HandshakeResult {
  peerSerial: string
  peerPublicKey: Uint8Array
  /** Key for frames the initiator sends (direction 1) and for frames the responder sends (direction 2). */
  initiatorKey: Uint8Array
  responderKey: Uint8Array
  transcriptHash: Uint8Array
}

// ---- message encoding: u8 count, then u32 LE length + bytes per field ----

export function encodeFields(fields: Uint8Array[]): Uint8Array {
  const total = 1 + fields.reduce((a, f) => a + 4 + f.byteLength, 0)
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  out[0] = fields.length
  let at = 1
  for (const f of fields) {
    view.setUint32(at, f.byteLength, true)
    out.set(f, at + 4)
    at += 4 + f.byteLength
  }
  return out
}

export function decodeFields(bytes: Uint8Array, count: number, what: string): Uint8Array[] {
  if (bytes.byteLength < 1 || bytes[0] !== count) throw new TrustError('E_HANDSHAKE_MALFORMED', `${what} is malformed`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const fields: Uint8Array[] = []
  let at = 1
  for (let i = 0; i < count; i++) {
    if (at + 4 > bytes.byteLength) throw new TrustError('E_HANDSHAKE_MALFORMED', `${what} is truncated`)
    const len = view.getUint32(at, true)
    if (at + 4 + len > bytes.byteLength || len > 4096)
      throw new TrustError('E_HANDSHAKE_MALFORMED', `${what} has a bad field length`)
    fields.push(bytes.subarray(at + 4, at + 4 + len))
    at += 4 + len
  }
  if (at !== bytes.byteLength) throw new TrustError('E_HANDSHAKE_MALFORMED', `${what} has trailing bytes`)
  return fields
}

/** Exact sizes of the fixed-length fields: anything else is malformed, before any crypto runs. */
const SIZES = { identity: 33, ephemeral: 32, nonce: 32, signature: 64, mac: 32 } as const
/** Longest cipher name a peer may send (the names are ASCII, e.g. chacha20-poly1305). */
const MAX_CIPHER_BYTES = 64

function requireSize(field: Uint8Array, kind: keyof typeof SIZES, what: string): Uint8Array {
  if (field.byteLength !== SIZES[kind]) {
    throw new TrustError(
      'E_HANDSHAKE_MALFORMED',
      `${what}: ${kind} field is ${field.byteLength} bytes, expected ${SIZES[kind]}`,
    )
  }
  return field
}

/** Fails when the peer took longer than the handshake allows (docs/protocol.md §Handshake, E_HANDSHAKE_TIMEOUT). */
function checkDeadline(options: HandshakeOptions, startedAt: number, step: string): void {
  const elapsed = (options.now ?? Date.now)() - startedAt
  const limit = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS
  if (elapsed > limit) {
    throw new TrustError(
      'E_HANDSHAKE_TIMEOUT',
      `the peer's ${step} came ${elapsed} ms into the handshake; the limit is ${limit} ms`,
      'is the peer overloaded, or a dbcluster node of the same release?',
    )
  }
}

const text = (s: string) => new TextEncoder().encode(s)
const u16 = (v: number) => new Uint8Array([v & 255, v >> 8])
const readU16 = (b: Uint8Array) => (b.byteLength === 2 ? b[0]! | (b[1]! << 8) : -1)
const decodeText = (b: Uint8Array) => new TextDecoder('utf-8', { fatal: true }).decode(b)

function keys(shared: Uint8Array, nonceI: Uint8Array, nonceR: Uint8Array) {
  const prk = hkdf(sha256, shared, concatBytes(LABEL, nonceI, nonceR), text('dbcluster handshake keys'), 64)
  return { macI: prk.subarray(0, 32), macR: prk.subarray(32, 64) }
}

function trafficKeys(shared: Uint8Array, nonceI: Uint8Array, nonceR: Uint8Array, th: Uint8Array) {
  const okm = hkdf(
    sha256,
    shared,
    concatBytes(LABEL, nonceI, nonceR),
    concatBytes(text('dbcluster traffic keys '), th),
    64,
  )
  return { initiatorKey: okm.slice(0, 32), responderKey: okm.slice(32, 64) }
}

const signed = (role: 'initiator' | 'responder', th: Uint8Array) =>
  concatBytes(text(`dbcluster/v${PROTOCOL_VERSION} ${role} signs `), th)

async function checkPeer(options: HandshakeOptions, serial: string, key: Uint8Array): Promise<void> {
  const verdict = await options.authorize(serial, key)
  if (verdict === 'not-pinned') {
    throw new TrustError(
      'E_PEER_NOT_PINNED',
      `peer ${serial} has no pinned key`,
      'pin it through the coordinator (or a signed roster) before it may join',
    )
  }
  if (verdict === 'key-mismatch') {
    throw new TrustError(
      'E_KEY_MISMATCH',
      `peer ${serial} presented a key that differs from the one pinned for it`,
      'if the machine was re-keyed, re-pin it through the coordinator; otherwise treat this as an attack',
    )
  }
}

/** The version in a message's first field, before its field count is checked: a peer of another release gets told so,
 * not that its message is malformed. Null when the message does not start with a 2-byte field. */
function peekVersion(bytes: Uint8Array): number | null {
  if (bytes.byteLength < 7 || bytes[1] !== 2 || bytes[2] !== 0 || bytes[3] !== 0 || bytes[4] !== 0) return null
  return bytes[5]! | (bytes[6]! << 8)
}

/** Both sides seal with one cipher. The transcript binds both names: one altered in transit breaks a signature. */
function checkCipher(options: HandshakeOptions, peerSerial: string, theirs: Uint8Array) {
  if (theirs.byteLength === 0 || theirs.byteLength > MAX_CIPHER_BYTES)
    throw new TrustError('E_HANDSHAKE_MALFORMED', `the cipher field is ${theirs.byteLength} bytes`)
  const peer = decodeText(theirs)
  const mine = options.cipher ?? DEFAULT_CIPHER
  if (peer !== mine) {
    throw new TrustError(
      'E_CIPHER_MISMATCH',
      `peer ${peerSerial} seals with ${peer}, this node (${options.serial}) with ${mine}: start both with the same --cipher`,
      'every node of a cluster (and every tensor-parallel rank) must name the same --cipher',
    )
  }
}

function checkVersion(version: number) {
  if (version !== PROTOCOL_VERSION) {
    throw new TrustError(
      'E_VERSION_MISMATCH',
      `peer speaks link protocol v${version}, this node v${PROTOCOL_VERSION}`,
      'run the same dbcluster release on every node',
    )
  }
}

/** Initiator side: hello() → (send) … receiveAck(ack) → finish bytes to send, then the result. */
export class InitiatorHandshake {
  readonly #ephemeral: Uint8Array
  readonly #nonce: Uint8Array
  readonly #startedAt: number
  #hello: Uint8Array | null = null
  #done = false

  constructor(private readonly options: HandshakeOptions) {
    this.#ephemeral = options.randomBytes(32)
    this.#nonce = options.randomBytes(32)
    this.#startedAt = (options.now ?? Date.now)()
  }

  hello(): Uint8Array {
    const o = this.options
    this.#hello = encodeFields([
      u16(o.version ?? PROTOCOL_VERSION),
      text(o.clusterId),
      text(o.serial),
      o.identity.publicKey,
      x25519.getPublicKey(this.#ephemeral),
      this.#nonce,
      text(o.cipher ?? DEFAULT_CIPHER),
    ])
    return this.#hello
  }

  async receiveAck(ack: Uint8Array): Promise<{ finish: Uint8Array; result: HandshakeResult }> {
    if (!this.#hello || this.#done)
      throw new TrustError('E_HANDSHAKE_STATE', this.#done ? 'a second ACK' : 'ACK before HELLO')
    this.#done = true
    checkDeadline(this.options, this.#startedAt, 'ACK')
    ack = ack.slice() // fields are read across an await; the caller's buffer may be reused
    const peeked = peekVersion(ack)
    if (peeked !== null) checkVersion(peeked)
    const [version, serialBytes, identityR, ephemeralR, nonceR, cipherR, sigR, macR] = decodeFields(ack, 8, 'ACK')
    checkVersion(readU16(version!))
    requireSize(identityR!, 'identity', 'ACK')
    requireSize(ephemeralR!, 'ephemeral', 'ACK')
    requireSize(nonceR!, 'nonce', 'ACK')
    requireSize(sigR!, 'signature', 'ACK')
    requireSize(macR!, 'mac', 'ACK')
    const serial = decodeText(serialBytes!)
    const core = encodeFields([version!, serialBytes!, identityR!, ephemeralR!, nonceR!, cipherR!])
    const th1 = sha256(concatBytes(this.#hello, core))
    if (!verifySignature(identityR!, signed('responder', th1), sigR!)) {
      throw new TrustError(
        'E_BAD_SIGNATURE',
        `peer ${serial}'s signature over the handshake does not verify`,
        'someone altered the handshake in transit, or the peer is not who it claims',
      )
    }
    let shared: Uint8Array
    try {
      shared = x25519.getSharedSecret(this.#ephemeral, ephemeralR!)
    } catch {
      throw new TrustError('E_HANDSHAKE_MALFORMED', 'peer ephemeral key is not a valid X25519 point')
    }
    const { macI, macR: macKeyR } = keys(shared, this.#nonce, nonceR!)
    if (!equalBytes(hmac(sha256, macKeyR, concatBytes(th1, sigR!)), macR!)) {
      throw new TrustError(
        'E_KEY_CONFIRMATION',
        `peer ${serial} failed key confirmation`,
        'the handshake was tampered with; the link was closed',
      )
    }
    await checkPeer(this.options, serial, identityR!)
    checkCipher(this.options, serial, cipherR!)
    const th2 = sha256(concatBytes(th1, sigR!, macR!))
    const sigI = await this.options.identity.sign(signed('initiator', th2))
    const macIValue = hmac(sha256, macI, concatBytes(th2, sigI))
    const th3 = sha256(concatBytes(th2, sigI, macIValue))
    return {
      finish: encodeFields([sigI, macIValue]),
      result: {
        peerSerial: serial,
        peerPublicKey: identityR!.slice(),
        transcriptHash: th3,
        ...trafficKeys(shared, this.#nonce, nonceR!, th3),
      },
    }
  }
}

/** Responder side: receiveHello(hello) → ack bytes; receiveFinish(finish) → the result. */
export class ResponderHandshake {
  readonly #ephemeral: Uint8Array
  readonly #nonce: Uint8Array
  readonly #startedAt: number
  #phase: 'awaiting-hello' | 'awaiting-finish' | 'done' = 'awaiting-hello'
  #state: {
    th2: Uint8Array
    shared: Uint8Array
    macI: Uint8Array
    nonceI: Uint8Array
    serial: string
    identityI: Uint8Array
  } | null = null

  constructor(private readonly options: HandshakeOptions) {
    this.#ephemeral = options.randomBytes(32)
    this.#nonce = options.randomBytes(32)
    this.#startedAt = (options.now ?? Date.now)()
  }

  async receiveHello(hello: Uint8Array): Promise<Uint8Array> {
    if (this.#phase !== 'awaiting-hello') throw new TrustError('E_HANDSHAKE_STATE', 'a second HELLO on one connection')
    this.#phase = 'awaiting-finish'
    checkDeadline(this.options, this.#startedAt, 'HELLO')
    hello = hello.slice() // kept in the transcript; the caller's buffer may be reused
    const peeked = peekVersion(hello)
    if (peeked !== null) checkVersion(peeked)
    const [version, clusterId, serialBytes, identityI, ephemeralI, nonceI, cipherI] = decodeFields(hello, 7, 'HELLO')
    checkVersion(readU16(version!))
    requireSize(identityI!, 'identity', 'HELLO')
    requireSize(ephemeralI!, 'ephemeral', 'HELLO')
    requireSize(nonceI!, 'nonce', 'HELLO')
    if (decodeText(clusterId!) !== this.options.clusterId) {
      throw new TrustError(
        'E_CLUSTER_MISMATCH',
        `peer wants cluster '${decodeText(clusterId!)}', this node serves '${this.options.clusterId}'`,
      )
    }
    const serial = decodeText(serialBytes!)
    checkCipher(this.options, serial, cipherI!)
    await checkPeer(this.options, serial, identityI!)
    let shared: Uint8Array
    try {
      shared = x25519.getSharedSecret(this.#ephemeral, ephemeralI!)
    } catch {
      throw new TrustError('E_HANDSHAKE_MALFORMED', 'peer ephemeral key is not a valid X25519 point')
    }
    const o = this.options
    const core = encodeFields([
      u16(o.version ?? PROTOCOL_VERSION),
      text(o.serial),
      o.identity.publicKey,
      x25519.getPublicKey(this.#ephemeral),
      this.#nonce,
      text(o.cipher ?? DEFAULT_CIPHER),
    ])
    const th1 = sha256(concatBytes(hello, core))
    const sigR = await o.identity.sign(signed('responder', th1))
    const { macI, macR } = keys(shared, nonceI!, this.#nonce)
    const macRValue = hmac(sha256, macR, concatBytes(th1, sigR))
    this.#state = {
      th2: sha256(concatBytes(th1, sigR, macRValue)),
      shared,
      macI,
      nonceI: nonceI!.slice(),
      serial,
      identityI: identityI!.slice(),
    }
    const [v, s, id, e, n, c] = decodeFields(core, 6, 'ACK core')
    return encodeFields([v!, s!, id!, e!, n!, c!, sigR, macRValue])
  }

  receiveFinish(finish: Uint8Array): HandshakeResult {
    const state = this.#state
    if (!state || this.#phase !== 'awaiting-finish')
      throw new TrustError('E_HANDSHAKE_STATE', state ? 'a second FINISH' : 'FINISH before HELLO')
    this.#phase = 'done'
    checkDeadline(this.options, this.#startedAt, 'FINISH')
    const [sigI, macI] = decodeFields(finish, 2, 'FINISH')
    requireSize(sigI!, 'signature', 'FINISH')
    requireSize(macI!, 'mac', 'FINISH')
    if (!verifySignature(state.identityI, signed('initiator', state.th2), sigI!)) {
      throw new TrustError(
        'E_BAD_SIGNATURE',
        `peer ${state.serial}'s signature over the handshake does not verify`,
        'someone altered or replayed the handshake; the link was closed',
      )
    }
    if (!equalBytes(hmac(sha256, state.macI, concatBytes(state.th2, sigI!)), macI!)) {
      throw new TrustError(
        'E_KEY_CONFIRMATION',
        `peer ${state.serial} failed key confirmation`,
        'the handshake was tampered with; the link was closed',
      )
    }
    const th3 = sha256(concatBytes(state.th2, sigI!, macI!))
    return {
      peerSerial: state.serial,
      peerPublicKey: state.identityI,
      transcriptHash: th3,
      ...trafficKeys(state.shared, state.nonceI, this.#nonce, th3),
    }
  }
}
