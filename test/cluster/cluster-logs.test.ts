/** `dbcluster cluster logs` against a real 2-node cluster: both nodes' lines through the head, prefixed by node, one
 * node's with --node, an unknown node refused; --follow prints the head's new lines as they come (a stage killed) and
 * ends with one line when the head goes away. GET /admin/logs refuses a malformed cursor. */
import { afterAll, expect, test } from 'bun:test'
import { startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli } from '../support/run-cli.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const clusters: LocalCluster[] = []
afterAll(async () => {
  for (const c of clusters) await c.stop()
})

test('cluster logs: every node’s lines through the head; --node; --follow until the head goes', async () => {
  const c = await startLocalCluster({
    nodes: 2,
    model: await synthModel('qwen3', 'q4'),
    apiPort: 0,
    self: [process.execPath, `${ROOT}src/main.ts`],
    extraArgs: ['--backend', 'cpu', '--threads', '1', '--max-context', '128', '--ping-interval', '0.3'],
    // as a user runs them: bun test's NODE_ENV=test would quiet consola's info lines, which are most of a log
    env: { NODE_ENV: 'production', NO_COLOR: '1' },
  })
  clusters.push(c)

  const home = mkdtempSync(join(tmpdir(), 'dbc-logs-'))
  const all = await runCli(['cluster', 'logs', '--url', c.url], home)
  expect(all.code, all.stderr).toBe(0)
  expect(all.stdout).toMatch(/^\[node-0\] \d\d:\d\d:\d\d\.\d{3} .*rank 0 of 2: layers \[/m)
  expect(all.stdout).toMatch(/^\[node-1\] \d\d:\d\d:\d\d\.\d{3} .*rank 1: layers \[/m)

  const one = await runCli(['cluster', 'logs', '--url', c.url, '--node', '1', '--lines', '5'], home)
  expect(one.code, one.stderr).toBe(0)
  const lines = one.stdout.trim().split('\n')
  expect(lines.length).toBeLessThanOrEqual(5)
  expect(lines.every((l) => l.startsWith('[node-1] '))).toBe(true)

  const unknown = await runCli(['cluster', 'logs', '--url', c.url, '--node', 'nope'], home)
  expect(unknown.code).toBe(2)
  expect(unknown.stderr).toContain("no node 'nope' in this cluster")
  expect(unknown.stderr).toContain('0 (node-0), 1 (node-1)')

  const bad = await fetch(`${c.url}/admin/logs?after=zero`)
  expect(bad.status).toBe(400)
  expect((await bad.json()).error).toMatchObject({ code: 'invalid_value', param: 'after' })

  // --follow: the lines the head writes when its stage dies arrive; the head stopping ends the command
  const follow = Bun.spawn(
    [
      process.execPath,
      'src/main.ts',
      'cluster',
      'logs',
      '--url',
      c.url,
      '--follow',
      '--interval',
      '0.2',
      '--lines',
      '1',
    ],
    { cwd: ROOT, stdout: 'pipe', stderr: 'pipe', env: { ...process.env, NODE_ENV: 'production', NO_COLOR: '1' } },
  )
  let out = ''
  const reading = (async () => {
    const decoder = new TextDecoder()
    const reader = follow.stdout.getReader()
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      out += decoder.decode(value)
    }
  })()
  await Bun.sleep(1000)
  const before = out.length
  await c.kill(1, 'SIGKILL')
  for (let i = 0; i < 100 && !/\[node-0\].*(degraded|lost|unreachable|closed)/i.test(out.slice(before)); i++)
    await Bun.sleep(100)
  expect(out.slice(before)).toMatch(/\[node-0\].*(degraded|lost|unreachable|closed)/i)
  await c.kill(0, 'SIGTERM')
  expect(await follow.exited).toBe(0)
  await reading
  expect(out + (await new Response(follow.stderr).text())).toContain('has gone; no more lines')
}, 120_000)
