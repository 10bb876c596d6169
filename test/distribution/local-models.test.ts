/** `model list`: models in the hub cache and in folders, their size, architecture, quantization and completeness; damage
 * that keeps sizes (a flipped byte) only shows with --verify. */
import { afterAll, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pullModel } from '../../src/distribution/hub-pull.ts'
import { describeModel, listLocalModels } from '../../src/distribution/local-models.ts'
import { listModelFiles } from '../../src/distribution/manifest.ts'
import { serveFakeHub } from '../support/hub-server.ts'
import { copyOfModel, synthModel } from '../support/synth-models.ts'

/** Every folder this file makes lives under one scratch folder, removed at the end. */
const scratch = mkdtempSync(join(tmpdir(), 'dbc-dist-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const ROOT = new URL('../..', import.meta.url).pathname
const source = await synthModel('qwen3', 'q4', { shardBytes: 2_000_000 })
const hub = serveFakeHub(source, 'mlx-community/Tiny-4bit')
afterAll(() => hub.stop())
const sizeOf = (dir: string) => listModelFiles(dir).reduce((a, f) => a + statSync(join(dir, f)).size, 0)

test('lists hub-cache snapshots and folders with size, architecture, quantization and completeness', async () => {
  const cacheDir = mkdtempSync(join(scratch, 'dbc-list-'))
  await pullModel({ repo: 'mlx-community/Tiny-4bit', hub: { endpoint: hub.url }, cacheDir })
  const folder = copyOfModel(await synthModel('llama', 'bf16'))
  const models = listLocalModels({ cacheDir, dirs: [folder], verify: true })
  expect(models.map((m) => [m.name, m.revision, m.architecture, m.quantization, m.complete, m.verified])).toEqual([
    ['mlx-community/Tiny-4bit', 'main', 'qwen3', '4-bit g32', true, true],
    [folder.split('/').at(-1)!, null, 'llama', 'bf16', true, null], // no manifest recorded for a synthesized folder
  ])
  expect(models[0]!.bytes).toBe(sizeOf(source))
  expect(models[1]!.problems).toEqual([])
})

test('a missing, truncated or half-downloaded file makes a model incomplete, with the reason', async () => {
  const dir = mkdtempSync(join(scratch, 'dbc-list-'))
  await pullModel({ repo: 'mlx-community/Tiny-4bit', hub: { endpoint: hub.url }, dir })
  expect(describeModel(dir, 'm', null).complete).toBe(true)
  const size = statSync(join(dir, 'model-00002-of-00002.safetensors')).size
  truncateSync(join(dir, 'model-00002-of-00002.safetensors'), size - 10)
  rmSync(join(dir, 'model-00001-of-00002.safetensors'))
  writeFileSync(join(dir, 'model-00001-of-00002.safetensors.part'), 'x')
  const m = describeModel(dir, 'm', null)
  expect(m.complete).toBe(false)
  expect(m.problems).toContain('model-00001-of-00002.safetensors missing')
  expect(m.problems).toContain('unfinished download: model-00001-of-00002.safetensors.part')
  expect(m.problems.some((p) => p.startsWith('model-00002-of-00002.safetensors') && p.includes('truncated'))).toBe(true)
})

test('a flipped byte keeps the size: complete without --verify, caught with it', async () => {
  const dir = mkdtempSync(join(scratch, 'dbc-list-'))
  await pullModel({ repo: 'mlx-community/Tiny-4bit', hub: { endpoint: hub.url }, dir })
  const file = join(dir, 'model-00001-of-00002.safetensors')
  const bytes = readFileSync(file)
  bytes[bytes.byteLength - 5]! ^= 1
  writeFileSync(file, bytes)
  expect(describeModel(dir, 'm', null).complete).toBe(true)
  const verified = describeModel(dir, 'm', null, true)
  expect(verified.complete).toBe(false)
  expect(verified.verified).toBe(false)
  expect(verified.problems).toEqual(['model-00001-of-00002.safetensors does not match its manifest hash'])
})

test('dbcluster model list: a table from the cache named by HF_HUB_CACHE, and --json', async () => {
  const cacheDir = mkdtempSync(join(scratch, 'dbc-list-'))
  await pullModel({ repo: 'mlx-community/Tiny-4bit', hub: { endpoint: hub.url }, cacheDir })
  const run = (...args: string[]) => {
    const p = Bun.spawnSync([process.execPath, 'src/main.ts', 'model', 'list', ...args], {
      cwd: ROOT,
      env: { ...process.env, NODE_ENV: 'development', NO_COLOR: '1', HF_HUB_CACHE: cacheDir },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() }
  }
  const table = run()
  expect(table.code).toBe(0)
  expect(table.out).toMatch(/\| mlx-community\/Tiny-4bit \| main \| qwen3 \| 4-bit g32 \| \d+\.\d MiB \| complete \|/)
  const json = JSON.parse(run('--json', '--dir', '/nonexistent/model').out)
  expect(
    json.map((m: { name: string; complete: boolean; problems: string[] }) => [m.name, m.complete, m.problems]),
  ).toEqual([
    ['mlx-community/Tiny-4bit', true, []],
    ['model', false, ['folder not found']],
  ])
}, 30_000)
