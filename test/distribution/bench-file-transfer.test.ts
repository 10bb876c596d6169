/** `dbcluster bench link`'s file-transfer row: a small shard moved over the sealed link (the shard-transfer protocol)
 * and over raw TCP in the same run, both received to disk. */
import { afterAll, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readSafetensorsHeader } from '../../src/model/safetensors.ts'
import { writeBenchShard } from '../../src/bench/link.ts'

/** Every folder this file makes lives under one scratch folder, removed at the end. */
const scratch = mkdtempSync(join(tmpdir(), 'dbc-dist-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const ROOT = new URL('../..', import.meta.url).pathname

test('the bench shard is a valid safetensors file of the asked size', () => {
  const dir = mkdtempSync(join(scratch, 'dbc-shard-'))
  writeBenchShard(dir, 3 * 1024 * 1024)
  const size = statSync(join(dir, 'model.safetensors')).size
  expect(Math.abs(size - 3 * 1024 * 1024)).toBeLessThan(128)
  const { entries } = readSafetensorsHeader(join(dir, 'model.safetensors'))
  expect(entries.map((e) => [e.name, e.end])).toEqual([['model.layers.0.weight', size]])
})

test('bench link --file-size: sealed and raw GB/s of the same shard in one run', async () => {
  const proc = Bun.spawn(
    [
      process.execPath,
      'src/main.ts',
      'bench',
      'link',
      '--json',
      '--sizes',
      '4K',
      '--rounds',
      '3',
      '--aead-sizes',
      '4K',
      '--file-size',
      '8M',
    ],
    { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' },
  )
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  expect(err).not.toContain('ERROR')
  expect(code).toBe(0)
  const f = JSON.parse(out).file_transfer as {
    bytes: number
    sealed_seconds: number
    plain_seconds: number
    sealed_gbps: number
    plain_gbps: number
    ratio: number
  }
  // the shard plus its config.json came over the sealed link
  expect(f.bytes).toBeGreaterThan(8 * 1024 * 1024 - 128)
  expect(f.bytes).toBeLessThan(8 * 1024 * 1024 + 200)
  expect(f.sealed_gbps).toBeCloseTo(f.bytes / f.sealed_seconds / 1e9, 1)
  expect(f.plain_gbps).toBeGreaterThan(0)
  expect(f.ratio).toBeCloseTo(f.plain_gbps / f.sealed_gbps, 0)
}, 60_000)
