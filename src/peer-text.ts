/** What a peer says reaches our log only escaped and cut short, and a refusal repeated by the same address is logged once
 * per window with a count: a stranger must not forge log lines (newlines, ANSI escapes), flood the log, or have an
 * 8 MiB message echoed. */

/** Longest peer-provided text kept in a message, in characters. */
export const PEER_TEXT_CHARS = 200

/** Control characters (newlines, ESC, DEL, C1) escaped as \n, \x1b, \u009b…; the rest cut at `max` characters. */
export function peerText(text: string, max = PEER_TEXT_CHARS): string {
  const cut = text.length > max ? text.slice(0, max) : text
  const escaped = cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    if (c === '\n') return '\\n'
    if (c === '\r') return '\\r'
    if (c === '\t') return '\\t'
    const code = c.charCodeAt(0)
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
  })
  return text.length > max ? `${escaped}… (${text.length - max} more characters)` : escaped
}

/** Logs a line per key at most once per window; lines held back are counted and the count rides on the next one. */
export class RateLimitedLog {
  readonly #last = new Map<string, { at: number; held: number }>()

  constructor(
    readonly write: (line: string) => void,
    readonly windowMs = 10_000,
    readonly now: () => number = Date.now,
  ) {}

  /** Writes the line unless the same key was written within the window; returns whether it was written. */
  line(key: string, line: string): boolean {
    const t = this.now()
    const seen = this.#last.get(key)
    if (seen && t - seen.at < this.windowMs) {
      seen.held++
      return false
    }
    const held = seen?.held ?? 0
    this.#last.set(key, { at: t, held: 0 })
    if (this.#last.size > 1000) this.#forgetOld(t)
    this.write(held ? `${line} (and ${held} more like it since the last such line)` : line)
    return true
  }

  #forgetOld(t: number): void {
    for (const [key, v] of this.#last) if (t - v.at >= this.windowMs) this.#last.delete(key)
  }
}
