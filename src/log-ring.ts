/** This process's recent log lines, kept in a ring for `dbcluster cluster logs` (gathered through the head): every line
 * the process writes, numbered, so a follower asks only for what came after the last line it has. */

export interface LogLine {
  /** 1, 2, 3, … in the order printed. */
  seq: number
  /** Milliseconds since the epoch. */
  at: number
  /** Where it was written: 'out' (stdout) or 'err' (stderr, where consola's lines go). */
  stream: string
  text: string
}

/** Lines kept per process. */
export const LOG_LINES = 2000

export class LogRing {
  readonly #lines: LogLine[] = []
  #seq = 0

  constructor(readonly capacity = LOG_LINES) {}

  push(stream: string, text: string, at = Date.now()): void {
    this.#lines.push({ seq: ++this.#seq, at, stream, text })
    if (this.#lines.length > this.capacity) this.#lines.shift()
  }

  /** The lines after `seq` (at most the last `limit` of them), and the seq to ask from next time. */
  since(seq: number, limit = this.capacity): { lines: LogLine[]; next: number } {
    const after = this.#lines.filter((l) => l.seq > seq)
    return { lines: after.slice(Math.max(0, after.length - limit)), next: this.#seq }
  }
}

/** This process's log. */
export const processLog = new LogRing()

let capturing = false

// colours and cursor moves: what a terminal shows, not what a log keeps
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g

/** From now on every line this process writes to stdout or stderr (consola's and console's alike) is also kept in
 * processLog, without colours (once per process). */
export function captureLog(): void {
  if (capturing) return
  capturing = true
  for (const [name, stream] of [
    ['out', process.stdout],
    ['err', process.stderr],
  ] as const) {
    const write = stream.write.bind(stream) as (...args: unknown[]) => boolean
    let partial = ''
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8')
      const lines = (partial + text).split('\n')
      partial = lines.pop()!.slice(-4096)
      for (const line of lines) {
        const clean = line.replace(ANSI, '').trimEnd()
        if (clean) processLog.push(name, clean)
      }
      return write(chunk, ...rest)
    }) as typeof stream.write
  }
}
