/** `model pull` against hubs that lie: each row is one hostile or broken server behaviour, and what the pull must do
 * about it. Nothing a hub sends may make the pull write outside the cache (or --dir), and every refusal names the hub. */
import { afterAll, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { pullModel } from '../../src/distribution/hub-pull.ts'

const scratch = mkdtempSync(join(tmpdir(), 'dbc-hostile-hub-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const REPO = 'org/tiny'
const COMMIT = 'ab'.repeat(20)
const CONTENT = new TextEncoder().encode('{"model_type":"llama"}\n')
const gitSha1 = (b: Uint8Array) => createHash('sha1').update(`blob ${b.byteLength}\0`).update(b).digest('hex')

/** What one hostile hub changes about an honest answer for config.json. */
interface Behaviour {
  etag?: string | null
  repoCommit?: string
  apiSha?: string
  size?: number
  body?: Uint8Array
  /** Send the resolve request to this URL (another origin) instead of answering it. */
  redirectTo?: (other: string) => string
  /** The redirect carries X-Linked-Etag / X-Linked-Size, as the real hub's redirect to its CDN does. */
  linked?: boolean
}

interface Hostile {
  url: string
  /** The same server under another host name: another origin. */
  otherUrl: string
  seen: { host: string; path: string; authorization: string | null }[]
  stop(): void
}

function serveHostileHub(b: Behaviour): Hostile {
  const hub: Hostile = { url: '', otherUrl: '', seen: [], stop: () => server.stop(true) }
  const server = Bun.serve({
    port: 0,
    fetch(req) {
      const url = new URL(req.url)
      hub.seen.push({ host: url.host, path: url.pathname, authorization: req.headers.get('authorization') })
      if (url.pathname === `/api/models/${REPO}/revision/main`)
        return Response.json({ sha: b.apiSha ?? COMMIT, siblings: [{ rfilename: 'config.json' }] })
      const resolveUrl = url.pathname === `/${REPO}/resolve/main/config.json`
      if (resolveUrl && b.redirectTo) {
        const linked: Record<string, string> = b.linked
          ? { 'x-linked-etag': `"${gitSha1(CONTENT)}"`, 'x-linked-size': String(CONTENT.byteLength) }
          : {}
        return new Response(null, { status: 302, headers: { location: b.redirectTo(hub.otherUrl), ...linked } })
      }
      if (resolveUrl || url.pathname === '/elsewhere/config.json') {
        const body = b.body ?? CONTENT
        const headers = new Headers({
          'x-repo-commit': b.repoCommit ?? COMMIT,
          'content-length': String(b.size ?? body.byteLength),
        })
        const etag = b.etag === undefined ? `"${gitSha1(CONTENT)}"` : b.etag
        if (etag !== null) headers.set('etag', etag)
        return new Response(req.method === 'HEAD' ? null : (body as Uint8Array<ArrayBuffer>), { headers })
      }
      return new Response('not found', { status: 404 })
    },
  })
  hub.url = `http://127.0.0.1:${server.port}`
  hub.otherUrl = `http://localhost:${server.port}`
  return hub
}

/** Every file under a folder, relative to it. */
const filesUnder = (dir: string): string[] =>
  existsSync(dir)
    ? readdirSync(dir, { recursive: true, withFileTypes: true })
        .filter((e) => !e.isDirectory())
        .map((e) => relative(dir, join(e.parentPath, e.name)))
        .sort()
    : []

/** A pull into a fresh cache beside a victim file that a path-like answer would aim at. */
async function pullFrom(b: Behaviour, mode: 'cache' | 'dir' = 'cache') {
  const home = mkdtempSync(join(scratch, 'home-'))
  const victim = join(home, 'victim')
  writeFileSync(victim, 'precious')
  const cacheDir = join(home, 'cache')
  const dir = join(home, 'model')
  mkdirSync(cacheDir)
  const hub = serveHostileHub(b)
  try {
    const outcome = await pullModel({
      repo: REPO,
      hub: { endpoint: hub.url, token: 'hf_secret' },
      cacheDir,
      dir: mode === 'dir' ? dir : undefined,
      attempts: 2,
    }).then(
      (r) => ({ ok: true as const, dir: r.dir }),
      (e) => ({ ok: false as const, code: e.code as string, message: String(e.message) }),
    )
    return { outcome, victim: readFileSync(victim, 'utf8'), home, hub, homeFiles: filesUnder(home) }
  } finally {
    hub.stop()
  }
}

const TRAVERSAL = '"../../../victim"'

const refusals: [string, Behaviour, 'cache' | 'dir', string, string][] = [
  ['a path-like ETag (cache)', { etag: TRAVERSAL }, 'cache', 'E_HUB_RESPONSE', 'the ETag "\\"../../../victim\\""'],
  ['a path-like ETag (--dir)', { etag: TRAVERSAL }, 'dir', 'E_HUB_RESPONSE', 'not a SHA-256 or git SHA-1'],
  ['an absolute-path ETag', { etag: '"/tmp/x"' }, 'cache', 'E_HUB_RESPONSE', 'not a SHA-256 or git SHA-1'],
  [
    'an ETag in upper case',
    { etag: `"${gitSha1(CONTENT).toUpperCase()}"` },
    'cache',
    'E_HUB_RESPONSE',
    'lowercase hex',
  ],
  [
    'a hash with a path appended',
    { etag: `"${gitSha1(CONTENT)}/../../victim"` },
    'cache',
    'E_HUB_RESPONSE',
    'not a SHA-256 or git SHA-1',
  ],
  ['no ETag at all', { etag: null }, 'cache', 'E_HUB_RESPONSE', 'sent no ETag for config.json'],
  [
    'a path-like X-Repo-Commit',
    { repoCommit: '../../../victim', apiSha: undefined },
    'cache',
    'E_HUB_RESPONSE',
    'reported commit "../../../victim"',
  ],
  [
    'a path-like commit in the file list',
    { apiSha: '../../victim' },
    'cache',
    'E_HUB_RESPONSE',
    'reported commit "../../victim"',
  ],
  [
    'a lying hash',
    { body: new TextEncoder().encode('{"model_type":"evil!"}\n') },
    'cache',
    'E_HASH_MISMATCH',
    'does not match the hash the hub reports',
  ],
  ['a size larger than the body', { size: CONTENT.byteLength + 10 }, 'dir', 'E_HUB_CUT', 'stopped at byte'],
  [
    'a redirect to another origin without X-Linked-Etag',
    { redirectTo: (o) => `${o}/elsewhere/config.json` },
    'cache',
    'E_HUB_RESPONSE',
    'sent no ETag for config.json',
  ],
  [
    'a redirect whose other origin serves other bytes',
    {
      redirectTo: (o) => `${o}/elsewhere/config.json`,
      linked: true,
      body: new TextEncoder().encode('{"model_type":"evil!"}\n'),
    },
    'cache',
    'E_HASH_MISMATCH',
    'does not match the hash the hub reports',
  ],
  [
    'a body longer than its size',
    { size: 5, body: CONTENT },
    'dir',
    'E_HUB_SIZE',
    'longer than the 5 bytes the hub announced',
  ],
]

for (const [what, behaviour, mode, code, words] of refusals) {
  test(`a hub that sends ${what} is refused (${code}) and writes nothing outside`, async () => {
    const r = await pullFrom(behaviour, mode)
    expect(r.outcome.ok).toBe(false)
    if (r.outcome.ok) return
    expect(r.outcome.code).toBe(code)
    expect(r.outcome.message).toContain(words)
    if (code === 'E_HUB_RESPONSE') expect(r.outcome.message).toContain(r.hub.url)
    expect(r.victim).toBe('precious')
    // nothing beside the victim and the (empty, or in-cache) folders the pull may make
    for (const f of r.homeFiles)
      expect(f === 'victim' || f.startsWith('cache/models--org--tiny/') || f.startsWith('model/')).toBe(true)
    // a refusal on what the hub said is made before any byte is written
    if (code === 'E_HUB_RESPONSE') expect(r.homeFiles).toEqual(['victim'])
  })
}

test('an honest answer lands in the cache (the table above changes only one thing each)', async () => {
  const r = await pullFrom({})
  expect(r.outcome.ok).toBe(true)
  expect(r.homeFiles).toContain(`cache/models--org--tiny/blobs/${gitSha1(CONTENT)}`)
  expect(r.homeFiles).toContain(`cache/models--org--tiny/snapshots/${COMMIT}/config.json`)
})

test('a weak ETag and a SHA-256 are both accepted as hashes', async () => {
  const r = await pullFrom({ etag: `W/"${gitSha1(CONTENT)}"` })
  expect(r.outcome.ok).toBe(true)
})

test('a redirect to another origin is followed without the token, the hash taken from the hub', async () => {
  const r = await pullFrom({ redirectTo: (other) => `${other}/elsewhere/config.json`, linked: true })
  expect(r.outcome.ok).toBe(true)
  const elsewhere = r.hub.seen.filter((s) => s.path === '/elsewhere/config.json')
  expect(elsewhere.length).toBeGreaterThan(0)
  for (const s of elsewhere) expect([s.host.startsWith('localhost:'), s.authorization]).toEqual([true, null])
})

test('a hub that answers with huge headers is refused with an error naming it', async () => {
  // a raw server: Bun.serve would not send a 1 MiB header line
  const server = Bun.listen({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      data(socket) {
        socket.write(`HTTP/1.1 200 OK\r\nx-junk: ${'a'.repeat(1 << 20)}\r\ncontent-length: 2\r\n\r\n{}`)
        socket.end()
      },
    },
  })
  try {
    const dir = mkdtempSync(join(scratch, 'huge-'))
    const error = await pullModel({ repo: REPO, hub: { endpoint: `http://127.0.0.1:${server.port}` }, dir }).catch(
      (e) => e,
    )
    expect(error.code).toMatch(/^E_HUB_/)
    expect(error.message).toContain(`127.0.0.1:${server.port}`)
    expect(filesUnder(dir)).toEqual([])
  } finally {
    server.stop(true)
  }
})

test('revision names that are not plain relative paths are refused before any request', async () => {
  for (const revision of ['../../etc', '/abs', 'a/../b']) {
    const error = await pullModel({
      repo: REPO,
      revision,
      hub: { endpoint: 'http://127.0.0.1:1' },
      dir: scratch,
    }).catch((e) => e)
    expect(error.code).toBe('E_USAGE')
  }
})
