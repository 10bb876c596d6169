/** Health decisions as a pure function of the clock: pings every interval, any traffic moves the deadline, and the
 * peer is dead exactly when it has been silent for `missedPings` intervals. */
import { describe, expect, test } from 'bun:test'
import { HealthState } from '../../src/link/health.ts'

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
})
