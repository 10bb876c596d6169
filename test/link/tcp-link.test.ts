/** The sealed link on loopback, in one process: data both ways, in order, large payloads with backpressure; refusals with
 * the reason on both sides; a peer that stops answering pings is marked unavailable; a silent server times out. */
import { afterEach, describe, expect, test } from 'bun:test'
import { FrameType } from '../../src/link/frames.ts'
import { connectLink, listenLinks, type LinkOptions, type SealedLink } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from '../support/identities.ts'

const alice = testIdentity(1)
const bob = testIdentity(2)
const mallory = testIdentity(3)
const both = pins({ alice, bob })
const cleanup: (() => void)[] = []
afterEach(() => {
  for (const c of cleanup.splice(0)) c()
})

function server(options: Partial<LinkOptions> = {}) {
  const accepted: SealedLink[] = []
  const listener = listenLinks('127.0.0.1', 0, { identity: bob, serial: 'bob', clusterId: 'c', authorize: both, ...options }, (l) => accepted.push(l))
  cleanup.push(() => listener.stop(true))
  return { port: listener.port, accepted }
}
const client = (port: number, options: Partial<LinkOptions> = {}) => connectLink('127.0.0.1', port, { identity: alice, serial: 'alice', clusterId: 'c', authorize: both, ...options })

describe('sealed TCP link', () => {
  for (const cipher of ['aes-256-gcm', 'chacha20-poly1305'] as const)
    test(`frames cross both ways in order (${cipher}), including a 20 MB payload`, async () => {
      const { port, accepted } = server({ cipher })
      const link = await client(port, { cipher })
      cleanup.push(() => link.close())
      expect(link.peerSerial).toBe('bob')
      await Bun.sleep(20)
      const far = accepted[0]!
      expect(far.peerSerial).toBe('alice')
      const got: { stage: number; size: number; first: number }[] = []
      const done = new Promise<void>((resolve) =>
        far.onFrame((f) => {
          got.push({ stage: f.stage, size: f.payload.byteLength, first: f.payload[0]! })
          if (got.length === 4) resolve()
        }),
      )
      const big = new Uint8Array(20 * 1024 * 1024).map((_, i) => i & 255)
      link.send(FrameType.data, new Uint8Array([7]), { stage: 1 })
      link.send(FrameType.activation, big, { stage: 2, requestId: 9n })
      link.send(FrameType.data, new Uint8Array([8]), { stage: 3 })
      link.send(FrameType.tokens, new Uint8Array([9, 9]), { stage: 4 })
      await done
      expect(got).toEqual([
        { stage: 1, size: 1, first: 7 },
        { stage: 2, size: big.byteLength, first: 0 },
        { stage: 3, size: 1, first: 8 },
        { stage: 4, size: 2, first: 9 },
      ])
      const back = new Promise<Uint8Array>((resolve) => link.onFrame((f) => resolve(f.payload)))
      far.send(FrameType.data, new TextEncoder().encode('pong'))
      expect(new TextDecoder().decode(await back)).toBe('pong')
    })

  test('an unpinned client is refused; both sides learn why', async () => {
    const { port, accepted } = server()
    const error = await client(port, { identity: mallory, serial: 'mallory' }).catch((e) => e)
    expect(error.code).toBe('E_PEER_NOT_PINNED')
    expect(error.message).toContain('peer refused the handshake')
    expect(accepted).toHaveLength(0)
  })

  test('a client whose pin for the server differs refuses to talk', async () => {
    const { port } = server({ identity: mallory })
    expect((await client(port).catch((e) => e)).code).toBe('E_KEY_MISMATCH')
  })

  test('a server that never answers the handshake times out', async () => {
    const silent = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    cleanup.push(() => silent.stop(true))
    const t0 = Date.now()
    const error = await client(silent.port, { handshakeTimeoutMs: 300 }).catch((e) => e)
    expect(error.code).toBe('E_HANDSHAKE_TIMEOUT')
    expect(Date.now() - t0).toBeLessThan(2000)
  })

  test('a peer that stops answering pings is unavailable within 3 intervals, and sends then fail at once', async () => {
    const { port, accepted } = server({ pingIntervalMs: 100 })
    const link = await client(port, { pingIntervalMs: 100 })
    await Bun.sleep(20)
    // freeze the far side: it stops reading, so no pongs come back
    const far = accepted[0]!
    ;(far as unknown as { data: (c: Uint8Array) => void }).data = () => {}
    const t0 = Date.now()
    const reason = await new Promise<{ code?: string }>((resolve) => link.onClose((r) => resolve(r as { code?: string })))
    expect(reason.code).toBe('E_PEER_UNAVAILABLE')
    expect(Date.now() - t0).toBeLessThan(3 * 100 + 250)
    expect(() => link.send(FrameType.data, new Uint8Array(1))).toThrow(/missed 3 pings/)
  })
})
