/** safetensors: an 8-byte little-endian header length, a JSON header (name → dtype, shape, data_offsets), then raw data.
 * Headers are validated before anything is trusted; data is memory-mapped, so loading a layer range touches only its bytes. */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import type { DType } from '../tensor/backend.ts'
import { CheckpointError } from './errors.ts'

export interface TensorEntry {
  name: string
  dtype: DType
  shape: number[]
  /** Absolute byte range in the file. */
  begin: number
  end: number
  file: string
}

/** Checkpoint dtypes a model may hold: float weights, MLX-packed u32 words and mxfp4's U8 scales. Anything else (F64,
 * I8…) is refused with the tensor's name; each parameter's dtype is checked again when it is claimed. */
const DTYPES: Record<string, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16', U32: 'u32', U8: 'u8' }
const NAMES = Object.fromEntries(Object.entries(DTYPES).map(([name, dtype]) => [dtype, name])) as Partial<
  Record<DType, string>
>
const SIZES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, u32: 4, i32: 4, u8: 1 }
const MAX_HEADER = 100 * 1024 * 1024

/** Reads and validates the header of one file; the data is not read. */
export function readSafetensorsHeader(file: string): { entries: TensorEntry[]; metadata: Record<string, string> } {
  const fd = openSync(file, 'r')
  try {
    const size = fstatSync(fd).size
    if (size < 8)
      throw new CheckpointError(
        'E_CKPT_TRUNCATED',
        `${file} is ${size} bytes: too short to be safetensors`,
        'download the file again',
      )
    const lenBuf = Buffer.alloc(8)
    readSync(fd, lenBuf, 0, 8, 0)
    const headerLen = Number(lenBuf.readBigUInt64LE(0))
    if (headerLen < 2 || headerLen > MAX_HEADER || 8 + headerLen > size) {
      throw new CheckpointError(
        'E_CKPT_HEADER',
        `${file} has a bad header length ${headerLen} (file is ${size} bytes)`,
        'the file is corrupt or truncated; download it again',
      )
    }
    const headerBuf = Buffer.alloc(headerLen)
    readSync(fd, headerBuf, 0, headerLen, 8)
    let header: Record<string, unknown>
    try {
      header = JSON.parse(headerBuf.toString('utf8'))
    } catch {
      throw new CheckpointError(
        'E_CKPT_HEADER',
        `${file} has a header that is not JSON`,
        'the file is corrupt; download it again',
      )
    }
    if (!header || typeof header !== 'object' || Array.isArray(header))
      throw new CheckpointError('E_CKPT_HEADER', `${file}: header is not an object`)
    const dataStart = 8 + headerLen
    const entries: TensorEntry[] = []
    let metadata: Record<string, string> = {}
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') {
        metadata = (raw ?? {}) as Record<string, string>
        continue
      }
      const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
      const dtype = typeof info?.dtype === 'string' ? DTYPES[info.dtype] : undefined
      if (!dtype) {
        throw new CheckpointError(
          'E_CKPT_DTYPE',
          `${file}: tensor ${name} has unsupported dtype ${String(info?.dtype)}`,
          `supported: ${Object.keys(DTYPES).join(', ')}`,
        )
      }
      const shape = info.shape
      const offsets = info.data_offsets
      if (
        !Array.isArray(shape) ||
        !shape.every((d) => Number.isInteger(d) && d >= 0) ||
        !Array.isArray(offsets) ||
        offsets.length !== 2
      ) {
        throw new CheckpointError('E_CKPT_HEADER', `${file}: tensor ${name} has a malformed shape or data_offsets`)
      }
      const [b, e] = offsets as number[]
      const bytes = (shape as number[]).reduce((a, d) => a * d, 1) * SIZES[dtype]
      if (!Number.isInteger(b) || !Number.isInteger(e) || b! < 0 || e! < b! || e! - b! !== bytes) {
        throw new CheckpointError(
          'E_CKPT_HEADER',
          `${file}: tensor ${name} spans [${b}, ${e}) but ${dtype}[${(shape as number[]).join(', ')}] needs ${bytes} bytes`,
        )
      }
      if (dataStart + e! > size) {
        throw new CheckpointError(
          'E_CKPT_TRUNCATED',
          `${file} is truncated: tensor ${name} ends at byte ${dataStart + e!} of ${size}`,
          'download the file again',
        )
      }
      entries.push({ name, dtype, shape: shape as number[], begin: dataStart + b!, end: dataStart + e!, file })
    }
    return { entries, metadata }
  } finally {
    closeSync(fd)
  }
}

const mapped = new Map<string, Uint8Array>()

/** The bytes of one tensor, from a memory map of its file (mapped once per file, on first use). */
export function tensorBytes(entry: TensorEntry): Uint8Array {
  let map = mapped.get(entry.file)
  if (!map) {
    map = Bun.mmap(entry.file, { shared: false })
    mapped.set(entry.file, map)
  }
  return map.subarray(entry.begin, entry.end)
}

/** Writes a safetensors file (used by `model synth` and tests). Tensors are laid out in the given order. */
export async function writeSafetensors(
  file: string,
  tensors: { name: string; dtype: DType; shape: number[]; data: Uint8Array }[],
  metadata: Record<string, string> = { format: 'mlx' },
): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata }
  let offset = 0
  for (const t of tensors) {
    const name = NAMES[t.dtype]
    if (!name)
      throw new CheckpointError(
        'E_CKPT_DTYPE',
        `cannot write tensor ${t.name} as ${t.dtype}`,
        `supported: ${Object.keys(DTYPES).join(', ')}`,
      )
    header[t.name] = { dtype: name, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] }
    offset += t.data.byteLength
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - (json.length % 8)) % 8)
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)))
  await Bun.write(file, new Blob([len, json, ...tensors.map((t) => t.data as Uint8Array<ArrayBuffer>)]))
}
