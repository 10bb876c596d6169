/** safetensors: the header is validated before any data is trusted; tensors are memory-mapped views of the file. */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readSafetensorsHeader, tensorBytes, writeSafetensors } from '../../src/model/safetensors.ts'

const dir = mkdtempSync(join(tmpdir(), 'dbc-st-'))

function rawFile(name: string, header: unknown, dataBytes = 0): string {
  const json = Buffer.from(JSON.stringify(header))
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  const file = join(dir, name)
  writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(dataBytes)]))
  return file
}

describe('safetensors', () => {
  test('write then read: names, dtypes, shapes, metadata and bytes survive; the header is padded to 8 bytes', async () => {
    const file = join(dir, 'a.safetensors')
    const f32 = Float32Array.of(1.5, -2, 3.25)
    const words = Uint32Array.of(0x76543210, 0xdeadbeef)
    await writeSafetensors(file, [
      { name: 'x.weight', dtype: 'f32', shape: [3], data: new Uint8Array(f32.buffer) },
      { name: 'q.weight', dtype: 'u32', shape: [1, 2], data: new Uint8Array(words.buffer) },
      { name: 'h.weight', dtype: 'bf16', shape: [2, 1], data: Uint8Array.of(0x80, 0x3f, 0x00, 0xc0) },
    ])
    const bytes = readFileSync(file)
    expect(Number(bytes.readBigUInt64LE(0)) % 8).toBe(0)
    const { entries, metadata } = readSafetensorsHeader(file)
    expect(metadata).toEqual({ format: 'mlx' })
    expect(entries.map((e) => [e.name, e.dtype, e.shape])).toEqual([
      ['x.weight', 'f32', [3]],
      ['q.weight', 'u32', [1, 2]],
      ['h.weight', 'bf16', [2, 1]],
    ])
    const x = tensorBytes(entries[0]!)
    expect(Array.from(new Float32Array(x.slice().buffer))).toEqual([1.5, -2, 3.25])
    expect(Array.from(new Uint32Array(tensorBytes(entries[1]!).slice().buffer))).toEqual([0x76543210, 0xdeadbeef])
    expect(Array.from(tensorBytes(entries[2]!))).toEqual([0x80, 0x3f, 0x00, 0xc0])
  })

  test('the writer refuses dtypes a checkpoint may not hold', async () => {
    await expect(
      writeSafetensors(join(dir, 'w.safetensors'), [{ name: 'i', dtype: 'i32', shape: [1], data: new Uint8Array(4) }]),
    ).rejects.toThrow(/cannot write tensor i as i32/)
  })

  test('an empty shape is a scalar; a zero dimension holds no bytes', () => {
    const file = rawFile(
      's.safetensors',
      {
        s: { dtype: 'F32', shape: [], data_offsets: [0, 4] },
        z: { dtype: 'F16', shape: [0, 3], data_offsets: [4, 4] },
      },
      4,
    )
    expect(readSafetensorsHeader(file).entries.map((e) => e.end - e.begin)).toEqual([4, 0])
  })

  test('malformed headers are refused with the reason', () => {
    expect(() =>
      readSafetensorsHeader(rawFile('d.safetensors', { t: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, 8)),
    ).toThrow(/tensor t has unsupported dtype F64/)
    try {
      readSafetensorsHeader(rawFile('i8.safetensors', { t: { dtype: 'I8', shape: [1], data_offsets: [0, 1] } }, 1))
      throw new Error('I8 was accepted')
    } catch (error) {
      expect((error as Error).message).toMatch(/tensor t has unsupported dtype I8/)
      expect(error).toMatchObject({ code: 'E_CKPT_DTYPE', hint: 'supported: F32, F16, BF16, U32, U8' })
    }
    // U8 (mxfp4's E8M0 scales) is read; a parameter still refuses it unless it is such a scale
    expect(
      readSafetensorsHeader(rawFile('u8.safetensors', { t: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, 1))
        .entries[0]!.dtype,
    ).toBe('u8')
    expect(() =>
      readSafetensorsHeader(rawFile('o.safetensors', { t: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 8)),
    ).toThrow(/spans \[0, 4\) but f32\[2\] needs 8 bytes/)
    expect(() =>
      readSafetensorsHeader(rawFile('n.safetensors', { t: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 8)),
    ).toThrow(/malformed shape/)
    expect(() => readSafetensorsHeader(rawFile('a.safetensors', [1, 2]))).toThrow(/header is not an object/)
    expect(() =>
      readSafetensorsHeader(rawFile('t.safetensors', { t: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8)),
    ).toThrow(/truncated: tensor t ends at byte/)
    const short = join(dir, 'short.safetensors')
    writeFileSync(short, Buffer.from([1, 2, 3]))
    expect(() => readSafetensorsHeader(short)).toThrow(/too short to be safetensors/)
  })
})
