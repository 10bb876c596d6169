/** `dbcluster serve --tp 2`: rank 0 serves the API over its shard while rank 1 replays its steps (MLX ring on loopback;
 * skipped, with the reason, without mlx-c): the API's greedy answer equals one MLX process's, and stopping rank 0 ends
 * rank 1. Usage errors need no MLX. The sealed transport (any backend): test/cluster/tensor-parallel.test.ts. */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { probeMlxTransport } from '../../src/tensor-parallel/mlx-group.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const env = () => ({ ...process.env, NODE_ENV: 'production', DBCLUSTER_HOME: mkdtempSync(join(tmpdir(), 'serve-tp-')) })
const spawn = (args: string[]) =>
  Bun.spawn([process.execPath, 'src/main.ts', ...args], { cwd: ROOT, env: env(), stdout: 'pipe', stderr: 'pipe' })

describe('serve --tp', async () => {
  const dir = await synthModel('qwen3', 'bf16')

  test('usage errors: an MLX transport on the cpu backend, an unknown transport, combined with --peers', async () => {
    const run = async (args: string[]) => {
      const p = spawn(['serve', '--model', dir, '--port', '0', ...args])
      return { code: await p.exited, err: await new Response(p.stderr).text() }
    }
    const cpu = await run(['--tp', '2', '--backend', 'cpu', '--tp-transport', 'ring'])
    expect(cpu.code).toBe(2)
    expect(cpu.err).toContain('--tp-transport ring runs over MLX distributed and needs the mlx backend')
    const unknown = await run(['--tp', '2', '--tp-transport', 'carrier-pigeon'])
    expect(unknown.code).toBe(2)
    expect(unknown.err).toContain("unknown --tp-transport 'carrier-pigeon'")
    const pp = await run(['--tp', '2', '--peers', '127.0.0.1:1,127.0.0.1:2'])
    expect(pp.code).toBe(2)
    expect(pp.err).toContain('cannot be combined with a pipeline cluster')
  }, 30_000)

  const ring = probeMlxTransport('ring')
  test.skipIf(!ring.available)(
    `rank 0 serves the single process's greedy answer; stopping it ends rank 1${ring.available ? '' : ` (skipped: ${ring.reason})`}`,
    async () => {
      const alone = Bun.spawnSync(
        [
          process.execPath,
          'src/main.ts',
          'generate',
          '--model',
          dir,
          '--prompt',
          'Hello, world',
          '--max-tokens',
          '6',
          '--json',
          '--backend',
          'mlx',
        ],
        { cwd: ROOT, stdout: 'pipe' },
      )
      const want = JSON.parse(alone.stdout.toString()).text
      const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
      const port = l.port
      l.stop(true)
      const tp = ['--backend', 'mlx', '--tp', '2', '--tp-transport', 'ring', '--max-context', '128', '--model-id', 'x']
      const r0 = spawn([
        'serve',
        '--model',
        dir,
        '--port',
        '0',
        ...tp,
        '--tp-rank',
        '0',
        '--tp-listen',
        `127.0.0.1:${port}`,
      ])
      const r1 = spawn(['serve', '--model', dir, ...tp, '--tp-rank', '1', '--tp-peer', `127.0.0.1:${port}`])
      try {
        const reader = r0.stdout.getReader()
        let text = ''
        while (!/listening on (\S+)\n/.test(text)) {
          const { value, done } = await reader.read()
          if (done) throw new Error(`rank 0 exited: ${text} ${await new Response(r0.stderr).text()}`)
          text += new TextDecoder().decode(value)
        }
        const url = /listening on (\S+)\n/.exec(text)![1]!
        const r = await fetch(`${url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'x', prompt: 'Hello, world', max_tokens: 6, temperature: 0 }),
        })
        expect(r.status).toBe(200)
        expect((await r.json()).choices[0].text).toBe(want)
        // the group's MLX backend, which the dashboard's transport line and RDMA banner read
        const health = await (await fetch(`${url}/health`)).json()
        expect(health.tensor_parallel.transport).toBe('ring')
        r0.kill('SIGTERM')
        expect(await r0.exited).toBe(0)
        expect(await r1.exited).toBe(0)
        const err1 = await new Response(r1.stderr).text()
        expect(err1 + (await new Response(r1.stdout).text())).toMatch(/rank 0 stopped after \d+ steps/)
        expect(err1).toContain('NOT encrypted')
      } finally {
        // SIGKILL: a follower blocked inside MLX's all_sum cannot run a signal handler
        r0.kill('SIGKILL')
        r1.kill('SIGKILL')
      }
    },
    120_000,
  )

  test.skipIf(!ring.available)(
    `a rank that dies ends the others with one clear line (exit 75), never a hang${ring.available ? '' : ` (skipped: ${ring.reason})`}`,
    async () => {
      for (const victim of [0, 1]) {
        const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
        const port = l.port
        l.stop(true)
        const tp = [
          '--backend',
          'mlx',
          '--tp',
          '2',
          '--tp-transport',
          'ring',
          '--max-context',
          '128',
          '--model-id',
          'x',
        ]
        const ranks = [
          spawn(['serve', '--model', dir, '--port', '0', ...tp, '--tp-rank', '0', '--tp-listen', `127.0.0.1:${port}`]),
          spawn(['serve', '--model', dir, ...tp, '--tp-rank', '1', '--tp-peer', `127.0.0.1:${port}`]),
        ]
        try {
          // both ranks are up once rank 0 listens (rank 1 is in its follow loop by then)
          const reader = ranks[0]!.stdout.getReader()
          let text = ''
          while (!/listening on (\S+)\n/.test(text)) {
            const { value, done } = await reader.read()
            if (done) throw new Error(`rank 0 exited: ${text}`)
            text += new TextDecoder().decode(value)
          }
          ranks[victim]!.kill('SIGKILL')
          const survivor = ranks[1 - victim]!
          const started = Date.now()
          expect(await survivor.exited).toBe(75)
          expect(Date.now() - started).toBeLessThan(15_000)
          expect(await new Response(survivor.stderr).text()).toContain(
            `another rank of the group went away (its process ended); rank ${1 - victim} stops`,
          )
        } finally {
          ranks.forEach((r) => r.kill('SIGKILL'))
        }
      }
    },
    120_000,
  )
})
