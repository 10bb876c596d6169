/** Frame fuzzing against real link ends (the decoder, the handshake parser and the sealed channel of SealedLink):
 * 100,000 random and mutated frames, no crash, nothing allocated beyond the frame limit, every bad frame closes the link. */
import { describe, expect, test } from 'bun:test'
import { consola } from 'consola'
import { encodeFrame } from '../../src/link/framing.ts'
import { FrameType } from '../../src/link/frames.ts'
import { SealedLink, type LinkOptions } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from '../support/identities.ts'

consola.level = 1 // each refused frame logs a warning; 100,000 of them would drown the output
const alice = testIdentity(1)
const bob = testIdentity(2)
const authorize = pins({ alice, bob })
const MAX = 64 * 1024

/** A socket stand-in: whatever the link writes goes to `sink`. */
function fakeSocket(sink: (b: Uint8Array) => void) {
  return { write: (b: Uint8Array) => (sink(b.slice()), b.byteLength), end: () => {} } as never
}

function responder(extra: Partial<LinkOptions> = {}) {
  const link = new SealedLink('responder', { identity: bob, serial: 'bob', clusterId: 'c', authorize, maxFrameBytes: MAX, handshakeTimeoutMs: 60_000, pingIntervalMs: 60_000, ...extra })
  link.attach(fakeSocket(() => {}))
  return link
}

/** An established pair wired back to back in memory; returns the frames the initiator would send. */
async function establishedPair() {
  const opts = { clusterId: 'c', authorize, maxFrameBytes: MAX, handshakeTimeoutMs: 60_000, pingIntervalMs: 60_000 }
  const a = new SealedLink('initiator', { identity: alice, serial: 'alice', ...opts })
  const b = new SealedLink('responder', { identity: bob, serial: 'bob', ...opts })
  const wire: Uint8Array[] = []
  let capture = false
  b.attach(fakeSocket((x) => a.data(x)))
  a.attach(fakeSocket((x) => (capture ? wire.push(x) : b.data(x))))
  await Promise.all([a.established, b.established])
  capture = true
  return { a, b, wire }
}

function rng(seed: number) {
  let s = seed >>> 0
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32)
}

describe('frame fuzzing', () => {
  test('100,000 random and mutated frames before the handshake: no crash, each bad one closes the link', async () => {
    const random = rng(42)
    const valid = encodeFrame(FrameType.hello, new Uint8Array(200).map(() => (random() * 256) | 0))
    let closed = 0
    let waiting = 0
    const heapBefore = process.memoryUsage().heapUsed
    for (let i = 0; i < 100_000; i++) {
      const link = responder()
      let bytes: Uint8Array
      switch (i % 4) {
        case 0: // pure noise
          bytes = new Uint8Array(1 + ((random() * 64) | 0)).map(() => (random() * 256) | 0)
          break
        case 1: // a valid frame with a few bytes flipped
          bytes = valid.slice()
          for (let k = 0; k < 3; k++) bytes[(random() * bytes.length) | 0] = (random() * 256) | 0
          break
        case 2: // a hostile length prefix (up to 2^64) with a little body
          bytes = new Uint8Array(16)
          new DataView(bytes.buffer).setBigUint64(0, BigInt(Math.floor(random() * 2 ** 53)) * 2048n, true)
          bytes[8] = (random() * 20) | 0
          break
        default: // a sealed-type frame before any handshake
          bytes = encodeFrame([FrameType.data, FrameType.step, FrameType.activation, FrameType.ping][i % 16 >> 2]!, new Uint8Array(40))
      }
      link.data(bytes)
      await Promise.resolve()
      await Promise.resolve()
      if (link.closed) closed++
      else waiting++ // an incomplete frame: nothing to judge yet
      link.close()
    }
    expect(closed + waiting).toBe(100_000)
    expect(closed).toBeGreaterThan(60_000)
    // hostile lengths were refused before allocation: the heap did not grow by anything near a frame limit per case
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 * 1024 * 1024)
  }, 120_000)

  test('a frame declaring more than the limit is refused at once, with no buffer allocated for it', () => {
    const link = responder()
    const header = new Uint8Array(9)
    new DataView(header.buffer).setBigUint64(0, 1n << 40n, true)
    link.data(header)
    expect(link.closed).toBe(true)
    expect((link.stats.closeReason as { code?: string }).code).toBe('E_FRAME_TOO_LARGE')
  })

  test('mutated sealed frames on established links: every one closes its link; intact ones pass', async () => {
    const random = rng(7)
    let rejected = 0
    for (let i = 0; i < 300; i++) {
      const { a, b, wire } = await establishedPair()
      const got: number[] = []
      b.onFrame((f) => got.push(f.payload.byteLength))
      a.send(FrameType.activation, new Uint8Array(100 + i), { stage: 1, requestId: BigInt(i) })
      const frame = wire.splice(0).reduce((acc, x) => new Uint8Array([...acc, ...x]), new Uint8Array())
      const bad = frame.slice()
      const at = 9 + ((random() * (bad.length - 9)) | 0) // anywhere after the length and type
      bad[at]! ^= 1 << ((random() * 8) | 0)
      b.data(bad)
      await Bun.sleep(0)
      expect(b.closed).toBe(true)
      expect(got).toEqual([])
      rejected++
      a.close()
    }
    expect(rejected).toBe(300)
    const { a, b, wire } = await establishedPair()
    const got: number[] = []
    b.onFrame((f) => got.push(f.payload.byteLength))
    a.send(FrameType.activation, new Uint8Array(123))
    for (const x of wire.splice(0)) b.data(x)
    await Bun.sleep(0)
    expect(got).toEqual([123])
  }, 120_000)
})
