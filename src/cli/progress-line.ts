/** A live progress line on stderr: rewritten in place on a terminal; elsewhere (a log, CI) printed at most every few
 * seconds, so a long benchmark shows it is alive without flooding the log. */
import { consola } from 'consola'

export interface ProgressLine {
  update(text: string): void
  /** Ends the live line (the next output starts on a fresh line). */
  done(): void
}

export function progressLine(options: { enabled: boolean; tty?: boolean; intervalMs?: number }): ProgressLine {
  const tty = options.tty ?? Boolean(process.stderr.isTTY)
  const intervalMs = options.intervalMs ?? 3000
  let shown = false
  let lastPrinted = 0
  return {
    update(text) {
      if (!options.enabled) return
      if (tty) {
        process.stderr.write(`\r\x1b[K${text}`)
        shown = true
      } else if (Date.now() - lastPrinted >= intervalMs) {
        consola.log(text)
        lastPrinted = Date.now()
      }
    },
    done() {
      if (shown) process.stderr.write('\r\x1b[K')
      shown = false
      lastPrinted = 0
    },
  }
}
