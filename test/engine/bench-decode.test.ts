/** `dbcluster bench decode --json` on a tiny synthetic model: one JSON object with decode_tps, prefill_tps and
 * roofline_ratio per batch size, and a roofline that agrees with its own parts. */
import { describe, expect, test } from 'bun:test'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname

describe('bench decode', () => {
  test('--json reports each batch size; roofline = bytes per step × steps/s ÷ measured bandwidth', async () => {
    const dir = await synthModel('qwen3', 'q4')
    const { NODE_ENV: _, TEST: __, ...env } = process.env // consola would otherwise be silent: prove stdout stays JSON
    const r = Bun.spawnSync(
      [
        process.execPath,
        'src/main.ts',
        'bench',
        'decode',
        '--model',
        dir,
        '--backend',
        'cpu',
        '--batch',
        '1,3',
        '--prompt-tokens',
        '8',
        '--steps',
        '4',
        '--json',
      ],
      { cwd: ROOT, env, stdout: 'pipe', stderr: 'pipe' },
    )
    expect(r.exitCode, r.stderr.toString()).toBe(0)
    const result = JSON.parse(r.stdout.toString())
    expect(result.results.map((x: { batch: number }) => x.batch)).toEqual([1, 3])
    expect(result.kv_dtype).toBe('f16') // the cpu backend's
    expect(result.memory_read_gbps).toBeGreaterThan(0.5)
    // the tied 151,936 × 64 q4 embedding is the lm_head here, so it counts: packed words + bf16 scales and biases
    expect(result.weight_bytes_per_step).toBeGreaterThan(151936 * 64 * (0.5 + 4 / 32))
    for (const row of result.results) {
      expect(row.decode_tps).toBeGreaterThan(0)
      expect(row.prefill_tps).toBeGreaterThan(0)
      const steps = row.decode_tps / row.batch
      expect(row.roofline_ratio).toBeCloseTo((result.weight_bytes_per_step * steps) / 1e9 / result.memory_read_gbps, 1)
      expect(row.step_ms_p50).toBeCloseTo(1000 / steps, 0)
    }
    const bad = Bun.spawnSync([process.execPath, 'src/main.ts', 'bench', 'decode', '--model', dir, '--batch', '1,x'], {
      cwd: ROOT,
      stderr: 'pipe',
    })
    expect(bad.exitCode).toBe(2)
    expect(bad.stderr.toString()).toContain("bad --batch '1,x'")
    const f32 = Bun.spawnSync(
      [
        process.execPath,
        'src/main.ts',
        'bench',
        'decode',
        '--model',
        dir,
        '--backend',
        'cpu',
        '--batch',
        '2',
        '--prompt-tokens',
        '8',
        '--steps',
        '2',
        '--kv-dtype',
        'f32',
        '--json',
      ],
      { cwd: ROOT, env, stdout: 'pipe', stderr: 'pipe' },
    )
    expect(f32.exitCode, f32.stderr.toString()).toBe(0)
    expect(JSON.parse(f32.stdout.toString()).kv_dtype).toBe('f32')
    const badKv = Bun.spawnSync(
      [process.execPath, 'src/main.ts', 'bench', 'decode', '--model', dir, '--kv-dtype', 'int8'],
      { cwd: ROOT, stderr: 'pipe' },
    )
    expect(badKv.exitCode).toBe(2)
    expect(badKv.stderr.toString()).toContain("unknown --kv-dtype 'int8'")
  }, 60_000)
})
