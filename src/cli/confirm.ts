/** A y/N question on the terminal before a trust decision; no terminal means no answer, so the caller must have been
 * told yes by a flag. */
import { createInterface } from 'node:readline/promises'
import { UsageError } from '../errors.ts'

/** Resolves true only on y/yes typed at a terminal (or when `yes` was passed); refuses without a terminal. */
export async function confirm(question: string, options: { yes: boolean; flag: string }): Promise<boolean> {
  if (options.yes) return true
  if (!process.stdin.isTTY)
    throw new UsageError(
      `no terminal to confirm on: ${question}`,
      `compare the fingerprint out of band, then pass ${options.flag}`,
    )
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim())
  } finally {
    rl.close()
  }
}
