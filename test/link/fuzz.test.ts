/** Frame fuzzing against real link ends (SealedLink: its frame decoder, handshake parser and sealed channel), driven in
 * process through the same data() entry the socket uses. 100,000 random and mutated frames — half before the handshake,
 * half on established links — each judged by an independent oracle: a complete bad frame closes the link, an incomplete
 * one leaves it open holding no more than was sent, nothing bad is ever delivered, and no buffer exceeds the limit. */
import { describe, expect, test } from 'bun:test'
import { consola } from 'consola'
import { AeadSender } from '../../src/link/aead-channel.ts'
import {
  decodeFields,
  InitiatorHandshake,
  ResponderHandshake,
  type HandshakeResult,
} from '../../src/trust/handshake.ts'
import { encodeFrame, FrameDecoder } from '../../src/link/framing.ts'
import { FrameType, frameTypeName, SEALED_HEADER_BYTES, TAG_BYTES } from '../../src/link/frames.ts'
import { SealedLink, type LinkOptions } from '../../src/link/tcp-link.ts'
import { counterRandom, pins, testIdentity } from '../support/identities.ts'

consola.level = -999 // every refused frame logs a warning; 100,000 of them would drown the output
const alice = testIdentity(1)
const bob = testIdentity(2)
const authorize = pins({ alice, bob })
const MAX = 4096 // payload limit of the links under test
const DECODER_MAX = MAX + SEALED_HEADER_BYTES + TAG_BYTES // what the decoder accepts after the type byte
const CASES = 50_000 // per half

function rng(seed: number) {
  let s = seed >>> 0
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32
}

/** A socket stand-in recording what the link writes. */
function sink() {
  const writes: Uint8Array[] = []
  return {
    writes,
    socket: { write: (b: Uint8Array) => (writes.push(b.slice()), b.byteLength), end: () => {} } as never,
  }
}

const options: LinkOptions = {
  identity: bob,
  serial: 'bob',
  clusterId: 'c',
  authorize,
  maxFrameBytes: MAX,
  handshakeTimeoutMs: 600_000,
  pingIntervalMs: 600_000,
}

type Verdict = 'close' | 'incomplete' | 'complete'
/** Independent reading of the first frame in `bytes`: is it complete, incomplete, or refused from its header alone? */
function oracle(bytes: Uint8Array): { verdict: Verdict; type?: number; len?: number } {
  if (bytes.length < 8) return { verdict: 'incomplete' }
  const len = new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)
  if (len === 0n || len > BigInt(DECODER_MAX + 1)) return { verdict: 'close' }
  if (bytes.length === 8) return { verdict: 'incomplete' }
  const type = bytes[8]!
  if (!frameTypeName(type)) return { verdict: 'close' }
  if (BigInt(bytes.length - 8) < len) return { verdict: 'incomplete', type }
  return { verdict: 'complete', type, len: Number(len) }
}

/** Lets the link finish its async handshake step (a few promise hops) before the verdict. */
const settle = async () => {
  for (let k = 0; k < 12; k++) await Promise.resolve()
}

describe('frame fuzzing', () => {
  test(`${CASES.toLocaleString()} random and mutated frames before the handshake`, async () => {
    const random = rng(42)
    const byte = () => (random() * 256) | 0
    const realHello = new InitiatorHandshake({
      identity: alice,
      serial: 'alice',
      clusterId: 'c',
      authorize,
      randomBytes: counterRandom(9),
    }).hello()
    const counts = { close: 0, incomplete: 0, acked: 0 }
    for (let i = 0; i < CASES; i++) {
      let bytes: Uint8Array
      switch (i % 5) {
        case 0: // pure noise
          bytes = new Uint8Array(1 + ((random() * 80) | 0)).map(byte)
          break
        case 1: {
          // the real HELLO with 1-4 bytes changed anywhere (length, type, fields)
          bytes = encodeFrame(FrameType.hello, realHello)
          for (let k = 0, n = 1 + ((random() * 4) | 0); k < n; k++) bytes[(random() * bytes.length) | 0] = byte()
          break
        }
        case 2: {
          // a hostile length prefix anywhere up to 2^64, a valid or invalid type, a little body
          bytes = new Uint8Array(9 + ((random() * 32) | 0)).map(byte)
          const len =
            random() < 0.5
              ? BigInt(Math.floor(random() * 2 ** 53)) * 2048n + BigInt(byte())
              : BigInt((random() * (DECODER_MAX + 40)) | 0)
          new DataView(bytes.buffer).setBigUint64(0, len & ((1n << 64n) - 1n), true)
          if (random() < 0.7) bytes[8] = 1 + ((random() * 14) | 0)
          break
        }
        case 3: // a sealed-type frame (or a handshake frame out of turn) before any handshake
          bytes = encodeFrame(
            [
              FrameType.data,
              FrameType.step,
              FrameType.activation,
              FrameType.ping,
              FrameType.ack,
              FrameType.finish,
              FrameType.error,
            ][(random() * 7) | 0]!,
            new Uint8Array((random() * 100) | 0).map(byte),
          )
          break
        default: // the real HELLO cut short
          bytes = encodeFrame(FrameType.hello, realHello).subarray(0, (random() * (realHello.length + 9)) | 0)
      }
      const { writes, socket } = sink()
      const link = new SealedLink('responder', options)
      link.attach(socket)
      link.data(bytes)
      await settle()
      const o = oracle(bytes)
      if (o.verdict === 'close' || (o.verdict === 'complete' && o.type !== FrameType.hello)) {
        if (!link.closed)
          throw new Error(`case ${i}: a bad frame left the link open: ${Buffer.from(bytes).toString('hex')}`)
        counts.close++
      } else if (o.verdict === 'incomplete') {
        if (link.closed) throw new Error(`case ${i}: an incomplete frame closed the link`)
        expect(link.bufferedBytes).toBeLessThanOrEqual(bytes.length)
        counts.incomplete++
      } else if (link.closed) counts.close++
      else {
        // a mutated HELLO that is still a valid HELLO from a pinned key: the only acceptable answer is an ACK
        const fields = decodeFields(bytes.subarray(9, 8 + o.len!), 7, 'HELLO')
        expect(Buffer.from(fields[3]!).equals(Buffer.from(alice.publicKey))).toBe(true)
        expect(writes.map((w) => w[8])).toEqual([FrameType.ack])
        counts.acked++
      }
      expect(link.largestAllocation).toBeLessThanOrEqual(DECODER_MAX + 1)
      link.close()
    }
    expect(counts.close + counts.incomplete + counts.acked).toBe(CASES)
    // every category occurred, so the oracle was exercised on each branch
    expect(counts.close).toBeGreaterThan(CASES / 2)
    expect(counts.incomplete).toBeGreaterThan(CASES / 10)
    expect(counts.acked).toBeGreaterThan(0)
  }, 60_000)

  test(`${CASES.toLocaleString()} mutated, replayed, reordered and truncated sealed frames on established links`, async () => {
    // one real handshake gives the keys; every link below starts from them with fresh counters
    const i = new InitiatorHandshake({
      identity: alice,
      serial: 'alice',
      clusterId: 'c',
      authorize,
      randomBytes: counterRandom(3),
    })
    const r = new ResponderHandshake({
      identity: bob,
      serial: 'bob',
      clusterId: 'c',
      authorize,
      randomBytes: counterRandom(4),
    })
    const { finish, result } = await i.receiveAck(await r.receiveHello(i.hello()))
    const keys: HandshakeResult = r.receiveFinish(finish)
    expect(Buffer.from(keys.initiatorKey).equals(Buffer.from(result.initiatorKey))).toBe(true)
    // the initiator's first frames, sealed once, valid on any fresh link with these keys
    const tx = new AeadSender({ cipher: 'aes-256-gcm', key: keys.initiatorKey, direction: 1, clusterId: 'c' })
    const random = rng(7)
    const byte = () => (random() * 256) | 0
    const payloads = [new Uint8Array(100).map(byte), new Uint8Array(MAX).map(byte), new Uint8Array(0)]
    const types = [FrameType.activation, FrameType.data, FrameType.tokens] as const
    const valid = payloads.map((p, k) => tx.sealFrame({ type: types[k]!, stage: k, requestId: BigInt(k) }, p))
    // a message in two records (fragment + final), sealed from counter 0 by its own sender
    const tx2 = new AeadSender({ cipher: 'aes-256-gcm', key: keys.initiatorKey, direction: 1, clusterId: 'c' })
    const fragmented = [
      tx2.sealFrame({ type: FrameType.fragment, stage: 5, requestId: 9n }, payloads[0]!.subarray(0, 60)),
      tx2.sealFrame({ type: FrameType.activation, stage: 5, requestId: 9n }, payloads[0]!.subarray(60)),
    ]
    const concat = (...parts: Uint8Array[]) => {
      const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0))
      let at = 0
      for (const p of parts) (out.set(p, at), (at += p.length))
      return out
    }
    const counts = { close: 0, incomplete: 0, delivered: 0 }
    for (let c = 0; c < CASES; c++) {
      const { socket } = sink()
      const link = SealedLink.withKeys('responder', options, keys, socket)
      const got: Uint8Array[] = []
      link.onFrame((f) => got.push(f.payload))
      // expected: how many of the valid frames arrive intact, and whether the link must end closed or still open
      let bytes: Uint8Array
      let deliver = 0
      let expectOpen = false
      switch (c % 7) {
        case 6: {
          // a fragmented message with 1-2 bits flipped in one of its records
          const which = (random() * 2) | 0
          const parts = fragmented.map((f) => f.slice())
          for (let k = 0, n = 1 + ((random() * 2) | 0); k < n; k++)
            parts[which]![(random() * parts[which]!.length) | 0]! ^= 1 << ((random() * 8) | 0)
          bytes = concat(...parts)
          const same = parts.every((p, k) => Buffer.from(p).equals(Buffer.from(fragmented[k]!)))
          if (same) ((deliver = 1), (expectOpen = true))
          else if (oracle(which === 0 ? bytes : parts[1]!).verdict === 'incomplete') expectOpen = true // judged from the mutated record on
          break
        }
        case 0:
        case 1: {
          // 1-3 bits flipped anywhere in frame 0
          bytes = valid[0]!.slice()
          for (let k = 0, n = 1 + ((random() * 3) | 0); k < n; k++)
            bytes[(random() * bytes.length) | 0]! ^= 1 << ((random() * 8) | 0)
          const o = oracle(bytes)
          if (o.verdict === 'incomplete') expectOpen = true
          else if (Buffer.from(bytes).equals(Buffer.from(valid[0]!))) ((deliver = 1), (expectOpen = true)) // flips cancelled out
          break
        }
        case 2: // replayed frame
          bytes = concat(valid[0]!, valid[0]!)
          deliver = 1
          break
        case 3: // reordered frames
          bytes = concat(valid[1]!, valid[0]!)
          break
        case 4: {
          // valid frames cut at a random point: what is whole arrives, the rest waits
          const all = concat(valid[0]!, valid[1]!, valid[2]!)
          const cut = (random() * all.length) | 0
          bytes = all.subarray(0, cut)
          deliver = [valid[0]!.length, valid[0]!.length + valid[1]!.length, all.length].filter(
            (end) => end <= cut,
          ).length
          expectOpen = true
          break
        }
        default: {
          // a valid frame, then noise parsed as the next frame
          const noise = new Uint8Array(1 + ((random() * 60) | 0)).map(byte)
          if (random() < 0.5 && noise.length >= 9)
            new DataView(noise.buffer).setBigUint64(0, BigInt(noise.length - 8), true) // a complete garbage frame
          bytes = concat(valid[0]!, noise)
          deliver = 1
          const o = oracle(noise)
          expectOpen = o.verdict === 'incomplete'
        }
      }
      // feed in random-sized chunks, as a socket would
      for (let at = 0; at < bytes.length;) {
        const n = 1 + ((random() * bytes.length) | 0)
        link.data(bytes.subarray(at, at + n))
        at += n
      }
      await settle()
      if (got.length !== deliver)
        throw new Error(
          `case ${c}: ${got.length} frames delivered, expected ${deliver}; closed: ${link.stats.closeReason?.code}`,
        )
      got.forEach((p, k) => expect(Buffer.from(p).equals(Buffer.from(payloads[k]!))).toBe(true))
      if (expectOpen !== !link.closed) {
        const diff = [...bytes].flatMap((b, k) => (b !== valid[0]![k] ? [`${k}:${valid[0]![k]}->${b}`] : []))
        throw new Error(
          `case ${c}: expected the link ${expectOpen ? 'open' : 'closed'} (${bytes.length} bytes, diff ${diff.slice(0, 8).join(' ')}, got ${got.length})`,
        )
      }
      expect(link.largestAllocation).toBeLessThanOrEqual(DECODER_MAX + 1)
      counts[link.closed ? 'close' : 'incomplete']++
      counts.delivered += deliver
      link.close()
    }
    expect(counts.close).toBeGreaterThan(CASES / 2)
    expect(counts.incomplete).toBeGreaterThan(CASES / 10)
    expect(counts.delivered).toBeGreaterThan(CASES / 3)
  }, 60_000)

  test('a frame declaring more than the limit is refused at once, with no buffer allocated for it', () => {
    const { socket } = sink()
    const link = new SealedLink('responder', options)
    link.attach(socket)
    const header = new Uint8Array(9)
    new DataView(header.buffer).setBigUint64(0, 1n << 40n, true)
    header[8] = FrameType.data
    link.data(header)
    expect(link.closed).toBe(true)
    expect(link.stats.closeReason?.code).toBe('E_FRAME_TOO_LARGE')
    expect(link.largestAllocation).toBe(0)
    // the largest legal frame is buffered in one allocation of exactly its size
    const decoder = new FrameDecoder(DECODER_MAX)
    const big = encodeFrame(FrameType.data, new Uint8Array(DECODER_MAX))
    expect(decoder.push(big.subarray(0, 100))).toEqual([])
    expect(decoder.push(big.subarray(100))).toHaveLength(1)
    expect(decoder.largestAllocation).toBe(DECODER_MAX + 1)
    expect(() =>
      new FrameDecoder(DECODER_MAX).push(encodeFrame(FrameType.data, new Uint8Array(DECODER_MAX + 1))),
    ).toThrow(/limit/)
  })
})
