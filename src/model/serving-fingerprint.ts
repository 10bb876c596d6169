/** What a tensor-parallel rank is about to serve, in 32 bytes, compared when the ranks meet: ranks holding different
 * checkpoints (or the same one with other serving settings) would add partial sums that do not belong together and
 * answer nonsense without any error. SHA-256 over config.json, each weights file's size, safetensors header (names,
 * shapes, dtypes, offsets) and three 64 KiB samples of its weights, and the settings. Cheap at any model size, and it
 * tells apart models, quantizations and fine-tunes of one shape (their sampled bytes differ); it is not an integrity
 * check of every byte (`model pull` verifies the files it fetches). */
import { createHash } from 'node:crypto'
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { openCheckpoint } from './checkpoint.ts'

const SAMPLE_BYTES = 64 * 1024

export function servingFingerprint(dir: string, settings: Record<string, string | number>): Uint8Array {
  const hash = createHash('sha256')
  hash.update(readFileSync(join(dir, 'config.json')))
  for (const file of openCheckpoint(dir).files) {
    const fd = openSync(file, 'r')
    try {
      const size = fstatSync(fd).size
      const read = (at: number, n: number) => {
        const out = Buffer.alloc(Math.max(0, Math.min(n, size - at)))
        if (out.length) readSync(fd, out, 0, out.length, at)
        return out
      }
      const headerBytes = Number(read(0, 8).readBigUInt64LE(0))
      const data = 8 + headerBytes
      hash.update(`${file.slice(dir.length)}\0${size}\0`)
      hash.update(read(8, headerBytes))
      for (const at of [data, data + Math.floor((size - data) / 2), size - SAMPLE_BYTES])
        hash.update(read(Math.max(data, at), SAMPLE_BYTES))
    } finally {
      closeSync(fd)
    }
  }
  hash.update(JSON.stringify(Object.entries(settings).sort(([a], [b]) => a.localeCompare(b))))
  return new Uint8Array(hash.digest())
}
