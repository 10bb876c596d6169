/** A local stand-in for the Hugging Face hub: serves a model folder in the hub's URL layout (the file-list API, resolve
 * URLs that redirect LFS files to a CDN path with X-Linked-Etag / X-Linked-Size, Range requests), and can cut a
 * response midway or corrupt a file, to test what the real hub and networks do. */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { listModelFiles } from '../../src/distribution/manifest.ts'

export interface HubRequest {
  method: string
  host: string
  path: string
  range: string | null
  authorization: string | null
}

export interface FakeHub {
  url: string
  /** The same server as `localhost`: another origin, standing in for the hub's CDN. */
  cdnUrl: string
  commit: string
  requests: HubRequest[]
  /** Serve only this many bytes of the file's next GET, then end the response. */
  cutNext: Map<string, number>
  /** Flip a byte of the file in this many of its next GETs. */
  corruptNext: Map<string, number>
  /** When set, the hub (not its CDN) answers 401 to requests without this bearer token, as for a gated repository. */
  requireToken: string | null
  stop(): void
}

const sha = (algo: string, ...parts: (string | Uint8Array)[]) => {
  const h = createHash(algo)
  for (const p of parts) h.update(p)
  return h.digest('hex')
}

export function serveFakeHub(dir: string, repo: string, commit = 'c0ffee'.padEnd(40, '0')): FakeHub {
  const files = new Map(listModelFiles(dir).map((name) => [name, new Uint8Array(readFileSync(join(dir, name)))]))
  const isLfs = (name: string) => name.endsWith('.safetensors') || name === 'tokenizer.json'
  const hub: FakeHub = {
    url: '',
    cdnUrl: '',
    commit,
    requests: [],
    cutNext: new Map(),
    corruptNext: new Map(),
    requireToken: null,
    stop: () => server.stop(true),
  }

  const body = (name: string, req: Request, headers: Record<string, string>): Response => {
    let bytes = files.get(name)!
    const range = req.headers.get('range')
    let status = 200
    const h = new Headers({ ...headers, 'accept-ranges': 'bytes' })
    if (range) {
      const from = Number(/^bytes=(\d+)-$/.exec(range)?.[1] ?? NaN)
      if (!(from < bytes.byteLength))
        return new Response(null, { status: 416, headers: { 'content-range': `bytes */${bytes.byteLength}` } })
      h.set('content-range', `bytes ${from}-${bytes.byteLength - 1}/${bytes.byteLength}`)
      bytes = bytes.subarray(from)
      status = 206
    }
    if (req.method === 'HEAD')
      return (h.set('content-length', String(bytes.byteLength)), new Response(null, { status, headers: h }))
    const corrupt = hub.corruptNext.get(name) ?? 0
    if (corrupt > 0) {
      hub.corruptNext.set(name, corrupt - 1)
      bytes = bytes.slice()
      bytes[bytes.byteLength >> 1]! ^= 0xff
    }
    const cut = hub.cutNext.get(name)
    if (cut !== undefined) {
      hub.cutNext.delete(name)
      const head = bytes.slice(0, cut)
      return new Response(new ReadableStream({ start: (c) => (c.enqueue(head), c.close()) }), { status, headers: h })
    }
    return new Response(bytes, { status, headers: h })
  }

  const server = Bun.serve({
    port: 0,
    fetch(req) {
      const url = new URL(req.url)
      const path = decodeURIComponent(url.pathname)
      hub.requests.push({
        method: req.method,
        host: url.host,
        path,
        range: req.headers.get('range'),
        authorization: req.headers.get('authorization'),
      })
      if (
        hub.requireToken &&
        !path.startsWith('/cdn/') &&
        req.headers.get('authorization') !== `Bearer ${hub.requireToken}`
      )
        return new Response('Access to model is restricted', { status: 401 })
      if (path === `/api/models/${repo}/revision/main` || path === `/api/models/${repo}/revision/${commit}`) {
        return Response.json({ id: repo, sha: commit, siblings: [...files.keys()].map((rfilename) => ({ rfilename })) })
      }
      const resolve = new RegExp(`^/${repo}/resolve/(main|${commit})/(.+)$`).exec(path)
      if (resolve) {
        const name = resolve[2]!
        const bytes = files.get(name)
        if (!bytes) return new Response('Entry not found', { status: 404 })
        if (isLfs(name)) {
          const oid = sha('sha256', bytes)
          // the real hub redirects LFS files to a CDN on another origin: here the same server under another host name
          return new Response(null, {
            status: 302,
            headers: {
              location: `${hub.cdnUrl}/cdn/${oid}/${name}`,
              'x-linked-etag': `"${oid}"`,
              'x-linked-size': String(bytes.byteLength),
              'x-repo-commit': commit,
            },
          })
        }
        return body(name, req, {
          etag: `"${sha('sha1', `blob ${bytes.byteLength}\0`, bytes)}"`,
          'x-repo-commit': commit,
        })
      }
      const cdn = /^\/cdn\/[0-9a-f]{64}\/(.+)$/.exec(path)
      if (cdn && files.has(cdn[1]!)) return body(cdn[1]!, req, { etag: `"${sha('sha256', files.get(cdn[1]!)!)}"` })
      return new Response('Repository not found', { status: 404 })
    },
  })
  hub.url = `http://127.0.0.1:${server.port}`
  hub.cdnUrl = `http://localhost:${server.port}`
  return hub
}
