/** The handshake matrix: success, wrong / unpinned identity, tampered messages, a replayed HELLO, a MITM swapping
 * ephemeral keys, version or cipher mismatch — each refused with its own code. */
import { describe, expect, test } from 'bun:test'
import { x25519 } from '@noble/curves/ed25519.js'
import { equalBytes } from '@noble/ciphers/utils.js'
import { randomBytes } from '@noble/hashes/utils.js'
import {
  decodeFields,
  encodeFields,
  InitiatorHandshake,
  PROTOCOL_VERSION,
  ResponderHandshake,
  type HandshakeOptions,
} from '../../src/trust/handshake.ts'
import { counterRandom, pins, testIdentity } from '../support/identities.ts'

const alice = testIdentity(1)
const bob = testIdentity(2)
const mallory = testIdentity(3)
const base = { clusterId: 'c1', randomBytes }
const both = pins({ alice, bob })

const initiator = (o: Partial<HandshakeOptions> = {}) =>
  new InitiatorHandshake({ ...base, identity: alice, serial: 'alice', authorize: both, ...o })
const responder = (o: Partial<HandshakeOptions> = {}) =>
  new ResponderHandshake({ ...base, identity: bob, serial: 'bob', authorize: both, ...o })

async function run(
  i = initiator(),
  r = responder(),
  tamper: {
    hello?: (b: Uint8Array) => Uint8Array
    ack?: (b: Uint8Array) => Uint8Array
    finish?: (b: Uint8Array) => Uint8Array
  } = {},
) {
  const hello = (tamper.hello ?? ((b) => b))(i.hello())
  const ack = (tamper.ack ?? ((b) => b))(await r.receiveHello(hello))
  const { finish, result } = await i.receiveAck(ack)
  return { initiator: result, responder: r.receiveFinish((tamper.finish ?? ((b) => b))(finish)) }
}

const flip = (index: (b: Uint8Array) => number) => (b: Uint8Array) => {
  const c = b.slice()
  c[index(c)]! ^= 1
  return c
}
const codeOf = async (p: Promise<unknown>) => ((await p.catch((e) => e)) as { code?: string }).code

describe('handshake', () => {
  test('succeeds: both sides agree on keys and see each other’s identity', async () => {
    const { initiator: a, responder: b } = await run()
    expect(a.peerSerial).toBe('bob')
    expect(b.peerSerial).toBe('alice')
    expect(equalBytes(a.initiatorKey, b.initiatorKey)).toBe(true)
    expect(equalBytes(a.responderKey, b.responderKey)).toBe(true)
    expect(equalBytes(a.initiatorKey, a.responderKey)).toBe(false)
    expect(equalBytes(a.transcriptHash, b.transcriptHash)).toBe(true)
  })

  test('fresh keys every session', async () => {
    const one = await run()
    const two = await run()
    expect(equalBytes(one.initiator.initiatorKey, two.initiator.initiatorKey)).toBe(false)
  })

  test('an unpinned peer and a key that differs from the pin are refused, with distinct codes', async () => {
    expect(await codeOf(run(initiator({ identity: mallory, serial: 'mallory' })))).toBe('E_PEER_NOT_PINNED')
    expect(await codeOf(run(initiator({ identity: mallory, serial: 'alice' })))).toBe('E_KEY_MISMATCH')
    expect(await codeOf(run(initiator(), responder({ identity: mallory })))).toBe('E_KEY_MISMATCH')
  })

  test('tampered HELLO, ACK or FINISH is refused', async () => {
    // a bit flipped in the initiator's nonce (the field before the cipher, 4 + 11 bytes of 'aes-256-gcm', at HELLO's end):
    // the responder signs the altered transcript → initiator rejects
    expect(await codeOf(run(undefined, undefined, { hello: flip((b) => b.length - 16) }))).toBe('E_BAD_SIGNATURE')
    // the responder's identity key in ACK altered in transit
    expect(await codeOf(run(undefined, undefined, { ack: flip((b) => b.length - 200) }))).toBe('E_BAD_SIGNATURE')
    // ACK's MAC (last byte) altered
    expect(await codeOf(run(undefined, undefined, { ack: flip((b) => b.length - 1) }))).toBe('E_KEY_CONFIRMATION')
    // FINISH signature or MAC altered
    expect(await codeOf(run(undefined, undefined, { finish: flip(() => 10) }))).toBe('E_BAD_SIGNATURE')
    expect(await codeOf(run(undefined, undefined, { finish: flip((b) => b.length - 1) }))).toBe('E_KEY_CONFIRMATION')
    // garbage
    expect(await codeOf(run(undefined, undefined, { hello: () => new Uint8Array([6, 1, 2]) }))).toBe(
      'E_HANDSHAKE_MALFORMED',
    )
  })

  test('a HELLO replayed from an earlier session cannot finish', async () => {
    const i = initiator()
    const hello = i.hello()
    await i.receiveAck(await responder().receiveHello(hello)) // the original session
    // an attacker replays that HELLO to a new responder; without alice's ephemeral secret and signing key it cannot answer
    const r = responder()
    const ack = await r.receiveHello(hello)
    const attacker = initiator({ identity: mallory }) // signs with the wrong key over a transcript it can read
    attacker.hello()
    const forged = await attacker.receiveAck(ack).catch((e) => e)
    expect(forged.code).toBe('E_BAD_SIGNATURE') // its transcript hash differs from the responder's
    expect(() => r.receiveFinish(encodeFields([new Uint8Array(64), new Uint8Array(32)]))).toThrow(/signature/)
  })

  test('a man in the middle swapping the ephemeral keys is detected', async () => {
    const swap = (fieldIndex: number, count: number) => (b: Uint8Array) => {
      const fields = decodeFields(b, count, 'x').map((f) => f.slice())
      fields[fieldIndex] = x25519.getPublicKey(new Uint8Array(32).fill(9))
      return encodeFields(fields)
    }
    expect(await codeOf(run(undefined, undefined, { hello: swap(4, 7) }))).toBe('E_BAD_SIGNATURE')
    expect(await codeOf(run(undefined, undefined, { ack: swap(3, 8) }))).toBe('E_BAD_SIGNATURE')
  })

  test('a version mismatch is named', async () => {
    expect(await codeOf(run(initiator({ version: PROTOCOL_VERSION + 1 })))).toBe('E_VERSION_MISMATCH')
    // a v1 HELLO (six fields, no cipher) is told it speaks another version, not that it is malformed
    const v1 = encodeFields(decodeFields(initiator().hello(), 7, 'HELLO').slice(0, 6))
    v1[5] = 1
    expect(await codeOf(responder().receiveHello(v1))).toBe('E_VERSION_MISMATCH')
  })

  test('both sides bind their cipher: a mismatch is refused naming both, and the name cannot be changed in transit', async () => {
    const chacha = { cipher: 'chacha20-poly1305' }
    const { initiator: a } = await run(initiator(chacha), responder(chacha))
    expect(a.peerSerial).toBe('bob')
    const refused = (await run(initiator(chacha), responder()).catch((e) => e)) as Error & { code: string }
    expect(refused.code).toBe('E_CIPHER_MISMATCH')
    expect(refused.message).toBe(
      'peer alice seals with chacha20-poly1305, this node (bob) with aes-256-gcm: start both with the same --cipher',
    )
    // a HELLO whose cipher is rewritten in transit to the responder's: bob answers, but his ACK signs the HELLO he saw,
    // not alice's, so alice refuses it
    const i = initiator()
    const rewritten = decodeFields(i.hello(), 7, 'x').map((f) => f.slice())
    rewritten[6] = new TextEncoder().encode('chacha20-poly1305')
    const ack = await responder(chacha).receiveHello(encodeFields(rewritten))
    expect(await codeOf(i.receiveAck(ack))).toBe('E_BAD_SIGNATURE')
  })

  test('a different cluster id is refused', async () => {
    expect(await codeOf(run(initiator({ clusterId: 'other' })))).toBe('E_CLUSTER_MISMATCH')
  })
})

describe('handshake deadline, sizes and order (pure, injected clock)', () => {
  test('a peer that stops mid-handshake: a message after the deadline is refused with E_HANDSHAKE_TIMEOUT', async () => {
    let now = 0
    const clock = { now: () => now, timeoutMs: 5000 }
    // the responder answered HELLO at t=0; the initiator's FINISH only comes at t=5001
    const i = initiator(clock)
    const r = responder(clock)
    const ack = await r.receiveHello(i.hello())
    const { finish } = await i.receiveAck(ack)
    now = 5001
    expect(() => r.receiveFinish(finish)).toThrow(expect.objectContaining({ code: 'E_HANDSHAKE_TIMEOUT' }))
    // the initiator's side: an ACK that arrives late
    now = 0
    const late = initiator(clock)
    const ack2 = await responder(clock).receiveHello(late.hello())
    now = 6000
    expect(await codeOf(late.receiveAck(ack2))).toBe('E_HANDSHAKE_TIMEOUT')
    // in time, the same exchange completes
    now = 0
    const j = initiator(clock)
    const s = responder(clock)
    const ack3 = await s.receiveHello(j.hello())
    now = 4999
    const done = await j.receiveAck(ack3)
    expect(s.receiveFinish(done.finish).peerSerial).toBe('alice')
  })

  test('fields of the wrong size are malformed before any crypto runs', async () => {
    const resize = (index: number, count: number, size: number) => (b: Uint8Array) => {
      const fields = decodeFields(b, count, 'x').map((f) => f.slice())
      fields[index] = new Uint8Array(size)
      return encodeFields(fields)
    }
    expect(await codeOf(run(undefined, undefined, { hello: resize(5, 6, 0) }))).toBe('E_HANDSHAKE_MALFORMED') // empty nonce
    expect(await codeOf(run(undefined, undefined, { hello: resize(3, 6, 65) }))).toBe('E_HANDSHAKE_MALFORMED') // identity
    expect(await codeOf(run(undefined, undefined, { ack: resize(5, 7, 63) }))).toBe('E_HANDSHAKE_MALFORMED') // signature
    expect(await codeOf(run(undefined, undefined, { finish: resize(1, 2, 31) }))).toBe('E_HANDSHAKE_MALFORMED') // mac
  })

  test('messages out of turn are refused', async () => {
    const i = initiator()
    const r = responder()
    const hello = i.hello()
    const ack = await r.receiveHello(hello)
    expect(await codeOf(r.receiveHello(hello))).toBe('E_HANDSHAKE_STATE')
    const { finish } = await i.receiveAck(ack)
    expect(await codeOf(i.receiveAck(ack))).toBe('E_HANDSHAKE_STATE')
    r.receiveFinish(finish)
    expect(() => r.receiveFinish(finish)).toThrow(expect.objectContaining({ code: 'E_HANDSHAKE_STATE' }))
    expect(() => responder().receiveFinish(finish)).toThrow(expect.objectContaining({ code: 'E_HANDSHAKE_STATE' }))
  })

  test('fixed keys and randomness give the recorded transcript (test/vectors/handshake.json)', async () => {
    const { default: vector } = await import('../vectors/handshake.json', { with: { type: 'json' } })
    const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
    const i = initiator({ randomBytes: counterRandom(1), clusterId: vector.clusterId })
    const r = responder({ randomBytes: counterRandom(2), clusterId: vector.clusterId })
    const hello = i.hello()
    const ack = await r.receiveHello(hello)
    const { finish, result } = await i.receiveAck(ack)
    const theirs = r.receiveFinish(finish)
    const got = {
      clusterId: vector.clusterId,
      hello: hex(hello),
      ack: hex(ack),
      finish: hex(finish),
      transcriptHash: hex(result.transcriptHash),
      initiatorKey: hex(result.initiatorKey),
      responderKey: hex(result.responderKey),
    }
    expect(got).toEqual(vector)
    expect(hex(theirs.initiatorKey)).toBe(vector.initiatorKey)
  })
})
