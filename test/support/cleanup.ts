/** Preloaded by bunfig.toml: folders a test run writes for the whole run (synthetic models: a few GB) are removed once
 * every test file has run. (`bun test` fires no process 'exit' event, so a module cannot clean up after itself.) */
import { afterAll } from 'bun:test'
import { rmSync } from 'node:fs'

const roots = new Set<string>()

/** Removes `dir` when the run ends. */
export function removeAfterRun(dir: string): string {
  roots.add(dir)
  return dir
}

afterAll(() => {
  for (const dir of roots) rmSync(dir, { recursive: true, force: true })
})
