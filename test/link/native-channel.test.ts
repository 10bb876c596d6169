/** The link's two implementations of docs/protocol.md §Sealed frames — the TypeScript channel and the shim's C link
 * channel (ffi/link_channel.c) — write the same bytes: both seal every frame of the vector files exactly and open
 * them, each opens what the other sealed (random sizes, odd-offset views, rekeying, both ciphers), and both refuse a
 * replayed, reordered, altered or short frame with the same code. Two links, one end on each implementation, talk. */
import { afterEach, describe, expect, test } from 'bun:test'
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'
import { randomBytes } from 'node:crypto'
import linkVectors from '../vectors/link-frames.json' with { type: 'json' }
import sealedVectors from '../vectors/sealed-frames.json' with { type: 'json' }
import { AeadReceiver, AeadSender, CIPHERS, type AeadOptions, type CipherName } from '../../src/link/aead-channel.ts'
import { FrameType } from '../../src/link/frames.ts'
import { nativeChannel } from '../../src/link/native-channel.ts'
import { connectLink, listenLinks, type LinkOptions, type SealedLink } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from '../support/identities.ts'

const native = nativeChannel()
const NATIVE = native !== null && CIPHERS.every((c) => native.has.has(c))
const NO_NATIVE = NATIVE ? '' : ' (skipped: the shim or libcrypto with both ciphers does not load here)'
const IMPLEMENTATIONS = ['script', 'native'] as const
type Implementation = (typeof IMPLEMENTATIONS)[number]

type Stream = (typeof linkVectors.streams)[number] | (typeof sealedVectors.streams)[number]
const STREAMS: Stream[] = [...linkVectors.streams, ...sealedVectors.streams]

const optionsOf = (s: Stream, implementation: Implementation): AeadOptions => ({
  cipher: s.cipher as CipherName,
  key: hexToBytes(s.key),
  direction: s.direction as 1 | 2,
  clusterId: s.clusterId,
  rekeyInterval: BigInt(s.rekeyInterval),
  implementation,
})

const codeOf = (run: () => unknown): string => {
  try {
    run()
  } catch (e) {
    return (e as { code?: string }).code ?? String(e)
  }
  return 'accepted'
}

test('the vectors cover fragments, pings, the closing error, an empty frame, u32 stages and u64 request ids', () => {
  const frames = linkVectors.streams.flatMap((s) => s.frames)
  expect(new Set(frames.map((f) => f.type))).toEqual(new Set([4, 5, 6, 7, 8, 10, 12, 13, 14, 15]))
  expect(frames.some((f) => f.stage === 0xffff_ffff)).toBe(true)
  expect(frames.some((f) => f.requestId === '18446744073709551615')).toBe(true)
  expect(frames.some((f) => f.plaintext === '')).toBe(true)
  expect(new Set(linkVectors.streams.map((s) => s.cipher))).toEqual(new Set(CIPHERS))
  expect(linkVectors.streams.every((s) => s.frames.some((f) => f.key !== s.key))).toBe(true) // each one rekeys
})

describe.each(STREAMS)('$name', (stream) => {
  test.each(IMPLEMENTATIONS)(`%s seals every frame to the vector's bytes and opens them${NO_NATIVE}`, (impl) => {
    if (impl === 'native' && !NATIVE) return
    const tx = new AeadSender(optionsOf(stream, impl))
    const rx = new AeadReceiver(optionsOf(stream, impl))
    for (const f of stream.frames) {
      const plaintext = hexToBytes(f.plaintext)
      const header = { type: f.type, stage: f.stage, requestId: BigInt(f.requestId) }
      expect(bytesToHex(tx.sealFrame(header, plaintext))).toBe(f.frame)
      const opened = rx.open(f.type, hexToBytes(f.frame).subarray(9))
      expect(opened.header).toEqual(header)
      expect(opened.seq).toBe(BigInt(f.seq))
      expect(bytesToHex(opened.plaintext)).toBe(f.plaintext)
    }
    expect(tx.sent).toBe(BigInt(stream.frames.length))
  })
})

describe.skipIf(!NATIVE)('TypeScript ↔ C, both ways', () => {
  const SIZES = [0, 1, 15, 16, 17, 4096, 65_539]
  for (const cipher of CIPHERS)
    for (const [from, to] of [
      ['script', 'native'],
      ['native', 'script'],
    ] as const)
      test(`${cipher}: ${from} seals, ${to} opens (odd-offset views, rekey every 2 frames)`, () => {
        const key = new Uint8Array(randomBytes(32))
        const common = { cipher, key, direction: 2 as const, clusterId: 'c-✓', rekeyInterval: 2n }
        const tx = new AeadSender({ ...common, implementation: from })
        const rx = new AeadReceiver({ ...common, implementation: to })
        for (let i = 0; i < 3 * SIZES.length; i++) {
          const size = SIZES[i % SIZES.length]!
          const plaintext = new Uint8Array(randomBytes(size + 3)).subarray(1, 1 + size)
          const header = { type: FrameType.activation, stage: i * 977, requestId: BigInt(i) << 40n }
          const frame = tx.sealFrame(header, plaintext)
          const copy = new Uint8Array(frame.byteLength + 5)
          copy.set(frame, 5)
          const opened = rx.open(FrameType.activation, copy.subarray(5 + 9))
          expect(opened.header).toEqual(header)
          expect(bytesToHex(opened.plaintext)).toBe(bytesToHex(plaintext))
        }
      })
})

describe('refusals are the same on both', () => {
  const refusals = (impl: Implementation) => {
    const key = new Uint8Array(32).fill(5)
    const make = () => ({
      tx: new AeadSender({ cipher: 'aes-256-gcm', key, direction: 1, clusterId: 'c', implementation: impl }),
      rx: new AeadReceiver({ cipher: 'aes-256-gcm', key, direction: 1, clusterId: 'c', implementation: impl }),
    })
    const h = { type: FrameType.data, stage: 1, requestId: 2n }
    const out: Record<string, string> = {}
    let { tx, rx } = make()
    const f0 = tx.seal(h, new Uint8Array([1]))
    const f1 = tx.seal(h, new Uint8Array([2]))
    rx.open(FrameType.data, f0)
    out.replay = codeOf(() => rx.open(FrameType.data, f0))
    ;({ tx, rx } = make())
    tx.seal(h, new Uint8Array([1]))
    out.order = codeOf(() => rx.open(FrameType.data, tx.seal(h, new Uint8Array([2]))))
    ;({ tx, rx } = make())
    const flipped = tx.seal(h, new Uint8Array(40)).slice()
    flipped[25]! ^= 1
    out.flipped = codeOf(() => rx.open(FrameType.data, flipped))
    ;({ tx, rx } = make())
    out.otherType = codeOf(() => rx.open(FrameType.tokens, tx.seal(h, new Uint8Array(3))))
    ;({ tx, rx } = make())
    const stage = tx.seal(h, new Uint8Array(3)).slice()
    stage[8] = 9 // the stage travels in clear and is authenticated
    out.stage = codeOf(() => rx.open(FrameType.data, stage))
    out.short = codeOf(() => make().rx.open(FrameType.data, new Uint8Array(35)))
    expect(f1.byteLength).toBe(20 + 1 + 16)
    return out
  }

  test(`script and native give the same codes${NO_NATIVE}`, () => {
    const script = refusals('script')
    expect(script).toEqual({
      replay: 'E_FRAME_REPLAY',
      order: 'E_FRAME_ORDER',
      flipped: 'E_FRAME_AUTH',
      otherType: 'E_FRAME_AUTH',
      stage: 'E_FRAME_AUTH',
      short: 'E_FRAME_SHORT',
    })
    if (NATIVE) expect(refusals('native')).toEqual(script)
  })
})

// ---- two real links, one end sealing in C and the other in TypeScript ----

const alice = testIdentity(1)
const bob = testIdentity(2)
const authorize = pins({ alice, bob })
const cleanup: (() => void)[] = []
afterEach(() => cleanup.splice(0).forEach((f) => f()))

describe.skipIf(!NATIVE)('a link with one end on each implementation', () => {
  for (const cipher of CIPHERS)
    test(`${cipher}: messages (a fragmented one too) cross both ways in order`, async () => {
      const common: Partial<LinkOptions> = {
        clusterId: 'mixed',
        authorize,
        cipher,
        fragmentBytes: 1000,
        rekeyInterval: 3n,
      }
      const accepted: SealedLink[] = []
      const listener = listenLinks(
        '127.0.0.1',
        0,
        { ...common, identity: bob, serial: 'bob', frames: 'script' } as LinkOptions,
        (l) => accepted.push(l),
      )
      cleanup.push(() => listener.stop(true))
      const link = await connectLink('127.0.0.1', listener.port, {
        ...common,
        identity: alice,
        serial: 'alice',
        frames: 'native',
      } as LinkOptions)
      cleanup.push(() => link.close())
      while (!accepted.length) await Bun.sleep(5)
      const far = accepted[0]!
      far.onFrame((f) => far.send(f.type, f.payload.slice().reverse(), { stage: f.stage + 1, requestId: f.requestId }))
      const sent = [new Uint8Array(0), new Uint8Array(999).fill(3), randomBytes(10_001), new Uint8Array([1, 2, 3])]
      const got: { stage: number; requestId: bigint; payload: string }[] = []
      const done = new Promise<void>((resolve) =>
        link.onFrame((f) => {
          got.push({ stage: f.stage, requestId: f.requestId, payload: bytesToHex(f.payload) })
          if (got.length === sent.length) resolve()
        }),
      )
      sent.forEach((p, i) => link.send(FrameType.data, new Uint8Array(p), { stage: i, requestId: BigInt(i) << 33n }))
      await done
      expect(got).toEqual(
        sent.map((p, i) => ({
          stage: i + 1,
          requestId: BigInt(i) << 33n,
          payload: bytesToHex(new Uint8Array(p).reverse()),
        })),
      )
      expect(link.closed || far.closed).toBe(false)
    })
})
