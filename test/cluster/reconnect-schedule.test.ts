/** The reconnect schedule the seeds give (ping 5 s, 3 missed → unavailable, reconnect after 10 s with a fresh
 * handshake), pinned: a lost link is retried at 100, 300 and 900 ms (a blip on the cable), then every backoff; `serve`
 * gives 2 ping intervals as the backoff, 10 s at its default 5 s. A frozen peer found unavailable within 3 intervals and
 * the fresh handshake on its return: test/link/two-process.test.ts. */
import { afterAll, expect, test } from 'bun:test'
import { consola } from 'consola'
import { reconnectBackoffMs, SERVE_ARGS } from '../../src/cli/serve-args.ts'
import { DEFAULT_HEALTH } from '../../src/link/health.ts'
import { QUICK_RETRIES_MS, ReconnectingLink } from '../../src/link/reconnecting-link.ts'
import { pins, testIdentity } from '../support/identities.ts'

consola.level = 1
const stops: (() => void)[] = []
afterAll(() => stops.forEach((s) => s()))

test('the defaults are the seeds’: a ping every 5 s, 3 missed → unavailable, then a reconnect every 10 s', () => {
  expect(SERVE_ARGS['ping-interval'].default).toBe('5')
  expect(DEFAULT_HEALTH).toEqual({ intervalMs: 5000, missedPings: 3 })
  expect(reconnectBackoffMs(5000)).toBe(10_000)
  expect(reconnectBackoffMs(100)).toBe(500) // a test's short interval still leaves the peer half a second
  expect([...QUICK_RETRIES_MS]).toEqual([100, 300, 900])
})

test('a peer that refuses every handshake is tried at 100, 300 and 900 ms, then every backoff', async () => {
  // a port that takes each connection and drops it at once: every attempt fails its handshake
  const attempts: number[] = []
  const server = Bun.listen({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(s) {
        attempts.push(performance.now())
        s.end()
      },
      data() {},
    },
  })
  stops.push(() => server.stop(true))
  const backoffMs = 1200
  const link = new ReconnectingLink('127.0.0.1', server.port, {
    identity: testIdentity(1),
    serial: 'alice',
    clusterId: 'c',
    authorize: pins({ bob: testIdentity(2) }),
    pingIntervalMs: 200,
    backoffMs,
  })
  stops.push(() => link.stop())
  link.start()
  while (attempts.length < 6) await Bun.sleep(20)
  link.stop()
  const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
  // each wait is the schedule's, plus the few ms an attempt takes to fail (more on a loaded machine)
  const want = [100, 300, 900, backoffMs, backoffMs]
  gaps.forEach((gap, i) => {
    expect(gap).toBeGreaterThanOrEqual(want[i]! - 5)
    expect(gap).toBeLessThan(want[i]! + 250)
  })
}, 30_000)
