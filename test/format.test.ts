/** The formatter's word on every TypeScript file: the configured style and line width (.prettierrc) hold in src/ and
 * test/, so a long line is caught here rather than in review. `npm run format` rewrites what this refuses. */
import { expect, test } from 'bun:test'

const ROOT = new URL('..', import.meta.url).pathname

test('prettier --check passes on src/ and test/', () => {
  const r = Bun.spawnSync([`${ROOT}node_modules/.bin/prettier`, '--check', 'src/**/*.ts', 'test/**/*.ts'], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const unformatted = (r.stdout.toString() + r.stderr.toString())
    .split('\n')
    .filter((l) => l.startsWith('[warn] ') && !l.includes('Code style issues'))
  expect(unformatted).toEqual([])
  expect(r.exitCode).toBe(0)
}, 60_000)
