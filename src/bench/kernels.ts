/** `bench kernels`: memory read bandwidth and matrix-vector throughput at model-like shapes, as a ratio to that bandwidth. */
import type { Backend, QuantizedMatrix, Tensor } from '../tensor/backend.ts'
import { measureMemoryReadGbps } from '../tensor/memory-bandwidth.ts'
import { median, timeRuns } from './stats.ts'

export type KernelDtype = 'f32' | 'bf16' | 'q4' | 'q8'

export interface GemvResult {
  dtype: KernelDtype
  rows: number
  cols: number
  batch: number
  gbps: number
  roofline_ratio: number
  median_us: number
  /** 2 · batch · rows · cols per second: what counts once a batch (a prompt's rows) makes the product compute-bound */
  gflops: number
}

export interface KernelBenchResult {
  threads: number
  memory_read_gbps: number
  memory_read_gbps_one_thread: number
  gemv: GemvResult[]
}

export interface KernelBenchOptions {
  shapes?: [rows: number, cols: number][]
  dtypes?: KernelDtype[]
  batches?: number[]
  /** Matrices rotated per config total at least this many bytes, so the cache cannot hold them (L3 is 32 MB here). */
  rotationBytes?: number
  groupSize?: number
  onProgress?: (line: string) => void
}

/** Last-level cache size from sysfs (Linux), so rotation can exceed it; 32 MiB when unknown. */
export function lastLevelCacheBytes(): number {
  try {
    const text = require('node:fs')
      .readFileSync('/sys/devices/system/cpu/cpu0/cache/index3/size', 'utf8')
      .trim() as string
    const m = /^(\d+)([KMG]?)/.exec(text)
    if (m) return Number(m[1]) * ({ '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 } as Record<string, number>)[m[2]!]!
  } catch {}
  return 32 * 1024 * 1024
}

/** One pool of deterministic bytes that every weight borrows a window of: bf16/f32 patterns with normal exponents
 * (no NaN, no denormals), so timing does not depend on values, and filling happens once. */
function makePool(bytes: number): Uint32Array {
  const words = new Uint32Array(Math.ceil(bytes / 4))
  let s = 0x9e3779b9
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    words[i] = (0x3c00 | (s & 0x807f) | ((0x3c00 | ((s >>> 16) & 0x807f)) << 16)) >>> 0
  }
  return words
}

function makeWeight(
  backend: Backend,
  pool: Uint8Array,
  offset: number,
  dtype: KernelDtype,
  rows: number,
  cols: number,
  groupSize: number,
) {
  const take = (bytes: number) => {
    const view = pool.subarray(offset, offset + bytes)
    offset += bytes
    return view
  }
  if (dtype === 'f32' || dtype === 'bf16') {
    const bytes = rows * cols * (dtype === 'f32' ? 4 : 2)
    const weight = backend.fromBytes(take(bytes), [rows, cols], dtype, { borrow: true })
    return { apply: (x: Tensor) => backend.linear(x, weight), bytes, end: offset, tensors: [weight] }
  }
  const bits = dtype === 'q4' ? 4 : 8
  const wordBytes = (rows * cols * bits) / 8
  const groupBytes = (rows * cols * 2) / groupSize
  const matrix: QuantizedMatrix = {
    weight: backend.fromBytes(take(wordBytes), [rows, (cols * bits) / 32], 'u32', { borrow: true }),
    scales: backend.fromBytes(take(groupBytes), [rows, cols / groupSize], 'bf16', { borrow: true }),
    biases: backend.fromBytes(take(groupBytes), [rows, cols / groupSize], 'bf16', { borrow: true }),
    groupSize,
    bits,
  }
  return {
    apply: (x: Tensor) => backend.quantizedLinear(x, matrix),
    bytes: wordBytes + 2 * groupBytes,
    end: offset,
    tensors: [matrix.weight, matrix.scales, matrix.biases!],
  }
}

export function runKernelBench(backend: Backend, options: KernelBenchOptions = {}): KernelBenchResult {
  const {
    shapes = [
      [4096, 4096],
      [4096, 14336],
    ],
    dtypes = ['f32', 'bf16', 'q4', 'q8'],
    batches = [1, 8],
    rotationBytes = Math.min(2 * 1024 ** 3, Math.max(256 * 1024 ** 2, 2 * lastLevelCacheBytes())),
    groupSize = 64,
    onProgress = () => {},
  } = options
  onProgress('measuring memory read bandwidth')
  const memory = measureMemoryReadGbps()
  const memoryOne = measureMemoryReadGbps({ threads: 1 })
  const gemv: GemvResult[] = []
  const largest = Math.max(...shapes.map(([r, c]) => r * c * 4))
  onProgress(
    `preparing ${Math.round((rotationBytes + largest) / 1024 ** 2)} MiB of weights (rotation exceeds the last-level cache)`,
  )
  const pool = new Uint8Array(makePool(rotationBytes + largest).buffer)
  for (const [rows, cols] of shapes)
    for (const dtype of dtypes) {
      const first = makeWeight(backend, pool, 0, dtype, rows, cols, groupSize)
      const weights = [first]
      while (weights.at(-1)!.end + first.bytes <= pool.byteLength && weights.length * first.bytes < rotationBytes) {
        weights.push(makeWeight(backend, pool, weights.at(-1)!.end, dtype, rows, cols, groupSize))
      }
      const count = weights.length
      for (const batch of batches) {
        onProgress(`gemv ${dtype} ${rows}x${cols} batch ${batch} (${count} matrices rotated)`)
        const x = backend.fromFloat32(
          Float32Array.from({ length: batch * cols }, (_, i) => Math.sin(i)),
          [batch, cols],
        )
        const samples = timeRuns((run) => backend.free(weights[run % count]!.apply(x)), {
          warmup: count,
          minRuns: 3 * count,
          minSeconds: 0.5,
        })
        backend.free(x)
        const seconds = median(samples)
        const gbps = first.bytes / seconds / 1e9
        gemv.push({
          dtype,
          rows,
          cols,
          batch,
          gbps: round(gbps),
          roofline_ratio: round(gbps / memory, 3),
          median_us: round(seconds * 1e6, 1),
          gflops: round((2 * batch * rows * cols) / seconds / 1e9, 1),
        })
      }
      for (const w of weights) for (const t of w.tensors) backend.free(t)
    }
  return {
    threads: backend.threads,
    memory_read_gbps: round(memory),
    memory_read_gbps_one_thread: round(memoryOne),
    gemv,
  }
}

const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits
