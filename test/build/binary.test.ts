/** The single binary: built with `bun build --compile`, it carries the runtime and the shim and runs from any directory. */
import { expect, test } from 'bun:test'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkg from '../../package.json' with { type: 'json' }

const ROOT = new URL('../..', import.meta.url).pathname

test('dist binary runs --version, a shim kernel and `serve` from another directory with nothing beside it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-binary-'))
  try {
    const out = join(dir, 'dbcluster')
    const build = Bun.spawnSync(['bash', 'scripts/build-binary.sh', out], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
    expect(build.exitCode, build.stderr.toString()).toBe(0)
    expect(statSync(out).size).toBeGreaterThan(10_000_000)
    const elsewhere = mkdtempSync(join(tmpdir(), 'dbc-cwd-'))
    const version = Bun.spawnSync([out, '--version'], { cwd: elsewhere, stdout: 'pipe', env: { PATH: '/usr/bin:/bin' } })
    expect(version.exitCode).toBe(0)
    expect(version.stdout.toString().trim()).toBe(pkg.version)
    // One small kernel run proves the embedded shim loads: JSON with a real bandwidth figure.
    const bench = Bun.spawnSync([out, 'bench', 'kernels', '--json', '--dtypes', 'q4', '--batches', '1', '--shapes', '256x256'], {
      cwd: elsewhere,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { PATH: '/usr/bin:/bin' },
    })
    expect(bench.exitCode, bench.stderr.toString()).toBe(0)
    const result = JSON.parse(bench.stdout.toString())
    expect(result.memory_read_gbps).toBeGreaterThan(0.5)
    expect(result.gemv[0]).toMatchObject({ dtype: 'q4', rows: 256, cols: 256, batch: 1 })
    expect(result.gemv[0].gbps).toBeGreaterThan(0)
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
      while (!/listening on (\S+)/.test(text)) {
        const { value, done } = await reader.read()
        if (done) throw new Error(`serve exited: ${await new Response(serve.stderr).text()}`)
        text += new TextDecoder().decode(value)
      }
      const url = /listening on (\S+)/.exec(text)![1]!
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Hi', max_tokens: 3, temperature: 0 }), headers: { 'content-type': 'application/json' } })
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
