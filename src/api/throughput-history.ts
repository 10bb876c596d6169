/** Tokens generated per second over the last minutes, for the dashboard: the head's generated-token counter sampled
 * into a fixed ring of samples at least `intervalMs` apart (serve-api.ts samples it on a timer; a dashboard snapshot
 * samples it too, so an app without the timer still has a history). */

export interface ThroughputPoint {
  /** When the interval ended (ms since the epoch). */
  at: number
  /** Tokens generated in the interval ending at `at`, and per second. */
  tokens: number
  tokens_per_s: number
}

export class ThroughputHistory {
  readonly #at: Float64Array
  readonly #total: Float64Array
  #next = 0
  #count = 0

  /** Keeps `points` intervals (the default: 10 minutes of 5-second intervals). */
  constructor(
    readonly intervalMs = 5000,
    readonly points = 120,
  ) {
    // one sample more than points: each point is the difference of two samples
    this.#at = new Float64Array(points + 1)
    this.#total = new Float64Array(points + 1)
  }

  /** Records the counter's value `total` at time `at`, unless the last sample is less than an interval old. */
  observe(at: number, total: number): void {
    if (this.#count && at - this.#at[this.#last()]! < this.intervalMs) return
    this.#at[this.#next] = at
    this.#total[this.#next] = total
    this.#next = (this.#next + 1) % this.#at.length
    this.#count = Math.min(this.#count + 1, this.#at.length)
  }

  /** The rates between consecutive samples, oldest first. */
  series(): ThroughputPoint[] {
    const size = this.#at.length
    const first = (this.#next - this.#count + size) % size
    const out: ThroughputPoint[] = []
    for (let i = 1; i < this.#count; i++) {
      const a = (first + i - 1) % size
      const b = (first + i) % size
      const tokens = Math.max(0, this.#total[b]! - this.#total[a]!)
      out.push({ at: this.#at[b]!, tokens, tokens_per_s: tokens / ((this.#at[b]! - this.#at[a]!) / 1000) })
    }
    return out
  }

  #last(): number {
    return (this.#next - 1 + this.#at.length) % this.#at.length
  }
}
