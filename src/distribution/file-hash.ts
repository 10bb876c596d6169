/** Content hashes of model files: SHA-256 (LFS oids, manifests) and git's blob SHA-1 (the hub's ETag of small files). */
import { openSync, readSync, closeSync, fstatSync } from 'node:fs'

const READ_BYTES = 4 * 1024 * 1024

/** Feeds a file's bytes, from `from` to its end, to `update` in 4 MiB reads (memory stays flat for any file size). */
export function readFileInChunks(path: string, update: (bytes: Uint8Array) => void, from = 0): number {
  const fd = openSync(path, 'r')
  try {
    const size = fstatSync(fd).size
    const buffer = new Uint8Array(Math.min(READ_BYTES, Math.max(1, size - from)))
    let at = from
    while (at < size) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.byteLength, size - at), at)
      if (n <= 0) break
      update(buffer.subarray(0, n))
      at += n
    }
    return at - from
  } finally {
    closeSync(fd)
  }
}

/** SHA-256 of a whole file, lowercase hex. */
export function sha256File(path: string, onBytes?: (n: number) => void): string {
  const hasher = new Bun.CryptoHasher('sha256')
  readFileInChunks(path, (b) => {
    hasher.update(b)
    onBytes?.(b.byteLength)
  })
  return hasher.digest('hex')
}

/** git's object id of a file: SHA-1 over "blob <size>\0" and the content (what the hub sends as the ETag of a non-LFS file). */
export function gitBlobSha1File(path: string): string {
  const hasher = new Bun.CryptoHasher('sha1')
  const fd = openSync(path, 'r')
  const size = fstatSync(fd).size
  closeSync(fd)
  hasher.update(`blob ${size}\0`)
  readFileInChunks(path, (b) => hasher.update(b))
  return hasher.digest('hex')
}

export const isSha256Hex = (s: string) => /^[0-9a-f]{64}$/.test(s)
export const isSha1Hex = (s: string) => /^[0-9a-f]{40}$/.test(s)
