/** The sealed tensor-parallel channel on a real loopback socket: the C channel (ffi/tp_channel.c over libcrypto) writes
 * the same bytes as the link's TypeScript sealing (link/aead-channel.ts) across rekeys, each opens what the other sealed,
 * and an altered, foreign-keyed, mistyped, oversized or replayed frame, a closed peer and a silent one each end in their
 * own LinkError — after which the group stays failed and says why; rank 0's watch notices a rank gone between steps. */
import { afterEach, describe, expect, test } from 'bun:test'
import { randomBytes } from 'node:crypto'
import { AeadSender, CIPHERS, type CipherName } from '../../src/link/aead-channel.ts'
import type { BlockingSocket } from '../../src/tensor-parallel/blocking-socket.ts'
import { socketPair } from '../support/socket-pair.ts'
import { LinkError } from '../../src/link/errors.ts'
import { FRAME_HEADER_BYTES, FrameType, SEALED_HEADER_BYTES, TAG_BYTES } from '../../src/link/frames.ts'
import {
  NativeTpChannel,
  ScriptTpChannel,
  SealedTpGroup,
  type TpChannel,
} from '../../src/tensor-parallel/sealed-group.ts'

const KEY = new Uint8Array(randomBytes(32))
const CLUSTER = 'tp-test'
const NATIVE = CIPHERS.every((c) => NativeTpChannel.available(c))
if (!NATIVE)
  console.warn('sealed-tp-channel: the C channel is skipped: libcrypto with both ciphers could not be loaded here')

const open: { close(): void }[] = []
afterEach(() => {
  for (const o of open.splice(0)) o.close()
})

type Kind = 'native' | 'script'
function channel(
  kind: Kind,
  socket: BlockingSocket,
  own: number,
  peer: number,
  options: { key?: Uint8Array; rekey?: number; cipher?: CipherName } = {},
): TpChannel {
  const key = options.key ?? KEY
  const c =
    kind === 'native'
      ? new NativeTpChannel(socket, key, CLUSTER, own, peer, options.rekey ?? 0, options.cipher)
      : new ScriptTpChannel(socket, key, CLUSTER, own, peer, options.rekey ?? 0, options.cipher)
  open.push(c)
  return c
}

/** What rank `own` would put on the wire, sealed by the link's TypeScript sender. */
function referenceSender(own: number, rekey = 0, cipher: CipherName = 'aes-256-gcm') {
  const sender = new AeadSender({
    cipher,
    key: KEY,
    direction: own === 0 ? 1 : 2,
    clusterId: CLUSTER,
    rekeyInterval: rekey ? BigInt(rekey) : undefined,
  })
  return (type: number, payload: Uint8Array) => sender.sealFrame({ type, stage: own, requestId: 0n }, payload).slice()
}

const frameBytes = (n: number) => FRAME_HEADER_BYTES + SEALED_HEADER_BYTES + n + TAG_BYTES
const payloads = [0, 1, 17, 4096, 70_000].map((n) => new Uint8Array(randomBytes(n)))

test.skipIf(!NATIVE).each(CIPHERS)(
  'the C channel writes the bytes the TypeScript sealing writes, frame for frame across rekeys (%s)',
  (cipher) => {
    for (const own of [0, 1]) {
      const [a, b] = socketPair(open)
      const c = channel('native', a, own, 1 - own, { rekey: 2, cipher })
      const reference = referenceSender(own, 2, cipher)
      for (const p of [...payloads, ...payloads]) {
        c.send(FrameType.tpStep, p, 2000)
        const expected = reference(FrameType.tpStep, p)
        expect(b.receive(frameBytes(p.byteLength), 2000)).toEqual(expected)
      }
    }
  },
)

describe.each(
  NATIVE
    ? [['native', 'script'] as const, ['script', 'native'] as const, ['script', 'script'] as const]
    : [['script', 'script'] as const],
)('%s sender, %s receiver', (sends, receives) => {
  test.each(CIPHERS)('every frame opens to what was sent, both ways, across rekeys (%s)', (cipher) => {
    const [a, b] = socketPair(open)
    const zero = channel(sends, a, 0, 1, { rekey: 3, cipher })
    const one = channel(receives, b, 1, 0, { rekey: 3, cipher })
    for (const p of [...payloads, ...payloads]) {
      zero.send(FrameType.tpStep, p, 2000)
      expect(one.receive(FrameType.tpStep, 1 << 20, 2000)).toEqual(p)
      one.send(FrameType.tpSum, p, 2000)
      expect(zero.receive(FrameType.tpSum, 1 << 20, 2000)).toEqual(p)
    }
  })
})

describe.each(NATIVE ? (['native', 'script'] as const) : (['script'] as const))('the %s channel refuses', (kind) => {
  const refused = (run: () => unknown, code: string | RegExp) => {
    let error: unknown
    try {
      run()
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(LinkError)
    expect((error as LinkError).code).toMatch(code)
    return error as LinkError
  }

  test('an altered frame', () => {
    const [a, b] = socketPair(open)
    const c = channel(kind, a, 0, 1)
    const frame = referenceSender(1)(FrameType.tpPartial, new Uint8Array(64).fill(1))
    frame[frame.byteLength - TAG_BYTES - 3]! ^= 0x40
    b.send(frame, 2000)
    refused(() => c.receive(FrameType.tpPartial, 64, 2000), 'E_FRAME_AUTH')
  })

  test('a frame sealed with another key', () => {
    const [a, b] = socketPair(open)
    const c = channel(kind, a, 0, 1)
    channel('script', b, 1, 0, { key: new Uint8Array(32).fill(9) }).send(FrameType.tpPartial, new Uint8Array(8), 2000)
    refused(() => c.receive(FrameType.tpPartial, 64, 2000), 'E_FRAME_AUTH')
  })

  test('a frame of another type, or larger than allowed', () => {
    const [a, b] = socketPair(open)
    const c = channel(kind, a, 0, 1)
    const seal = referenceSender(1)
    b.send(seal(FrameType.tpSum, new Uint8Array(8)), 2000)
    expect(refused(() => c.receive(FrameType.tpPartial, 64, 2000), 'E_TP_PROTOCOL').message).toContain('type 22')
    const [x, y] = socketPair(open)
    const d = channel(kind, x, 0, 1)
    y.send(referenceSender(1)(FrameType.tpPartial, new Uint8Array(128)), 2000)
    refused(() => d.receive(FrameType.tpPartial, 64, 2000), 'E_TP_PROTOCOL')
  })

  test('a replayed frame', () => {
    const [a, b] = socketPair(open)
    const c = channel(kind, a, 0, 1)
    const frame = referenceSender(1)(FrameType.tpPartial, new Uint8Array(8).fill(3))
    b.send(frame, 2000)
    expect(c.receive(FrameType.tpPartial, 64, 2000)).toEqual(new Uint8Array(8).fill(3))
    b.send(frame, 2000)
    expect(refused(() => c.receive(FrameType.tpPartial, 64, 2000), /E_TP_PROTOCOL|E_FRAME_REPLAY/).message).toContain(
      'replayed',
    )
  })

  test('a frame that claims another sender', () => {
    const [a, b] = socketPair(open)
    const c = channel(kind, a, 0, 2)
    // sealed correctly by "rank 1" for direction 2: it opens, but this connection belongs to rank 2
    b.send(referenceSender(1)(FrameType.tpPartial, new Uint8Array(8)), 2000)
    expect(refused(() => c.receive(FrameType.tpPartial, 64, 2000), 'E_TP_PROTOCOL').message).toContain('rank 1')
  })

  test('a peer that closed, and one that stays silent', () => {
    const [a, b] = socketPair(open)
    const c = channel(kind, a, 0, 1)
    const started = performance.now()
    refused(() => c.receive(FrameType.tpPartial, 64, 150), 'E_TP_TIMEOUT')
    expect(performance.now() - started).toBeGreaterThanOrEqual(140)
    b.close()
    refused(() => c.receive(FrameType.tpPartial, 64, 2000), 'E_TP_PEER_CLOSED')
  })
})

test('a failed exchange leaves the group failed: later calls throw the first error at once, listeners hear it once', () => {
  const [a, b] = socketPair(open)
  const group = new SealedTpGroup(0, 2, [channel(NATIVE ? 'native' : 'script', a, 0, 1)], 2000)
  const heard: Error[] = []
  group.onFailure((e) => heard.push(e))
  b.close()
  expect(() => group.allSum(new Float32Array(4))).toThrow(LinkError)
  expect(group.failure).toBeInstanceOf(LinkError)
  expect((group.failure as LinkError).code).toBe('E_TP_PEER_CLOSED')
  expect(() => group.broadcast(new Uint8Array(4))).toThrow(group.failure!.message)
  expect(heard).toEqual([group.failure!])
})

test("rank 0's watch fails the group when a rank's connection closes between steps; a quiet live rank is left alone", async () => {
  const [a, b] = socketPair(open)
  const [x, y] = socketPair(open)
  const kind = NATIVE ? 'native' : 'script'
  const group = new SealedTpGroup(0, 3, [channel(kind, a, 0, 1), channel(kind, x, 0, 2)], 2000)
  const heard: Error[] = []
  group.onFailure((e) => heard.push(e))
  const stop = group.watch(20)
  // a step's frame waiting to be read is no sign of death
  channel('script', y, 2, 0).send(FrameType.tpPartial, new Uint8Array(4), 2000)
  await Bun.sleep(100)
  expect(group.failure).toBeUndefined()
  b.close()
  await Bun.sleep(100)
  expect((group.failure as LinkError | undefined)?.code).toBe('E_TP_PEER_CLOSED')
  expect(group.failure!.message).toContain('rank 1 went away')
  expect(heard).toEqual([group.failure!])
  expect(() => group.allSum(new Float32Array(1))).toThrow('rank 1 went away')
  stop()
})

test("rank 0 refuses a gather whose size is not its own part's, and the group stays failed", () => {
  const [a, b] = socketPair(open)
  const group = new SealedTpGroup(0, 2, [channel(NATIVE ? 'native' : 'script', a, 0, 1)], 2000)
  // rank 1's part: one value short
  channel('script', b, 1, 0).send(FrameType.tpGather, new Uint8Array(4 * 5), 2000)
  expect(() => group.gatherLast(new Float32Array(6), 2)).toThrow('rank 1 sent 5 values to gather, expected 6')
  expect((group.failure as LinkError).code).toBe('E_TP_PROTOCOL')
})

test('a failed group is restored over new connections: exchanges work again and listeners hear the next failure', () => {
  const kind = NATIVE ? 'native' : 'script'
  const [a, b] = socketPair(open)
  const group = new SealedTpGroup(0, 2, [channel(kind, a, 0, 1)], 2000)
  const heard: Error[] = []
  group.onFailure((e) => heard.push(e))
  expect(() => group.restore([])).toThrow('the group has not failed')
  b.close()
  expect(() => group.allSum(new Float32Array(4))).toThrow(LinkError)
  expect(() => group.restore([])).toThrow('takes 0 connections back')
  // the rank, started again, connects anew (a fresh key in real life: the meeting hands one out)
  const [c, d] = socketPair(open)
  group.restore([channel(kind, c, 0, 1)])
  expect(group.failure).toBeUndefined()
  const rank1 = channel('script', d, 1, 0)
  group.broadcast(Uint8Array.of(1, 2, 3, 4))
  expect([...rank1.receive(FrameType.tpStep, 64, 2000)]).toEqual([1, 2, 3, 4])
  d.close()
  expect(() => group.allSum(new Float32Array(4))).toThrow(LinkError)
  expect(heard).toHaveLength(2)
  expect(() => new SealedTpGroup(1, 2, [channel(kind, socketPair(open)[0], 1, 0)], 2000).restore([])).toThrow(
    'the group has not failed',
  )
})
