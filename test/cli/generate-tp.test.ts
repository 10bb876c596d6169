/** `dbcluster generate --tp 2`: two ranks started by hand meet by --peer, say that MLX's path is not encrypted, and
 * rank 0 prints the single process's greedy tokens while rank 1 replays its steps (over MLX ring on loopback; skipped, with the reason, without mlx-c). The
 * usage errors need no MLX. */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { probeMlxTransport } from '../../src/tensor-parallel/mlx-group.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const env = () => ({
  ...process.env,
  NODE_ENV: 'production',
  DBCLUSTER_HOME: mkdtempSync(join(tmpdir(), 'generate-tp-')),
})
const spawn = (args: string[]) =>
  Bun.spawn([process.execPath, 'src/main.ts', 'generate', ...args], {
    cwd: ROOT,
    env: env(),
    stdout: 'pipe',
    stderr: 'pipe',
  })

async function finish(p: ReturnType<typeof spawn>) {
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()])
  return { code: await p.exited, out, err }
}

describe('generate --tp', async () => {
  const dir = await synthModel('llama', 'bf16')
  const base = ['--model', dir, '--chat', 'Hello', '--max-tokens', '8', '--json']

  test('usage errors: the cpu backend, rank 0 without a prompt, a rank outside the group', async () => {
    const cpu = await finish(spawn([...base, '--tp', '2', '--backend', 'cpu']))
    expect(cpu.code).toBe(2)
    expect(cpu.err).toContain('--tp runs over MLX distributed and needs the mlx backend')
    const noPrompt = await finish(spawn(['--model', dir, '--tp', '2', '--rank', '0']))
    expect(noPrompt.code).toBe(2)
    expect(noPrompt.err).toContain('give exactly one of --prompt, --chat or --messages')
    const rank = await finish(spawn([...base, '--tp', '2', '--rank', '2']))
    expect(rank.code).toBe(2)
    expect(rank.err).toContain('--rank 2 is not in 0..1')
  }, 30_000)

  const ring = probeMlxTransport('ring')
  test.skipIf(!ring.available)(
    `rank 0 over ring prints the single process's tokens, rank 1 (no prompt) replays its steps${ring.available ? '' : ` (skipped: ${ring.reason})`}`,
    async () => {
      const single = await finish(spawn([...base, '--backend', 'mlx']))
      expect(single.code, single.err).toBe(0)
      const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
      const port = l.port
      l.stop(true)
      const tp = ['--backend', 'mlx', '--tp', '2', '--transport', 'ring']
      const r0 = spawn([...base, ...tp, '--rank', '0', '--listen', `127.0.0.1:${port}`])
      const r1 = spawn(['--model', dir, '--json', ...tp, '--rank', '1', '--peer', `127.0.0.1:${port}`])
      const [a, b] = await Promise.all([finish(r0), finish(r1)])
      expect(a.code, a.err).toBe(0)
      expect(b.code, b.err).toBe(0)
      const want = JSON.parse(single.out).tokens
      expect(want).toHaveLength(8)
      expect(JSON.parse(a.out).tokens).toEqual(want)
      // a prefill and one step per token after the first
      expect(JSON.parse(b.out)).toEqual({ rank: 1, followed_steps: 8 })
      for (const r of [a, b]) {
        expect(r.err).toContain('NOT encrypted')
        expect(r.err).toContain('MLX ring: hostfile [["127.0.0.1:')
      }
    },
    120_000,
  )
})
