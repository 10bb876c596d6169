/** `--model REPO_OR_DIR`: a folder is used as it is; a repository comes from the hub cache, pulled once when missing. */
import { afterAll, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cachedSnapshot, resolveModelDir } from '../../src/distribution/model-source.ts'
import { serveFakeHub } from '../support/hub-server.ts'
import { synthModel } from '../support/synth-models.ts'

/** Every folder this file makes lives under one scratch folder, removed at the end. */
const scratch = mkdtempSync(join(tmpdir(), 'dbc-dist-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const source = await synthModel('qwen3', 'q4')
const hub = serveFakeHub(source, 'mlx-community/Tiny')
afterAll(() => hub.stop())

test('a folder is itself; a repository is pulled into the cache once, then found there', async () => {
  expect(await resolveModelDir(source)).toBe(source)
  const cacheDir = mkdtempSync(join(scratch, 'dbc-src-'))
  const options = { cacheDir, hub: { endpoint: hub.url } }
  expect(cachedSnapshot('mlx-community/Tiny', 'main', cacheDir)).toBeNull()
  const offline = await resolveModelDir('mlx-community/Tiny', { ...options, pull: false }).catch((e) => e)
  expect(offline.code).toBe('E_MODEL_NOT_FOUND')
  expect(offline.hint).toBe("run 'dbcluster model pull mlx-community/Tiny --revision main'")
  const dir = await resolveModelDir('mlx-community/Tiny', options)
  expect(dir).toBe(join(cacheDir, 'models--mlx-community--Tiny', 'snapshots', hub.commit))
  hub.requests.length = 0
  expect(await resolveModelDir('mlx-community/Tiny', options)).toBe(dir)
  expect(await resolveModelDir(`mlx-community/Tiny@${hub.commit}`, options)).toBe(dir)
  expect(hub.requests).toEqual([])
  expect((await resolveModelDir('not a model', options).catch((e) => e)).code).toBe('E_MODEL_NOT_FOUND')
})
