/** The pong's optional payload (docs/protocol.md §Health): a side with `pongPayload` appends its bytes after the ping's
 * echo, the other side keeps the latest in `stats.peerPong` (with when it came) and still measures the round trip; a
 * side without one sends the bare echo. The frame layout round-trips with and without the extra bytes. */
import { afterEach, expect, test } from 'bun:test'
import { decodeMessage, encodeMessage, FrameType } from '../../src/link/frames.ts'
import { connectLink, listenLinks, type SealedLink } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from '../support/identities.ts'

const alice = testIdentity(1)
const bob = testIdentity(2)
const both = pins({ alice, bob })
const cleanup: (() => void)[] = []
afterEach(() => {
  for (const c of cleanup.splice(0)) c()
})

test('a pong carries the bytes after the echo; an empty payload is the bare echo', () => {
  const plain = encodeMessage({ type: 'pong', sentAtMs: 5n })
  expect(Buffer.from(plain.payload).toString('hex')).toBe('0500000000000000')
  expect(decodeMessage(FrameType.pong, plain.payload)).toEqual({ type: 'pong', sentAtMs: 5n })
  const extra = encodeMessage({ type: 'pong', sentAtMs: 5n, extra: new Uint8Array([1, 2]) })
  expect(Buffer.from(extra.payload).toString('hex')).toBe('05000000000000000102')
  expect(decodeMessage(FrameType.pong, extra.payload)).toEqual({
    type: 'pong',
    sentAtMs: 5n,
    extra: new Uint8Array([1, 2]),
  })
  expect(() => decodeMessage(FrameType.pong, new Uint8Array(7))).toThrow(/does not fit/)
  expect(decodeMessage(FrameType.stop, new Uint8Array([1]))).toEqual({ type: 'stop', bytes: new Uint8Array([1]) })
})

test('each side gets the payload the other appends to its pongs, fresh at every ping', async () => {
  let count = 0
  const accepted: SealedLink[] = []
  const listener = listenLinks(
    '127.0.0.1',
    0,
    {
      identity: bob,
      serial: 'bob',
      clusterId: 'c',
      authorize: both,
      pingIntervalMs: 100,
      pongPayload: () => new Uint8Array([0xb0, ++count]),
    },
    (l) => accepted.push(l),
  )
  cleanup.push(() => listener.stop(true))
  const link = await connectLink('127.0.0.1', listener.port, {
    identity: alice,
    serial: 'alice',
    clusterId: 'c',
    authorize: both,
    pingIntervalMs: 100,
  })
  cleanup.push(() => link.close())
  for (let i = 0; i < 50 && (link.stats.peerPong?.payload[1] ?? 0) < 2; i++) await Bun.sleep(20)
  const pong = link.stats.peerPong!
  expect(pong.payload[0]).toBe(0xb0)
  expect(pong.payload[1]).toBeGreaterThanOrEqual(2) // a new value with every pong
  expect(Date.now() - pong.at).toBeLessThan(500)
  expect(link.stats.rttMs).not.toBeNull()
  // alice appends nothing: bob sees plain pongs, and measures its round trip all the same
  await Bun.sleep(250)
  expect(accepted[0]!.stats.peerPong).toBeNull()
  expect(accepted[0]!.stats.rttMs).not.toBeNull()
})
