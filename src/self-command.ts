/** How to start this same program again: the compiled binary alone, or Bun plus the entry script when run from source. */
import { basename, join } from 'node:path'

/** True when running from source under Bun (the npm package's runtime may be named bun.exe even on Linux). */
export const runningFromSource = (): boolean => /^bun(\.exe)?$/.test(basename(process.execPath))

/** From source it is always src/main.ts, whichever script imported this (a test, a bench script): never that script. */
export function selfCommand(): string[] {
  return runningFromSource() ? [process.execPath, join(import.meta.dir, 'main.ts')] : [process.execPath]
}
