/** Health decisions as a pure function of the clock: pings every interval, any traffic moves the deadline, and the
 * peer is dead exactly when it has been silent for `missedPings` intervals. */
import { describe, expect, test } from 'bun:test'
import { HealthState, Heartbeat } from '../../src/link/health.ts'

describe('HealthState', () => {
  test('pings every interval and declares a silent peer dead at exactly 3 intervals', () => {
    const h = new HealthState({ intervalMs: 100, missedPings: 3 }, 1000)
    expect(h.tick(1050)).toEqual({ action: 'wait', wakeAt: 1100 })
    expect(h.tick(1100)).toEqual({ action: 'ping', wakeAt: 1200 })
    expect(h.tick(1150)).toEqual({ action: 'wait', wakeAt: 1200 })
    expect(h.tick(1200)).toEqual({ action: 'ping', wakeAt: 1300 })
    expect(h.tick(1299)).toEqual({ action: 'wait', wakeAt: 1300 })
    expect(h.tick(1300)).toEqual({ action: 'dead', silentMs: 300 })
  })

  test('any traffic from the peer moves the deadline; a late timer catches up with one ping', () => {
    const h = new HealthState({ intervalMs: 100, missedPings: 3 }, 0)
    h.heard(250)
    expect(h.deadline).toBe(550)
    expect(h.tick(300)).toEqual({ action: 'ping', wakeAt: 400 })
    h.heard(200) // an older timestamp never moves the deadline back
    expect(h.deadline).toBe(550)
    expect(h.tick(530)).toEqual({ action: 'ping', wakeAt: 550 }) // the 400 and 500 pings collapse into one
    expect(h.tick(549)).toEqual({ action: 'wait', wakeAt: 550 })
    expect(h.tick(550)).toEqual({ action: 'dead', silentMs: 300 })
  })

  test('missedPings and interval are honoured as configured', () => {
    const h = new HealthState({ intervalMs: 5000, missedPings: 2 }, 0)
    expect(h.tick(5000).action).toBe('ping')
    expect(h.tick(9999).action).toBe('wait')
    expect(h.tick(10_000)).toEqual({ action: 'dead', silentMs: 10_000 })
  })

  test('a stall of this process is not the peer’s silence: a fresh window and a ping at once', () => {
    const h = new HealthState({ intervalMs: 100, missedPings: 3 }, 0)
    // busy for 2 s: without the stall, tick(2000) would declare the peer dead
    h.stalled(2000)
    expect(h.tick(2000)).toEqual({ action: 'ping', wakeAt: 2100 })
    expect(h.deadline).toBe(2300)
    expect(h.tick(2300)).toEqual({ action: 'dead', silentMs: 300 })
  })
})

describe('Heartbeat', () => {
  test('a timer that fires over an interval late (this event loop was blocked) pings instead of declaring the peer dead', async () => {
    let clock = 0
    const events: string[] = []
    const hb = new Heartbeat(
      { intervalMs: 20, missedPings: 3 },
      () => events.push(`ping@${clock}`),
      (ms) => events.push(`dead after ${ms}`),
      () => clock,
    )
    // the process blocks for 1 s before the first timer can run
    clock = 1000
    await Bun.sleep(40)
    expect(events[0]).toBe('ping@1000')
    expect(events.some((e) => e.startsWith('dead'))).toBe(false)
    hb.stop()
  })
})
