/** Link health (docs/protocol.md §Health): a peer is alive while bytes keep arriving from it; a ping every interval
 * keeps an idle link talking, and silence for `missedPings` intervals marks the peer unavailable. The decision is a pure
 * function of the clock (`HealthState.tick`); `Heartbeat` drives it with one timer. */

export interface HealthOptions {
  /** Ping period in ms (default 5000). */
  intervalMs: number
  /** Intervals of silence after which the peer is unavailable (default 3). */
  missedPings: number
}

export const DEFAULT_HEALTH: HealthOptions = { intervalMs: 5000, missedPings: 3 }

export type HealthAction =
  { action: 'ping'; wakeAt: number } | { action: 'wait'; wakeAt: number } | { action: 'dead'; silentMs: number }

/** Pure: when to ping, when to give up. `heard` moves the deadline; `tick` says what is due at `now`. */
export class HealthState {
  #lastHeard: number
  #nextPing: number
  constructor(
    readonly options: HealthOptions,
    now: number,
  ) {
    this.#lastHeard = now
    this.#nextPing = now + options.intervalMs
  }

  get deadline(): number {
    return this.#lastHeard + this.options.intervalMs * this.options.missedPings
  }

  heard(now: number): void {
    if (now > this.#lastHeard) this.#lastHeard = now
  }

  /** This node itself stalled (its event loop was busy, e.g. a long compute step) until `now`: bytes the peer sent
   * meanwhile are still unread, so its silence is not evidence. Start a fresh window and ping at once. */
  stalled(now: number): void {
    this.heard(now)
    this.#nextPing = now
  }

  tick(now: number): HealthAction {
    if (now >= this.deadline) return { action: 'dead', silentMs: now - this.#lastHeard }
    if (now >= this.#nextPing) {
      while (this.#nextPing <= now) this.#nextPing += this.options.intervalMs
      return { action: 'ping', wakeAt: Math.min(this.#nextPing, this.deadline) }
    }
    return { action: 'wait', wakeAt: Math.min(this.#nextPing, this.deadline) }
  }
}

/** Drives a HealthState with a single timer: calls `ping` when one is due and `dead` once when the peer fell silent. */
export class Heartbeat {
  readonly #state: HealthState
  #timer: ReturnType<typeof setTimeout> | null = null
  #stopped = false
  #expectedAt = 0

  constructor(
    readonly options: HealthOptions,
    private readonly ping: () => void,
    private readonly dead: (silentMs: number) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.#state = new HealthState(options, now())
    this.#schedule(this.#state.tick(now()))
  }

  /** Call on every chunk received from the peer: any traffic proves it is alive (`now`: the caller's reading of this
   * heartbeat's clock, when it has just taken one). */
  heard(now = this.now()): void {
    this.#state.heard(now)
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
  }

  #schedule(next: HealthAction): void {
    if (this.#stopped) return
    if (next.action === 'dead') {
      this.stop()
      return this.dead(next.silentMs)
    }
    if (next.action === 'ping') {
      this.ping()
      if (this.#stopped) return // the ping found the link closed
    }
    this.#expectedAt = Math.max(next.wakeAt, this.now() + 1)
    this.#timer = setTimeout(() => {
      const now = this.now()
      // woken over an interval late: this process was busy, not the peer silent (see HealthState.stalled)
      if (now - this.#expectedAt > this.options.intervalMs) this.#state.stalled(now)
      this.#schedule(this.#state.tick(now))
    }, this.#expectedAt - this.now())
  }
}
