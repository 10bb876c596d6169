/** A real two-process link on loopback: a frozen peer is reported unavailable within 3 ping intervals, sends fail at
 * once while it is down, and the link comes back by itself (fresh handshake, fresh keys) when the peer returns. */
import { expect, test } from 'bun:test'
import { consola } from 'consola'
import { FrameType } from '../../src/link/frames.ts'
import { ReconnectingLink, type LinkState } from '../../src/link/reconnecting-link.ts'
import { pins, testIdentity } from '../support/identities.ts'

consola.level = 1
const ROOT = new URL('../..', import.meta.url).pathname
const PING_MS = 200

async function startPeer(port = 0) {
  const proc = Bun.spawn([process.execPath, 'test/support/link-peer.ts'], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), PING_MS: String(PING_MS) },
    stdout: 'pipe',
  })
  const reader = proc.stdout.getReader()
  let text = ''
  while (!/listening (\d+)/.test(text)) {
    const { value, done } = await reader.read()
    if (done) throw new Error('peer exited')
    text += new TextDecoder().decode(value)
  }
  return { proc, port: Number(/listening (\d+)/.exec(text)![1]) }
}

test('kill the peer: unavailable within 3 ping intervals, errors not hangs, reconnect when it returns', async () => {
  const peer = await startPeer()
  const link = new ReconnectingLink('127.0.0.1', peer.port, {
    identity: testIdentity(1),
    serial: 'alice',
    clusterId: 'c',
    authorize: pins({ alice: testIdentity(1), bob: testIdentity(2) }),
    pingIntervalMs: PING_MS,
    backoffMs: 300,
  })
  const states: LinkState[] = []
  let waiter: ((s: LinkState) => void) | null = null
  link.onState((s) => {
    states.push(s)
    waiter?.(s)
  })
  const next = (want: LinkState['state']) =>
    new Promise<LinkState>((resolve) => (waiter = (s) => s.state === want && resolve(s)))
  const echo = () =>
    new Promise<string>((resolve) => {
      link.onFrame((f) => resolve(new TextDecoder().decode(f.payload)))
      link.send(FrameType.data, new TextEncoder().encode('hello'))
    })
  link.start()
  const first = (await next('connected')) as { link: { peerSerial: string } }
  expect(first.link.peerSerial).toBe('bob')
  expect(await echo()).toBe('hello')

  // freeze the peer: nothing comes back, not even pongs; a caller waiting for a reply gets an error, not a hang
  const pending = link.nextFrame((f) => f.type === FrameType.tokens)
  peer.proc.kill('SIGSTOP')
  const t0 = Date.now()
  const down = (await next('unavailable')) as { reason: string }
  const elapsed = Date.now() - t0
  expect(down.reason).toContain('E_PEER_UNAVAILABLE: bob missed 3 pings')
  expect(elapsed).toBeLessThan(3 * PING_MS + 150)
  expect(elapsed).toBeGreaterThan(2 * PING_MS) // the last pong came at most one interval before the freeze
  expect(await pending.catch((e) => e.code)).toBe('E_PEER_UNAVAILABLE')
  expect(() => link.send(FrameType.data, new Uint8Array(1))).toThrow(/unavailable/)
  expect(await link.nextFrame().catch((e) => e.code)).toBe('E_PEER_UNAVAILABLE')

  // the peer dies and a new one takes its port: the link comes back with a new handshake
  peer.proc.kill('SIGKILL')
  await peer.proc.exited
  const again = await startPeer(peer.port)
  const second = (await next('connected')) as { link: object }
  expect(second.link).not.toBe(first.link)
  expect(await echo()).toBe('hello')

  // killed outright, the socket closes: unavailable at once, with the reason
  again.proc.kill('SIGKILL')
  const t1 = Date.now()
  expect(((await next('unavailable')) as { reason: string }).reason).toMatch(/E_PEER_CLOSED|E_PEER_UNAVAILABLE/)
  expect(Date.now() - t1).toBeLessThan(3 * PING_MS + 150)
  expect(states.map((s) => s.state)).toEqual(['connected', 'unavailable', 'connected', 'unavailable']) // one event per outage
  link.stop()
}, 30_000)
