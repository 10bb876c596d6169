/** The tensors of a synthetic checkpoint: a deterministic random source, float encodings, MLX affine and mxfp4
 * quantization with per-module overrides, and the safetensors files (sharded, with an index, past a size). */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DbcError } from '../errors.ts'
import type { DType } from '../tensor/backend.ts'
import { quantizeAffine, quantizeMxfp4 } from './quantize.ts'
import { writeSafetensors } from './safetensors.ts'
import type { SynthTensors } from './synth.ts'

export type QuantOverride = { bits: number; groupSize?: number }
export type Entry = { name: string; dtype: DType; shape: number[]; data: Uint8Array }

/** Fast deterministic normal-ish numbers: Irwin–Hall sum of 4 xorshift uniforms, scaled to unit variance. */
function gaussianSource(seed: number) {
  let s = (seed * 2654435761) >>> 0 || 1
  const u = () => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), (s >>> 0) / 4294967296)
  return (n: number, std: number, mean = 0): Float32Array => {
    const out = new Float32Array(n)
    const k = std * Math.sqrt(3) // sum of 4 U(0,1) has variance 1/3
    for (let i = 0; i < n; i++) out[i] = mean + (u() + u() + u() + u() - 2) * k
    return out
  }
}

/** Float values as stored in `dtype` (bf16 rounds to nearest even). */
function encode(values: Float32Array, dtype: DType): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(values.buffer)
  if (dtype === 'f16') return new Uint8Array(Float16Array.from(values).buffer)
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length)
  const out = new Uint16Array(values.length)
  for (let i = 0; i < values.length; i++) out[i] = ((u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16) & 0xffff
  return new Uint8Array(out.buffer)
}

export interface TensorWriterOptions {
  seed: number
  floatDtype: DType
  /** 0: float weights; 4 or 8: MLX affine quantization of every matrix not overridden. */
  bits: number
  groupSize: number
  /** Per-module quantization (false keeps that module in floats). */
  overrides: Record<string, QuantOverride | false>
}

/** The tensors a family's plan writes, in order, and the modules it stored as mxfp4. */
export function tensorWriter(o: TensorWriterOptions): {
  tensors: SynthTensors
  entries: Entry[]
  mxfp4Modules: string[]
} {
  const { floatDtype, bits, groupSize, overrides } = o
  const random = gaussianSource(o.seed + 1)
  const entries: Entry[] = []
  const put = (name: string, values: Float32Array, shape: number[], dtype: DType = floatDtype) =>
    entries.push({ name, dtype, shape, data: encode(values, dtype) })
  const mxfp4Modules: string[] = []
  const count = (shape: number[]) => shape.reduce((a, d) => a * d, 1)
  const tensors: SynthTensors = {
    float: (name, shape, std, mean = 0, dtype = floatDtype) => put(name, random(count(shape), std, mean), shape, dtype),
    matrix(name, rows, cols, std, lead = [], mxfp4 = false) {
      const w = random(count(lead) * rows * cols, std)
      if (mxfp4) {
        if (cols % 32) throw new DbcError('E_SYNTH', `${name}: ${cols} inputs do not quantize to mxfp4 (group 32)`)
        const q = quantizeMxfp4(w, count(lead) * rows, cols)
        const words = new Uint8Array(q.words.buffer)
        entries.push({ name: `${name}.weight`, dtype: 'u32', shape: [...lead, rows, cols / 8], data: words })
        entries.push({ name: `${name}.scales`, dtype: 'u8', shape: [...lead, rows, cols / 32], data: q.scales })
        return void mxfp4Modules.push(name)
      }
      const own = overrides[name]
      const b = own === false ? 0 : own ? own.bits : bits
      const gs = own ? (own.groupSize ?? groupSize) : groupSize
      if (!b) return void put(`${name}.weight`, w, [...lead, rows, cols])
      if (cols % gs || (cols * b) % 32)
        throw new DbcError('E_SYNTH', `${name}: ${cols} inputs do not quantize at ${b} bits, group ${gs}`)
      const q = quantizeAffine(w, count(lead) * rows, cols, gs, b)
      const words = new Uint8Array(q.words.buffer)
      entries.push({ name: `${name}.weight`, dtype: 'u32', shape: [...lead, rows, (cols * b) / 32], data: words })
      put(`${name}.scales`, q.scales, [...lead, rows, cols / gs])
      put(`${name}.biases`, q.biases, [...lead, rows, cols / gs])
    },
  }
  return { tensors, entries, mxfp4Modules }
}

/** model.safetensors, or files of at most `shardBytes` each plus model.safetensors.index.json; returns the file names. */
export async function writeShards(out: string, entries: Entry[], bytes: number, shardBytes: number): Promise<string[]> {
  const shards: Entry[][] = [[]]
  let size = 0
  for (const e of entries) {
    if (size > 0 && size + e.data.byteLength > shardBytes) (shards.push([]), (size = 0))
    shards.at(-1)!.push(e)
    size += e.data.byteLength
  }
  const files = shards.map((_, i) =>
    shards.length === 1
      ? 'model.safetensors'
      : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`,
  )
  for (const [i, shard] of shards.entries()) await writeSafetensors(join(out, files[i]!), shard)
  const weightMap = Object.fromEntries(shards.flatMap((shard, i) => shard.map((e) => [e.name, files[i]])))
  if (shards.length > 1)
    writeFileSync(
      join(out, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }, null, 2),
    )
  return files
}
