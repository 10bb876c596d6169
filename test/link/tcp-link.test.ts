/** The sealed link on loopback, in one process: data both ways, in order, large payloads with backpressure; refusals with
 * the reason on both sides; a peer that stops answering pings is marked unavailable; a silent server times out. */
import { afterEach, describe, expect, test } from 'bun:test'
import { FrameType } from '../../src/link/frames.ts'
import { FrameDecoder, encodeFrame } from '../../src/link/framing.ts'
import { connectLink, EARLY_BYTES, listenLinks, SealedLink, type LinkOptions } from '../../src/link/tcp-link.ts'
import { InitiatorHandshake } from '../../src/trust/handshake.ts'
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
  const listener = listenLinks(
    '127.0.0.1',
    0,
    { identity: bob, serial: 'bob', clusterId: 'c', authorize: both, ...options },
    (l) => accepted.push(l),
  )
  cleanup.push(() => listener.stop(true))
  return { port: listener.port, accepted }
}
const client = (port: number, options: Partial<LinkOptions> = {}) =>
  connectLink('127.0.0.1', port, { identity: alice, serial: 'alice', clusterId: 'c', authorize: both, ...options })

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

  /** Two link ends joined by hand: what one writes is what the test hands the other, in chunks it chooses. */
  async function handshakeUpToFinish() {
    const capture = () => {
      const writes: Uint8Array[] = []
      return { writes, socket: { write: (b: Uint8Array) => (writes.push(b.slice()), b.byteLength), end: () => 0 } }
    }
    const [toR, toI] = [capture(), capture()]
    const settle = async () => {
      for (let k = 0; k < 20; k++) await Promise.resolve()
      await Bun.sleep(5)
    }
    const responder = new SealedLink('responder', {
      identity: bob,
      serial: 'bob',
      clusterId: 'c',
      authorize: both,
      pingIntervalMs: 600_000,
    })
    const initiator = new SealedLink('initiator', {
      identity: alice,
      serial: 'alice',
      clusterId: 'c',
      authorize: both,
      pingIntervalMs: 600_000,
    })
    responder.attach(toI.socket)
    initiator.attach(toR.socket)
    responder.data(toR.writes.shift()!) // HELLO
    await settle()
    initiator.data(toI.writes.shift()!) // ACK
    await initiator.established
    const finish = toR.writes.shift()!
    cleanup.push(() => (initiator.close(), responder.close()))
    return { responder, initiator, finish, toR, settle }
  }

  test('sealed frames in the same read as FINISH wait, undecoded, until the keys are checked; then arrive in order', async () => {
    const { responder, initiator, finish, toR } = await handshakeUpToFinish()
    const sent = [new Uint8Array(300 * 1024).fill(1), new Uint8Array(200 * 1024).fill(2), new Uint8Array([3])]
    for (const payload of sent) initiator.send(FrameType.activation, payload)
    const got: Uint8Array[] = []
    const all = new Promise<void>((resolve) =>
      responder.onFrame((f) => (got.push(f.payload), got.length === sent.length && resolve())),
    )
    // FINISH and everything after it in one chunk: the decoder stops after FINISH (its check is async)
    const chunk = Buffer.concat([finish, ...toR.writes.splice(0)])
    responder.data(new Uint8Array(chunk))
    expect(responder.bufferedBytes).toBe(0)
    await responder.established
    await all
    expect(got.map((p) => [p.byteLength, p[0]])).toEqual(sent.map((p) => [p.byteLength, p[0]]))
  })

  test('more than the allowed early bytes before the keys are checked closes the link', async () => {
    const { responder, initiator, finish, toR } = await handshakeUpToFinish()
    initiator.send(FrameType.activation, new Uint8Array(EARLY_BYTES + 1024))
    responder.data(new Uint8Array(Buffer.concat([finish, ...toR.writes.splice(0)])))
    expect(responder.closed).toBe(true)
    expect(responder.stats.closeReason).toMatchObject({
      code: 'E_FRAME_TOO_LARGE',
      message: `more than ${EARLY_BYTES} bytes arrived before the handshake finished`,
    })
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
    // the far side pings rarely, so once it stops reading nothing at all comes back from it (as from a frozen process)
    const { port, accepted } = server({ pingIntervalMs: 60_000 })
    const link = await client(port, { pingIntervalMs: 100 })
    await Bun.sleep(20)
    const far = accepted[0]!
    ;(far as unknown as { data: (c: Uint8Array) => void }).data = () => {}
    const t0 = Date.now()
    const reason = await new Promise<{ code?: string }>((resolve) =>
      link.onClose((r) => resolve(r as { code?: string })),
    )
    expect(reason.code).toBe('E_PEER_UNAVAILABLE')
    const elapsed = Date.now() - t0
    expect(elapsed).toBeGreaterThanOrEqual(3 * 100 - 40) // not before 3 silent intervals…
    expect(elapsed).toBeLessThan(3 * 100 + 150) // …and not much after
    expect(() => link.send(FrameType.data, new Uint8Array(1))).toThrow(/missed 3 pings/)
  })

  test('a peer that stops mid-handshake (HELLO sent, ACK received, no FINISH) times out on the waiting side', async () => {
    // a raw client speaks the first half of the handshake over real TCP, then goes silent
    const closed: { code?: string }[] = []
    const listener = Bun.listen<{ link: SealedLink }>({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        open(socket) {
          const link = new SealedLink('responder', {
            identity: bob,
            serial: 'bob',
            clusterId: 'c',
            authorize: both,
            handshakeTimeoutMs: 300,
          })
          socket.data = { link }
          link.onClose((r) => closed.push(r as { code?: string }))
          link.attach(socket)
        },
        data: (socket, chunk) => socket.data.link.data(new Uint8Array(chunk)),
        close: () => {},
      },
    })
    cleanup.push(() => listener.stop(true))
    const half = new InitiatorHandshake({
      identity: alice,
      serial: 'alice',
      clusterId: 'c',
      authorize: both,
      randomBytes: (n) => crypto.getRandomValues(new Uint8Array(n)),
    })
    const decoder = new FrameDecoder(1 << 16)
    const acks: number[] = []
    let ended = false
    const socket = await Bun.connect({
      hostname: '127.0.0.1',
      port: listener.port,
      socket: {
        data: (_s, chunk) => decoder.push(new Uint8Array(chunk)).forEach((f) => acks.push(f.type)),
        close: () => void (ended = true),
      },
    })
    cleanup.push(() => socket.end())
    const t0 = Date.now()
    socket.write(encodeFrame(FrameType.hello, half.hello()))
    while (closed.length === 0 && Date.now() - t0 < 3000) await Bun.sleep(10)
    expect(acks).toEqual([FrameType.ack]) // the responder answered, then waited for a FINISH that never came
    expect(closed[0]?.code).toBe('E_HANDSHAKE_TIMEOUT')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290)
    await Bun.sleep(50)
    expect(ended).toBe(true) // and it hung up
  })

  test('keys rekey on schedule over a live link and every frame still opens, both ways', async () => {
    const { port, accepted } = server({ rekeyInterval: 3n })
    const link = await client(port, { rekeyInterval: 3n })
    cleanup.push(() => link.close())
    await Bun.sleep(20)
    const far = accepted[0]!
    far.onFrame((f) => far.send(FrameType.data, f.payload))
    const back: number[] = []
    const all = new Promise<void>((resolve) => link.onFrame((f) => back.push(f.payload[0]!) === 10 && resolve()))
    for (let i = 0; i < 10; i++) link.send(FrameType.data, new Uint8Array([i]))
    await all
    expect(back).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expect(link.stats.sent).toBe(10)
    expect(far.stats.received).toBe(10)
  })

  test('a FINISH the responder refuses reaches the initiator as the responder’s code, though it already held keys', async () => {
    // in memory: a wire that flips one bit of FINISH on its way to the responder
    const opts = { clusterId: 'c', authorize: both, handshakeTimeoutMs: 5000, pingIntervalMs: 60_000 }
    const a = new SealedLink('initiator', { identity: alice, serial: 'alice', ...opts })
    const b = new SealedLink('responder', { identity: bob, serial: 'bob', ...opts })
    const decoder = new FrameDecoder(1 << 16)
    b.attach({ write: (x: Uint8Array) => (a.data(x.slice()), x.byteLength), end: () => {} } as never)
    a.attach({
      write: (x: Uint8Array) => {
        for (const f of decoder.push(x.slice())) {
          const body = f.body.slice()
          if (f.type === FrameType.finish) body[10]! ^= 1
          b.data(encodeFrame(f.type, body))
        }
        return x.byteLength
      },
      end: () => {},
    } as never)
    const reasons = await Promise.all([new Promise((r) => a.onClose(r)), new Promise((r) => b.onClose(r))])
    expect(reasons.map((r) => (r as { code: string }).code)).toEqual(['E_BAD_SIGNATURE', 'E_BAD_SIGNATURE'])
    expect((reasons[0] as Error).message).toContain('the peer refused the handshake')
  })

  test('a caller waiting for a frame gets the close reason, not a hang; or a timeout', async () => {
    const { port, accepted } = server()
    const link = await client(port)
    cleanup.push(() => link.close())
    await Bun.sleep(20)
    expect(await link.nextFrame(undefined, 50).catch((e) => e.code)).toBe('E_LINK_TIMEOUT')
    const waiting = link.nextFrame((f) => f.type === FrameType.tokens)
    accepted[0]!.send(FrameType.data, new Uint8Array([1])) // not a match: still waiting
    accepted[0]!.close()
    expect(await waiting.catch((e) => e.code)).toBe('E_PEER_CLOSED')
    expect(await link.nextFrame().catch((e) => e.code)).toBe('E_PEER_CLOSED')
  })
})

describe('fragments (large messages as several sealed records)', () => {
  async function pair(extra: Partial<LinkOptions> = {}) {
    const { InitiatorHandshake: I, ResponderHandshake: R } = await import('../../src/trust/handshake.ts')
    const rnd = (n: number) => crypto.getRandomValues(new Uint8Array(n))
    const i = new I({ identity: alice, serial: 'alice', clusterId: 'c', authorize: both, randomBytes: rnd })
    const r = new R({ identity: bob, serial: 'bob', clusterId: 'c', authorize: both, randomBytes: rnd })
    const { finish, result } = await i.receiveAck(await r.receiveHello(i.hello()))
    const theirs = r.receiveFinish(finish)
    const opts = { clusterId: 'c', authorize: both, pingIntervalMs: 60_000, ...extra }
    const wire: Uint8Array[] = []
    let b: SealedLink | null = null
    const a = SealedLink.withKeys('initiator', { identity: alice, serial: 'alice', ...opts }, result, {
      write: (x: Uint8Array) => (wire.push(x.slice()), b?.data(x.slice()), x.byteLength),
      end: () => {},
    } as never)
    b = SealedLink.withKeys('responder', { identity: bob, serial: 'bob', ...opts }, theirs, {
      write: (x: Uint8Array) => x.byteLength,
      end: () => {},
    } as never)
    cleanup.push(() => (a.close(), b!.close()))
    return { a, b, wire, key: result.initiatorKey }
  }

  test('a payload over fragmentBytes crosses as several records and arrives whole, once', async () => {
    const { a, b, wire } = await pair({ fragmentBytes: 1000 })
    const got: { type: number; stage: number; requestId: bigint; payload: Uint8Array }[] = []
    b.onFrame((f) => got.push(f))
    const payload = new Uint8Array(10_500).map((_, i) => i * 7)
    a.send(FrameType.activation, payload, { stage: 2, requestId: 77n })
    // the records, as the peer's decoder reads them off the wire (they go out in batches, not one write each)
    const records = () => new FrameDecoder(1 << 20).push(Buffer.concat(wire)).map((f) => f.type)
    expect(records()).toEqual([...Array(10).fill(FrameType.fragment), FrameType.activation])
    a.send(FrameType.data, new Uint8Array(1000)) // exactly the limit: one record
    expect(records().length).toBe(12)
    expect(got.map((f) => [f.type, f.stage, f.requestId, f.payload.length])).toEqual([
      [FrameType.activation, 2, 77n, 10_500],
      [FrameType.data, 0, 0n, 1000],
    ])
    expect(got[0]!.payload).toEqual(payload)
    expect(() => a.send(FrameType.fragment, new Uint8Array(1))).toThrow(/the link's own/)
    // a large message's records are written a batch (at most 1 MiB of frames) at a time, not one write each
    const writes = wire.length
    const big = new Uint8Array(2_500_000).map((_, i) => i * 13)
    a.send(FrameType.activation, big, { stage: 1, requestId: 78n })
    expect(wire.slice(writes).map((w) => w.byteLength <= 1024 * 1024)).toEqual([true, true, true])
    expect(got[2]!.payload).toEqual(big)
  })

  test('records of one message must share stage and request id, and stay under the size limit', async () => {
    const { AeadSender } = await import('../../src/link/aead-channel.ts')
    // a peer that holds the keys but breaks the rules: records sealed by hand and fed to the receiving end
    const forged = async (records: { type: number; stage: number; size: number }[], maxFrameBytes: number) => {
      const { b, key } = await pair({ maxFrameBytes })
      const tx = new AeadSender({ cipher: 'aes-256-gcm', key, direction: 1, clusterId: 'c' })
      const got: number[] = []
      b.onFrame((f) => got.push(f.payload.length))
      for (const r of records)
        b.data(tx.sealFrame({ type: r.type, stage: r.stage, requestId: 0n }, new Uint8Array(r.size)))
      return { got, code: b.stats.closeReason?.code, closed: b.closed }
    }
    const ok = await forged(
      [
        { type: FrameType.fragment, stage: 1, size: 60 },
        { type: FrameType.data, stage: 1, size: 30 },
      ],
      100,
    )
    expect(ok).toEqual({ got: [90], code: undefined, closed: false })
    const switched = await forged(
      [
        { type: FrameType.fragment, stage: 1, size: 10 },
        { type: FrameType.data, stage: 2, size: 10 },
      ],
      100,
    )
    expect(switched).toEqual({ got: [], code: 'E_FRAGMENT', closed: true })
    const tooBig = await forged(
      [
        { type: FrameType.fragment, stage: 1, size: 60 },
        { type: FrameType.fragment, stage: 1, size: 60 },
      ],
      100,
    )
    expect(tooBig).toEqual({ got: [], code: 'E_FRAME_TOO_LARGE', closed: true })
  })
})
