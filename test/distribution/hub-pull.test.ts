/** `model pull` against a local server in the hub's URL layout: the cache layout, resume after a cut, corrupted files
 * caught by their hash, HF_ENDPOINT and HF_TOKEN honoured, progress output. */
import { afterAll, expect, test } from 'bun:test'
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { hubCacheDir, pullModel, type PullEvent } from '../../src/distribution/hub-pull.ts'
import { listModelFiles, readManifestSidecar } from '../../src/distribution/manifest.ts'
import { serveFakeHub } from '../support/hub-server.ts'
import { synthModel } from '../support/synth-models.ts'

/** Every folder this file makes lives under one scratch folder, removed at the end. */
const scratch = mkdtempSync(join(tmpdir(), 'dbc-dist-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const ROOT = new URL('../..', import.meta.url).pathname
const REPO = 'mlx-community/Tiny-Qwen3-4bit'
const source = await synthModel('qwen3', 'q4', { shardBytes: 2_000_000 })
const hub = serveFakeHub(source, REPO)
afterAll(() => hub.stop())
const tmp = () => mkdtempSync(join(scratch, 'dbc-pull-'))
const same = (dir: string) => {
  for (const name of listModelFiles(source))
    expect(Buffer.compare(readFileSync(join(dir, name)), readFileSync(join(source, name)))).toBe(0)
}
const WEIGHT = 'model-00002-of-00002.safetensors'

test('a full pull lands in the hub cache layout (blobs, snapshot links, refs), with the token sent to the hub', async () => {
  expect(listModelFiles(source)).toContain(WEIGHT)
  const cacheDir = tmp()
  hub.requests.length = 0
  const events: PullEvent[] = []
  const result = await pullModel({
    repo: REPO,
    hub: { endpoint: hub.url, token: 'hf_secret' },
    cacheDir,
    onEvent: (e) => events.push(e),
  })
  const repoDir = join(cacheDir, 'models--mlx-community--Tiny-Qwen3-4bit')
  expect(result.dir).toBe(join(repoDir, 'snapshots', hub.commit))
  expect(result.commit).toBe(hub.commit)
  same(result.dir)
  expect(readFileSync(join(repoDir, 'refs', 'main'), 'utf8')).toBe(hub.commit)
  // LFS files are links into blobs/<sha256>; small files into blobs/<git sha1>
  const link = join(result.dir, WEIGHT)
  expect(lstatSync(link).isSymbolicLink()).toBe(true)
  expect(readlinkSync(link)).toMatch(/^\.\.\/\.\.\/blobs\/[0-9a-f]{64}$/)
  expect(readlinkSync(join(result.dir, 'config.json'))).toMatch(/^\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/)
  expect(readdirSync(join(repoDir, 'blobs')).filter((b) => b.endsWith('.part'))).toEqual([])
  expect(events.filter((e) => e.type === 'downloaded').length).toBe(listModelFiles(source).length)
  expect(result.downloadedBytes).toBe(listModelFiles(source).reduce((a, n) => a + statSync(join(source, n)).size, 0))
  // every request to the hub carried the token; none to the CDN it redirects LFS files to
  const [toHub, toCdn] = [
    hub.requests.filter((r) => !r.path.startsWith('/cdn/')),
    hub.requests.filter((r) => r.path.startsWith('/cdn/')),
  ]
  expect(toHub.length).toBeGreaterThan(listModelFiles(source).length)
  for (const r of toHub) expect(r.authorization).toBe('Bearer hf_secret')
  expect(toCdn.map((r) => r.path.split('/').at(-1)).sort()).toEqual(
    listModelFiles(source).filter((n) => n.endsWith('.safetensors') || n === 'tokenizer.json'),
  )
  for (const r of toCdn) expect([r.host.startsWith('localhost:'), r.authorization]).toEqual([true, null])
  // the manifest sidecar carries the verified hashes
  const manifest = readManifestSidecar(result.dir)!
  expect(manifest.files.map((f) => f.name)).toEqual(listModelFiles(source))

  // a second pull finds everything in place and downloads nothing
  hub.requests.length = 0
  const again = await pullModel({ repo: REPO, hub: { endpoint: hub.url }, cacheDir })
  expect(again.downloadedBytes).toBe(0)
  expect(hub.requests.filter((r) => r.method === 'GET' && r.path.includes('/cdn/'))).toEqual([])
  expect(hub.requests.every((r) => r.authorization === null)).toBe(true)
})

test('a response cut midway is resumed with a Range request from where it stopped', async () => {
  const dir = tmp()
  const size = statSync(join(source, WEIGHT)).size
  hub.cutNext.set(WEIGHT, 700_000)
  hub.requests.length = 0
  const events: PullEvent[] = []
  await pullModel({ repo: REPO, hub: { endpoint: hub.url }, dir, onEvent: (e) => events.push(e) })
  same(dir)
  const gets = hub.requests.filter((r) => r.method === 'GET' && r.path.endsWith(WEIGHT) && r.path.includes('/cdn/'))
  expect(gets.map((r) => r.range)).toEqual([null, 'bytes=700000-'])
  expect(events).toContainEqual({
    type: 'retry',
    file: WEIGHT,
    reason: `the download of ${WEIGHT} stopped at byte 700000 of ${size}`,
  })
  expect(events).toContainEqual({ type: 'downloaded', file: WEIGHT, bytes: size - 700_000, resumedFrom: 700_000 })
})

test('an interrupted pull leaves a .part that the next run resumes', async () => {
  const dir = tmp()
  hub.cutNext.set(WEIGHT, 1_000_000)
  const failed = await pullModel({ repo: REPO, hub: { endpoint: hub.url }, dir, attempts: 1 }).catch((e) => e)
  expect(failed.code).toBe('E_HUB_CUT')
  expect(statSync(join(dir, `${WEIGHT}.part`)).size).toBe(1_000_000)
  hub.requests.length = 0
  await pullModel({ repo: REPO, hub: { endpoint: hub.url }, dir })
  same(dir)
  expect(existsSync(join(dir, `${WEIGHT}.part`))).toBe(false)
  expect(hub.requests.filter((r) => r.method === 'GET' && r.path.endsWith(WEIGHT)).map((r) => r.range)).toEqual([
    'bytes=1000000-',
  ])
  // files finished before the interruption were not fetched again
  expect(hub.requests.filter((r) => r.method === 'GET' && r.path.endsWith('model-00001-of-00002.safetensors'))).toEqual(
    [],
  )
})

test('a corrupted file is caught by its hash, deleted and fetched once more; corrupted twice, the pull fails naming it', async () => {
  const dir = tmp()
  hub.corruptNext.set(WEIGHT, 1)
  hub.corruptNext.set('config.json', 1) // a small file: checked as git's blob SHA-1
  const events: PullEvent[] = []
  await pullModel({ repo: REPO, hub: { endpoint: hub.url }, dir, onEvent: (e) => events.push(e) })
  same(dir)
  expect(
    events
      .filter((e) => e.type === 'retry')
      .map((e) => (e as { file: string }).file)
      .sort(),
  ).toEqual(['config.json', WEIGHT])

  const dir2 = tmp()
  hub.corruptNext.set(WEIGHT, 2)
  const error = await pullModel({ repo: REPO, hub: { endpoint: hub.url }, dir: dir2 }).catch((e) => e)
  expect(error.code).toBe('E_HASH_MISMATCH')
  expect(error.message).toContain(`${WEIGHT} does not match the hash the hub reports`)
  expect(existsSync(join(dir2, WEIGHT))).toBe(false)
  expect(existsSync(join(dir2, `${WEIGHT}.part`))).toBe(false)
})

test('unknown repositories and bad names fail with a clear error', async () => {
  const missing = await pullModel({ repo: 'mlx-community/nope', hub: { endpoint: hub.url }, dir: tmp() }).catch(
    (e) => e,
  )
  expect(missing.code).toBe('E_HUB_NOT_FOUND')
  expect(missing.message).toContain('mlx-community/nope at revision main: not found (404)')
  expect((await pullModel({ repo: '../etc', hub: { endpoint: hub.url }, dir: tmp() }).catch((e) => e)).code).toBe(
    'E_USAGE',
  )
  const down = await pullModel({ repo: REPO, hub: { endpoint: 'http://127.0.0.1:1' }, dir: tmp() }).catch((e) => e)
  expect(down.code).toBe('E_HUB_UNREACHABLE')
})

test('a gated repository without HF_TOKEN (or with the wrong one) fails with what to do', async () => {
  hub.requireToken = 'hf_right'
  try {
    const none = await pullModel({ repo: REPO, hub: { endpoint: hub.url }, dir: tmp() }).catch((e) => e)
    expect([none.code, none.hint]).toEqual(['E_HUB_AUTH', 'the repository is gated or private: set HF_TOKEN'])
    const wrong = await pullModel({ repo: REPO, hub: { endpoint: hub.url, token: 'hf_wrong' }, dir: tmp() }).catch(
      (e) => e,
    )
    expect([wrong.code, wrong.hint]).toEqual(['E_HUB_AUTH', 'HF_TOKEN was sent but has no access to this repository'])
    const dir = tmp()
    await pullModel({ repo: REPO, hub: { endpoint: hub.url, token: 'hf_right' }, dir })
    same(dir)
  } finally {
    hub.requireToken = null
  }
})

test('the cache folder follows HF_HUB_CACHE, then HF_HOME, then ~/.cache', () => {
  expect(hubCacheDir({ HF_HUB_CACHE: '/a/hub', HF_HOME: '/b' })).toBe('/a/hub')
  expect(hubCacheDir({ HF_HOME: '/b' })).toBe('/b/hub')
  expect(hubCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/huggingface/hub')
})

test('dbcluster model pull: HF_ENDPOINT and HF_TOKEN from the environment, progress lines, --dir', async () => {
  const dir = tmp()
  hub.requests.length = 0
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'model', 'pull', REPO, '--dir', dir], {
    cwd: ROOT,
    env: { ...process.env, NODE_ENV: 'development', NO_COLOR: '1', HF_ENDPOINT: hub.url, HF_TOKEN: 'hf_cli' },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  const text = out + err
  expect(code).toBe(0)
  same(dir)
  expect(text).toContain(`from ${hub.url}`)
  // bytes, rate and ETA
  expect(text).toMatch(/\d+(\.\d+)? MiB \/ \d+(\.\d+)? MiB \(100%\)\s+\d+(\.\d+)? (K|M|G)iB\/s\s+ETA \d+s/)
  expect(text).toContain(`${WEIGHT}: `)
  expect(hub.requests.length).toBeGreaterThan(0)
  expect(
    hub.requests.filter((r) => !r.path.startsWith('/cdn/')).every((r) => r.authorization === 'Bearer hf_cli'),
  ).toBe(true)
}, 60_000)
