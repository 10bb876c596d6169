/** `dbcluster generate` end to end on a synthetic model: JSON output, greedy determinism, seeded sampling, usage errors. */
import { describe, expect, test } from 'bun:test'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname

function cli(...args: string[]) {
  const r = Bun.spawnSync([process.execPath, 'src/main.ts', ...args], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() }
}

describe('dbcluster generate', async () => {
  const dir = await synthModel('qwen3', 'bf16')

  test('--json reports text, tokens and speeds; greedy output repeats exactly', () => {
    const args = ['generate', '--model', dir, '--chat', 'Hello', '--max-tokens', '12', '--json', '--backend', 'cpu']
    const a = cli(...args)
    expect(a.code, a.err).toBe(0)
    const result = JSON.parse(a.out)
    expect(result.completion_tokens).toBe(12)
    expect(result.tokens).toHaveLength(12)
    expect(result.prompt_tokens).toBeGreaterThan(5)
    expect(result.finish_reason).toBe('length')
    expect(result.decode_tps).toBeGreaterThan(0)
    expect(typeof result.text).toBe('string')
    expect(JSON.parse(cli(...args).out).tokens).toEqual(result.tokens)
  })

  test('the same seed samples the same tokens', () => {
    const run = (seed: string) =>
      JSON.parse(
        cli(
          'generate',
          '--model',
          dir,
          '--prompt',
          'Once',
          '--max-tokens',
          '10',
          '--temperature',
          '1',
          '--seed',
          seed,
          '--json',
          '--backend',
          'cpu',
        ).out,
      ).tokens
    expect(run('4')).toEqual(run('4'))
    expect(run('4')).not.toEqual(run('5'))
  })

  test('usage errors exit 2 with one line', () => {
    const r = cli('generate', '--model', dir, '--prompt', 'a', '--chat', 'b')
    expect(r.code).toBe(2)
    expect(r.err).toContain('exactly one of --prompt, --chat or --messages')
    const bad = cli('generate', '--model', '/nonexistent', '--prompt', 'a', '--backend', 'cpu')
    expect(bad.code).toBe(1)
    expect(bad.err).toContain('config.json not found')
  })
})
