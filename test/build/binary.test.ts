/** The single binary: built with `bun build --compile`, it carries the runtime and the shim and runs from any directory. */
import { expect, test } from 'bun:test'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkg from '../../package.json' with { type: 'json' }
import { expectKernelsRun, runBinary } from '../support/run-binary.ts'

const ROOT = new URL('../..', import.meta.url).pathname

test('dist binary runs --version, a shim kernel and `serve` from another directory with nothing beside it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-binary-'))
  try {
    const out = join(dir, 'dbcluster')
    const build = Bun.spawnSync(['bash', 'scripts/build-binary.sh', out], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
    expect(build.exitCode, build.stderr.toString()).toBe(0)
    expect(statSync(out).size).toBeGreaterThan(10_000_000)
    const elsewhere = mkdtempSync(join(tmpdir(), 'dbc-cwd-'))
    const version = runBinary(out, ['--version'], { cwd: elsewhere })
    expect(version.code).toBe(0)
    expect(version.stdout.trim()).toBe(pkg.version)
    expectKernelsRun(out, { cwd: elsewhere })
    // The README's main job from the binary alone: serve the demo model (created on first run) and answer a request.
    const serve = Bun.spawn([out, 'serve', '--port', '0', '--backend', 'cpu'], {
      cwd: elsewhere,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { PATH: '/usr/bin:/bin', DBCLUSTER_HOME: join(elsewhere, 'home') },
    })
    try {
      const reader = serve.stdout.getReader()
      let text = ''
      while (!/listening on (\S+)\n/.test(text)) {
        const { value, done } = await reader.read()
        if (done) throw new Error(`serve exited: ${await new Response(serve.stderr).text()}`)
        text += new TextDecoder().decode(value)
      }
      const url = /listening on (\S+)\n/.exec(text)![1]!
      const r = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        body: JSON.stringify({ prompt: 'Hi', max_tokens: 3, temperature: 0 }),
        headers: { 'content-type': 'application/json' },
      })
      const body = await r.json()
      expect(body.usage.completion_tokens).toBe(3)
      expect(body.choices[0].finish_reason).toBe('length')
    } finally {
      serve.kill('SIGTERM')
      await serve.exited
    }
    rmSync(elsewhere, { recursive: true })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 180_000)
