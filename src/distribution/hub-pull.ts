/** `model pull`: downloads a model repository from the Hugging Face hub (or a mirror at HF_ENDPOINT) into the cache layout
 * huggingface_hub uses, or into a plain folder; resumable through `.part` files, each file checked against the hash the
 * hub reports (LFS SHA-256, or git's blob SHA-1 for small files). */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  lstatSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { UsageError } from '../errors.ts'
import { VERSION } from '../version.ts'
import { ensureFreeSpace } from './disk-space.ts'
import { DistributionError } from './errors.ts'
import { gitBlobSha1File, isSha1Hex, isSha256Hex, sha256File } from './file-hash.ts'
import { buildManifest, isSafeName, writeManifestSidecar } from './manifest.ts'
import { progressMeter, type TransferProgress } from './progress.ts'

export interface Hub {
  /** Base URL without a trailing slash (HF_ENDPOINT, default https://huggingface.co). */
  endpoint: string
  /** HF_TOKEN, sent as a bearer token to the hub (never to the CDN it redirects to). */
  token?: string
}

export function hubFromEnv(env: Record<string, string | undefined> = process.env): Hub {
  return {
    endpoint: (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
    token: env.HF_TOKEN || undefined,
  }
}

/** huggingface_hub's cache: HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME (or ~/.cache)/huggingface/hub. */
export function hubCacheDir(env: Record<string, string | undefined> = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE
  return join(env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface'), 'hub')
}

/** models--ORG--NAME, as huggingface_hub names a model repository's cache folder. */
export const repoCacheFolder = (repo: string) => `models--${repo.split('/').join('--')}`

const REPO = /^(?:[A-Za-z0-9][\w.-]*\/)?[A-Za-z0-9][\w.-]*$/

/** Progress of a pull: the shape shard transfers report too. */
export type PullProgress = TransferProgress

export type PullEvent =
  | { type: 'present'; file: string }
  | { type: 'downloaded'; file: string; bytes: number; resumedFrom: number }
  | { type: 'retry'; file: string; reason: string }

export interface PullOptions {
  repo: string
  revision?: string
  /** A plain folder for the files instead of the hub cache. */
  dir?: string
  hub?: Hub
  cacheDir?: string
  /** Network attempts per file (each resumes where the last stopped). */
  attempts?: number
  onProgress?: (p: PullProgress) => void
  onEvent?: (e: PullEvent) => void
}

export interface PullResult {
  /** The folder that holds the model (the snapshot folder in the cache, or --dir). */
  dir: string
  commit: string
  files: { name: string; size: number }[]
  downloadedBytes: number
}

interface RemoteFile {
  name: string
  size: number
  /** LFS SHA-256 or git blob SHA-1, exactly 64 or 40 lowercase hex characters (checked: it names the blob's file). */
  etag: string
  commit: string | null
  url: string
  /** Whether the URL is still the hub's (so the token goes along). */
  sameOrigin: boolean
}

class HubHttpError extends DistributionError {
  constructor(
    readonly status: number,
    message: string,
    hint?: string,
  ) {
    super(
      status === 401 || status === 403 ? 'E_HUB_AUTH' : status === 404 ? 'E_HUB_NOT_FOUND' : 'E_HUB_HTTP',
      message,
      hint,
    )
  }
}

function httpError(status: number, what: string, hub: Hub): HubHttpError {
  if (status === 401 || status === 403)
    return new HubHttpError(
      status,
      `${what}: the hub answered ${status}`,
      hub.token
        ? 'HF_TOKEN was sent but has no access to this repository'
        : 'the repository is gated or private: set HF_TOKEN',
    )
  if (status === 404)
    return new HubHttpError(
      status,
      `${what}: not found (404) at ${hub.endpoint}`,
      'check the repository name and --revision',
    )
  return new HubHttpError(status, `${what}: the hub answered ${status}`, 'try again later')
}

/** What the hub says is a file's hash. It becomes a file name in the cache (blobs/<etag>), so anything but exactly 40 or
 * 64 lowercase hex characters is refused, never cleaned up: a hostile hub or proxy could otherwise name `../../.profile`. */
function hashFromEtag(raw: string | null, name: string, hub: Hub): string {
  const etag = raw?.replace(/^W\//, '').replace(/^"(.*)"$/, '$1') ?? null
  if (etag !== null && (isSha256Hex(etag) || isSha1Hex(etag))) return etag
  const shown =
    raw === null ? 'no ETag' : `the ETag ${JSON.stringify(raw.length > 120 ? `${raw.slice(0, 120)}…` : raw)}`
  throw new DistributionError(
    'E_HUB_RESPONSE',
    `${hub.endpoint} sent ${shown} for ${name}, not a SHA-256 or git SHA-1 in lowercase hex`,
    'nothing was written; is HF_ENDPOINT a Hugging Face hub, or does a proxy rewrite its answers?',
  )
}

/** A commit as the hub names it: git's 40 lowercase hex characters (it becomes the snapshot folder's name). */
function checkedCommit(commit: string, hub: Hub): string {
  if (isSha1Hex(commit)) return commit
  throw new DistributionError(
    'E_HUB_RESPONSE',
    `${hub.endpoint} reported commit ${JSON.stringify(commit.slice(0, 120))}, not 40 lowercase hex characters`,
    'nothing was written; is HF_ENDPOINT a Hugging Face hub?',
  )
}

/** Refuses a path that does not lie under `root` once resolved: the last check before anything is written. */
function underRoot(root: string, path: string): string {
  const full = resolve(path)
  const base = resolve(root)
  if (full !== base && !full.startsWith(base + sep))
    throw new DistributionError(
      'E_HUB_PATH',
      `refusing to write ${full}: it is outside ${base}`,
      'the hub named a file outside the model folder; nothing was written there',
    )
  return full
}

async function request(
  hub: Hub,
  url: string,
  init: { method?: string; headers?: Record<string, string>; withToken: boolean },
): Promise<Response> {
  const headers: Record<string, string> = { 'user-agent': `dbcluster/${VERSION}`, ...init.headers }
  if (init.withToken && hub.token) headers.authorization = `Bearer ${hub.token}`
  try {
    return await fetch(url, { method: init.method ?? 'GET', headers, redirect: 'manual' })
  } catch (error) {
    throw new DistributionError(
      'E_HUB_UNREACHABLE',
      `cannot reach ${new URL(url).origin}: ${(error as Error).message}`,
      'check the network, or set HF_ENDPOINT to a reachable mirror',
    )
  }
}

/** The repository's file list and commit at a revision. */
async function listRepo(hub: Hub, repo: string, revision: string): Promise<{ commit: string | null; files: string[] }> {
  const url = `${hub.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`
  const res = await request(hub, url, { withToken: true })
  if (!res.ok) throw httpError(res.status, `${repo} at revision ${revision}`, hub)
  const info = (await res.json().catch(() => null)) as { sha?: unknown; siblings?: { rfilename?: unknown }[] } | null
  if (!info || !Array.isArray(info.siblings))
    throw new DistributionError(
      'E_HUB_RESPONSE',
      `${url} did not return a model's file list`,
      'is HF_ENDPOINT a Hugging Face hub?',
    )
  const files = info.siblings.map((s) => String(s?.rfilename))
  for (const f of files)
    if (!isSafeName(f))
      throw new DistributionError(
        'E_HUB_RESPONSE',
        `${hub.endpoint} lists a file named ${JSON.stringify(f.slice(0, 200))}, which is not a plain relative path`,
      )
  return { commit: typeof info.sha === 'string' ? checkedCommit(info.sha, hub) : null, files }
}

/** HEAD of a file's resolve URL, as huggingface_hub reads it: the hash and size from X-Linked-Etag / X-Linked-Size (on
 * the hub's redirect to its CDN) or ETag / Content-Length; same-origin redirects (renamed repos) are followed. */
async function describe(hub: Hub, repo: string, revision: string, name: string): Promise<RemoteFile> {
  let url = `${hub.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${name.split('/').map(encodeURIComponent).join('/')}`
  for (let hop = 0; hop < 5; hop++) {
    const res = await request(hub, url, { method: 'HEAD', headers: { 'accept-encoding': 'identity' }, withToken: true })
    const location = res.headers.get('location')
    const isRedirect = res.status >= 300 && res.status < 400 && location
    if (!isRedirect && !res.ok) throw httpError(res.status, `${repo}/${name}`, hub)
    const next = isRedirect ? new URL(location, url) : null
    if (next && next.origin === new URL(url).origin && !res.headers.get('x-linked-etag')) {
      url = next.href
      continue
    }
    const size = Number(res.headers.get('x-linked-size') ?? res.headers.get('content-length'))
    if (!Number.isSafeInteger(size) || size < 0)
      throw new DistributionError(
        'E_HUB_RESPONSE',
        `the hub gave no size for ${name}`,
        'is HF_ENDPOINT a Hugging Face hub?',
      )
    const commit = res.headers.get('x-repo-commit')
    return {
      name,
      size,
      etag: hashFromEtag(res.headers.get('x-linked-etag') ?? res.headers.get('etag'), name, hub),
      commit: commit === null ? null : checkedCommit(commit, hub),
      url: next?.href ?? url,
      sameOrigin: !next || next.origin === new URL(url).origin,
    }
  }
  throw new DistributionError('E_HUB_RESPONSE', `too many redirects for ${name}`)
}

/** Brings `part` up to the file's size, resuming from what it holds (HTTP Range). Throws a retryable error on a cut. */
async function fetchInto(hub: Hub, file: RemoteFile, part: string, onBytes: (n: number) => void): Promise<number> {
  let at = existsSync(part) ? statSync(part).size : 0
  if (at > file.size) truncateSync(part, (at = 0))
  if (at === file.size) return at
  const res = await request(hub, file.url, { headers: at ? { range: `bytes=${at}-` } : {}, withToken: file.sameOrigin })
  if (res.status === 416) {
    rmSync(part, { force: true }) // the server says our part is past the end: start over
    throw new DistributionError('E_HUB_RANGE', `the server refused to resume ${file.name} at byte ${at}`)
  }
  if (!res.ok) throw httpError(res.status, `${file.name}`, hub)
  if (at && res.status === 200)
    at = 0 // Range ignored: the whole file comes again
  else if (at && !new RegExp(`^bytes ${at}-`).test(res.headers.get('content-range') ?? '')) {
    throw new DistributionError(
      'E_HUB_RANGE',
      `asked for ${file.name} from byte ${at}, got ${res.headers.get('content-range') ?? 'no Content-Range'}`,
    )
  }
  if (!res.body) throw new DistributionError('E_HUB_CUT', `the hub sent no body for ${file.name}`)
  const resumedFrom = at
  const fd = openSync(part, at ? 'a' : 'w')
  try {
    const reader = res.body.getReader()
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      const bytes = r.value
      writeSync(fd, bytes)
      at += bytes.byteLength
      onBytes(bytes.byteLength)
      if (at > file.size)
        throw new DistributionError(
          'E_HUB_SIZE',
          `${file.name} is longer than the ${file.size} bytes the hub announced`,
        )
    }
  } catch (error) {
    if (error instanceof DistributionError) throw error
    throw new DistributionError(
      'E_HUB_CUT',
      `the download of ${file.name} stopped at byte ${at} of ${file.size}: ${(error as Error).message}`,
    )
  } finally {
    closeSync(fd)
  }
  if (at < file.size)
    throw new DistributionError('E_HUB_CUT', `the download of ${file.name} stopped at byte ${at} of ${file.size}`)
  return resumedFrom
}

/** Whether a complete file matches the hub's hash (SHA-256 of LFS files, git blob SHA-1 of small ones). */
function matchesEtag(path: string, etag: string): boolean {
  if (isSha256Hex(etag)) return sha256File(path) === etag
  return gitBlobSha1File(path) === etag
}

export async function pullModel(options: PullOptions): Promise<PullResult> {
  const { repo } = options
  const revision = options.revision ?? 'main'
  const hub = options.hub ?? hubFromEnv()
  if (!REPO.test(repo) || repo.includes('..'))
    throw new UsageError(`'${repo}' is not a hub repository name`, 'use ORG/NAME, e.g. mlx-community/Qwen3-0.6B-4bit')
  if (!isSafeName(revision))
    throw new UsageError(`'${revision}' is not a revision name`, 'use a branch, a tag or a commit hash')
  const listing = await listRepo(hub, repo, revision)
  const remote: RemoteFile[] = []
  for (const name of listing.files) remote.push(await describe(hub, repo, revision, name))
  const commit = listing.commit ?? remote.find((f) => f.commit)?.commit ?? (isSha1Hex(revision) ? revision : null)
  if (commit === null && !options.dir)
    throw new DistributionError(
      'E_HUB_RESPONSE',
      `${hub.endpoint} named no commit for ${repo} at ${revision}`,
      'the cache is keyed by commit: pass --revision COMMIT, or --dir DIR',
    )

  const repoDir = join(options.cacheDir ?? hubCacheDir(), repoCacheFolder(repo))
  // every path written below is checked to lie under this root (the cache's repository folder, or --dir)
  const root = options.dir ?? repoDir
  const modelDir = options.dir ?? join(repoDir, 'snapshots', commit!)
  // in the cache, content lives in blobs/<etag> and the snapshot holds relative links to it (huggingface_hub's layout)
  const storeOf = (f: RemoteFile) =>
    underRoot(root, options.dir ? join(modelDir, f.name) : join(repoDir, 'blobs', f.etag))
  const present = (f: RemoteFile) => {
    const store = storeOf(f)
    if (!existsSync(store) || statSync(store).size !== f.size) return false
    // a blob is renamed into place only after its hash matched; a plain folder's file is checked again
    return !options.dir ? true : matchesEtag(store, f.etag)
  }
  const missing = remote.filter((f) => {
    const has = present(f)
    if (has) options.onEvent?.({ type: 'present', file: f.name })
    return !has
  })
  const partSize = (f: RemoteFile) =>
    existsSync(`${storeOf(f)}.part`) ? Math.min(statSync(`${storeOf(f)}.part`).size, f.size) : 0
  const total = missing.reduce((a, f) => a + f.size - partSize(f), 0)
  mkdirSync(modelDir, { recursive: true })
  ensureFreeSpace(options.dir ? modelDir : repoDir, total, `pulling ${repo}`)

  const meter = progressMeter(total, options.onProgress)
  const attempts = options.attempts ?? 5
  for (const f of missing) {
    const store = storeOf(f)
    const part = `${store}.part`
    mkdirSync(dirname(store), { recursive: true })
    let mismatches = 0
    for (let attempt = 1; ; attempt++) {
      let resumedFrom: number
      try {
        resumedFrom = await fetchInto(hub, f, part, (n) => meter.add(f.name, n))
      } catch (error) {
        const retryable =
          error instanceof DistributionError && ['E_HUB_CUT', 'E_HUB_RANGE', 'E_HUB_UNREACHABLE'].includes(error.code)
        const serverError = error instanceof HubHttpError && error.status >= 500
        if ((!retryable && !serverError) || attempt >= attempts) throw error
        options.onEvent?.({ type: 'retry', file: f.name, reason: (error as Error).message })
        await Bun.sleep(Math.min(200 * 2 ** attempt, 5000))
        continue
      }
      if (!matchesEtag(part, f.etag)) {
        rmSync(part, { force: true })
        if (++mismatches > 1) {
          throw new DistributionError(
            'E_HASH_MISMATCH',
            `${f.name} does not match the hash the hub reports (${f.etag}), twice; it was deleted`,
            'the mirror or the network corrupts data: try again later or another HF_ENDPOINT',
          )
        }
        options.onEvent?.({
          type: 'retry',
          file: f.name,
          reason: `${f.name} does not match its hash ${f.etag}: deleted, fetching it once more`,
        })
        continue
      }
      renameSync(part, store)
      options.onEvent?.({ type: 'downloaded', file: f.name, bytes: f.size - resumedFrom, resumedFrom })
      break
    }
  }
  if (!options.dir) linkSnapshot(repoDir, modelDir, remote, storeOf, revision, commit!)
  // the manifest sidecar lets `model list --verify` and shard transfer reuse the hashes checked here
  const known = new Map(remote.filter((f) => isSha256Hex(f.etag)).map((f) => [f.name, f.etag]))
  if (existsSync(join(modelDir, 'config.json')))
    writeManifestSidecar(
      modelDir,
      buildManifest(modelDir, () => {}, known),
    )
  meter.report(remote.at(-1)?.name ?? '')
  return {
    dir: modelDir,
    commit: commit ?? revision,
    files: remote.map((f) => ({ name: f.name, size: f.size })),
    downloadedBytes: meter.bytes,
  }
}

function linkSnapshot(
  repoDir: string,
  snapshot: string,
  files: RemoteFile[],
  storeOf: (f: RemoteFile) => string,
  revision: string,
  commit: string,
): void {
  for (const f of files) {
    const pointer = underRoot(repoDir, join(snapshot, f.name))
    const store = storeOf(f)
    if (store === pointer) continue
    mkdirSync(dirname(pointer), { recursive: true })
    if (existsSync(pointer) || isLink(pointer)) unlinkSync(pointer)
    symlinkSync(relative(dirname(pointer), store), pointer)
  }
  if (revision !== commit) {
    const ref = underRoot(join(repoDir, 'refs'), join(repoDir, 'refs', revision))
    mkdirSync(dirname(ref), { recursive: true })
    writeFileSync(ref, commit)
  }
}

const isLink = (path: string) => {
  try {
    return lstatSync(path).isSymbolicLink()
  } catch {
    return false
  }
}
