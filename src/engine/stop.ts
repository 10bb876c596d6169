/** Stop strings over streamed text: emits text as soon as it cannot be the start of a stop string, and cuts at a match. */
export class StopMatcher {
  #pending = ''
  #stopped = false

  constructor(private readonly stops: readonly string[]) {}

  get stopped(): boolean {
    return this.#stopped
  }

  /** Feeds new text; returns the text safe to emit now. After a match, returns the text before it and sets `stopped`. */
  push(text: string): string {
    if (this.#stopped) return ''
    this.#pending += text
    let cut = -1
    for (const s of this.stops) {
      const at = this.#pending.indexOf(s)
      if (s && at >= 0 && (cut < 0 || at < cut)) cut = at
    }
    if (cut >= 0) {
      this.#stopped = true
      const out = this.#pending.slice(0, cut)
      this.#pending = ''
      return out
    }
    // hold back the longest suffix that begins some stop string
    let hold = 0
    for (const s of this.stops)
      for (let n = Math.min(s.length - 1, this.#pending.length); n > hold; n--) {
        if (s.startsWith(this.#pending.slice(this.#pending.length - n))) {
          hold = n
          break
        }
      }
    const out = this.#pending.slice(0, this.#pending.length - hold)
    this.#pending = this.#pending.slice(this.#pending.length - hold)
    return out
  }

  flush(): string {
    const out = this.#stopped ? '' : this.#pending
    this.#pending = ''
    return out
  }
}
