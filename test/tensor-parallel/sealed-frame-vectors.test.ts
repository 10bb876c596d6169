/** The sealed frame format has one specification (docs/protocol.md §Sealed frames) and two implementations: the link's
 * TypeScript (src/link/aead-channel.ts) and the tensor-parallel C channel (ffi/tp_channel.c). test/vectors/sealed-frames.json
 * holds fixed frames; each is rebuilt by hand from the specification, sealed and opened by AeadSender/AeadReceiver, and
 * sealed (where the C channel's fixed header fields allow it) and opened by the C channel over a loopback socket. */
import { afterEach, describe, expect, test } from 'bun:test'
import { gcm } from '@noble/ciphers/aes.js'
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'
import vectors from '../vectors/sealed-frames.json' with { type: 'json' }
import { AeadReceiver, AeadSender, type AeadOptions, type CipherName } from '../../src/link/aead-channel.ts'
import { LinkError } from '../../src/link/errors.ts'
import type { BlockingSocket } from '../../src/tensor-parallel/blocking-socket.ts'
import { socketPair } from '../support/socket-pair.ts'
import { NativeTpChannel } from '../../src/tensor-parallel/sealed-group.ts'

type Stream = (typeof vectors.streams)[number]
type Frame = Stream['frames'][number]

const options = (s: Stream): AeadOptions => ({
  cipher: s.cipher as CipherName,
  key: hexToBytes(s.key),
  direction: s.direction as 1 | 2,
  clusterId: s.clusterId,
  rekeyInterval: BigInt(s.rekeyInterval),
})
const frameBytes = (f: Frame) => hexToBytes(f.frame)
const plaintext = (f: Frame) => hexToBytes(f.plaintext)
/** The same frame with one bit of its tag flipped. */
const tampered = (f: Frame) => {
  const bytes = frameBytes(f)
  bytes[bytes.byteLength - 1]! ^= 0x01
  return bytes
}
const refusal = (run: () => unknown): string => {
  try {
    run()
  } catch (e) {
    expect(e).toBeInstanceOf(LinkError)
    return (e as LinkError).code
  }
  throw new Error('the altered frame was accepted')
}

test('the vectors cover both directions, both ciphers, rekeying, a non-zero request id and the closing one', () => {
  const frames = vectors.streams.flatMap((s) => s.frames)
  expect(new Set(vectors.streams.map((s) => s.direction))).toEqual(new Set([1, 2]))
  expect(new Set(vectors.streams.map((s) => s.cipher))).toEqual(new Set(['aes-256-gcm', 'chacha20-poly1305']))
  expect(vectors.streams.every((s) => s.frames.every((f, i) => f.seq === i))).toBe(true)
  expect(vectors.streams.filter((s) => s.frames.some((f) => f.key !== s.key))).toHaveLength(3)
  expect(frames.some((f) => f.requestId === '18446744073709551615')).toBe(true)
  expect(frames.some((f) => f.plaintext === '')).toBe(true)
})

describe.each(vectors.streams)('$name', (stream) => {
  test('each frame is what docs/protocol.md §Sealed frames says, rebuilt by hand with @noble', () => {
    const cluster = new TextEncoder().encode(stream.clusterId)
    let key = hexToBytes(stream.key)
    for (const f of stream.frames) {
      const seq = BigInt(f.seq)
      // rekey: before the frame whose counter is a non-zero multiple of the interval
      if (seq > 0n && seq % BigInt(stream.rekeyInterval) === 0n)
        key = hkdf(sha256, key, undefined, new TextEncoder().encode('dbcluster/v1 rekey'), 32)
      expect(bytesToHex(key)).toBe(f.key)
      // nonce = u32 BE direction ‖ u64 BE counter (the counter is the frame's sequence number)
      const nonce = new Uint8Array(12)
      new DataView(nonce.buffer).setUint32(0, stream.direction, false)
      new DataView(nonce.buffer).setBigUint64(4, seq, false)
      expect(bytesToHex(nonce)).toBe(f.nonce)
      // sealed header = u64 LE seq | u32 LE stage | u64 LE request id; AAD = u8 type | that header | cluster id (UTF-8)
      const header = new Uint8Array(20)
      const h = new DataView(header.buffer)
      h.setBigUint64(0, seq, true)
      h.setUint32(8, f.stage, true)
      h.setBigUint64(12, BigInt(f.requestId), true)
      const aad = new Uint8Array([f.type, ...header, ...cluster])
      expect(bytesToHex(aad)).toBe(f.aad)
      // frame = u64 LE length of what follows | u8 type | sealed header | ciphertext ‖ 16-byte tag
      const aead = stream.cipher === 'aes-256-gcm' ? gcm(key, nonce, aad) : chacha20poly1305(key, nonce, aad)
      const sealed = aead.encrypt(plaintext(f))
      const length = new Uint8Array(8)
      new DataView(length.buffer).setBigUint64(0, BigInt(1 + 20 + sealed.byteLength), true)
      expect(bytesToHex(new Uint8Array([...length, f.type, ...header, ...sealed]))).toBe(f.frame)
      expect(sealed.byteLength).toBe(plaintext(f).byteLength + 16)
    }
  })

  test('AeadSender seals exactly these bytes, frame after frame', () => {
    const sender = new AeadSender(options(stream))
    for (const f of stream.frames)
      expect(
        bytesToHex(sender.sealFrame({ type: f.type, stage: f.stage, requestId: BigInt(f.requestId) }, plaintext(f))),
      ).toBe(f.frame)
  })

  test('AeadReceiver opens them in order, and refuses the last one with a flipped tag bit', () => {
    const receiver = new AeadReceiver(options(stream))
    for (const f of stream.frames) {
      const opened = receiver.open(f.type, frameBytes(f).subarray(9))
      expect(opened.seq).toBe(BigInt(f.seq))
      expect(opened.header).toEqual({ type: f.type, stage: f.stage, requestId: BigInt(f.requestId) })
      expect(bytesToHex(opened.plaintext)).toBe(f.plaintext)
    }
    const again = new AeadReceiver(options(stream))
    for (const f of stream.frames.slice(0, -1)) again.open(f.type, frameBytes(f).subarray(9))
    const last = stream.frames.at(-1)!
    expect(refusal(() => again.open(last.type, tampered(last).subarray(9)))).toBe('E_FRAME_AUTH')
  })
})

// ---- the C channel (ffi/tp_channel.c), driven as src/tensor-parallel/sealed-group.ts drives it: over a socket ----

const NATIVE = NativeTpChannel.available('aes-256-gcm') && NativeTpChannel.available('chacha20-poly1305')
const NO_NATIVE = NATIVE ? '' : ' (skipped: libcrypto with both ciphers could not be loaded on this machine)'

/** Why the C channel cannot seal a stream's frames: it seals as a rank, so stage = its own rank, request id 0, direction 1
 * for rank 0 and 2 for the others. '' when it can. */
function whyCannotSeal(s: Stream): string {
  const stages = new Set(s.frames.map((f) => f.stage))
  const rank = s.frames[0]!.stage
  if (s.frames.some((f) => f.requestId !== '0')) return 'the C channel seals request id 0 only'
  if (stages.size !== 1 || (rank === 0) !== (s.direction === 1))
    return 'the C channel seals stage = its rank, direction 1 for rank 0 and 2 for the others'
  return ''
}
/** Why it cannot open them: a channel takes frames from one peer, whose rank must be the stage. */
function whyCannotOpen(s: Stream): string {
  if (new Set(s.frames.map((f) => f.stage)).size !== 1) return 'a C channel takes frames from one rank (one stage)'
  return ''
}

const open: { close(): void }[] = []
afterEach(() => {
  for (const o of open.splice(0)) o.close()
})

function nativeChannel(socket: BlockingSocket, s: Stream, ownRank: number, peerRank: number): NativeTpChannel {
  const c = new NativeTpChannel(
    socket,
    hexToBytes(s.key),
    s.clusterId,
    ownRank,
    peerRank,
    Number(s.rekeyInterval),
    s.cipher as CipherName,
  )
  open.push(c)
  return c
}

/** A C channel that receives the stream's direction from its stage: rank 0 receives direction 2, any other rank 1. */
function nativeReceiver(socket: BlockingSocket, s: Stream): NativeTpChannel {
  const stage = s.frames[0]!.stage
  return nativeChannel(socket, s, s.direction === 2 ? 0 : stage === 0 ? 1 : stage, stage)
}

test('the C channel seals two of the streams and opens all four, the ChaCha20-Poly1305 one included', () => {
  expect(vectors.streams.filter((s) => !whyCannotSeal(s)).map((s) => s.name)).toEqual([
    'tp rank 0 to a rank',
    'tp rank 2 to rank 0',
  ])
  expect(vectors.streams.filter((s) => !whyCannotOpen(s))).toHaveLength(4)
})

describe.each(vectors.streams)('the C channel, $name', (stream) => {
  const cannotSeal = whyCannotSeal(stream)
  test.skipIf(!NATIVE || cannotSeal !== '')(
    `seals exactly these bytes, frame after frame${NO_NATIVE}${cannotSeal && ` (skipped: ${cannotSeal})`}`,
    () => {
      const [a, b] = socketPair(open)
      const rank = stream.frames[0]!.stage
      const c = nativeChannel(a, stream, rank, rank === 0 ? 1 : 0)
      for (const f of stream.frames) {
        c.send(f.type, plaintext(f), 2000)
        expect(bytesToHex(b.receive(frameBytes(f).byteLength, 2000))).toBe(f.frame)
      }
    },
  )

  const cannotOpen = whyCannotOpen(stream)
  test.skipIf(!NATIVE || cannotOpen !== '')(
    `opens them in order, and refuses the last one with a flipped tag bit${NO_NATIVE}${cannotOpen && ` (skipped: ${cannotOpen})`}`,
    () => {
      const [a, b] = socketPair(open)
      const c = nativeReceiver(a, stream)
      for (const f of stream.frames) {
        b.send(frameBytes(f), 2000)
        expect(bytesToHex(c.receive(f.type, plaintext(f).byteLength, 2000))).toBe(f.plaintext)
      }
      const [x, y] = socketPair(open)
      const d = nativeReceiver(x, stream)
      for (const f of stream.frames.slice(0, -1)) {
        y.send(frameBytes(f), 2000)
        d.receive(f.type, plaintext(f).byteLength, 2000)
      }
      const last = stream.frames.at(-1)!
      y.send(tampered(last), 2000)
      expect(refusal(() => d.receive(last.type, plaintext(last).byteLength, 2000))).toBe('E_FRAME_AUTH')
    },
  )
})
