/** The fingerprint tensor-parallel ranks compare when they meet: equal for the same model and settings wherever the
 * folder is, different for another model, another quantization, changed weights (a fine-tune of one shape), another
 * config or other settings. */
import { expect, test } from 'bun:test'
import { openSync, readdirSync, readSync, statSync, writeFileSync, writeSync, closeSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { servingFingerprint } from '../../src/model/serving-fingerprint.ts'
import { copyOfModel, synthModel } from '../support/synth-models.ts'

const SETTINGS = { maxBatch: 8, maxLen: 256, tp: 2 }
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

test('the same model and settings give the same 32 bytes, wherever the folder is', async () => {
  const dir = await synthModel('qwen3', 'q4')
  const a = servingFingerprint(dir, SETTINGS)
  expect(a.byteLength).toBe(32)
  expect(hex(servingFingerprint(copyOfModel(dir), { tp: 2, maxLen: 256, maxBatch: 8 }))).toBe(hex(a))
})

test('another model, quantization, config, settings, or one changed weight byte give another', async () => {
  const dir = await synthModel('qwen3', 'q4')
  const base = hex(servingFingerprint(dir, SETTINGS))
  expect(hex(servingFingerprint(await synthModel('qwen3', 'bf16'), SETTINGS))).not.toBe(base)
  expect(hex(servingFingerprint(await synthModel('llama', 'q4'), SETTINGS))).not.toBe(base)
  expect(hex(servingFingerprint(dir, { ...SETTINGS, maxLen: 512 }))).not.toBe(base)
  const config = copyOfModel(dir)
  const json = JSON.parse(readFileSync(join(config, 'config.json'), 'utf8'))
  writeFileSync(join(config, 'config.json'), JSON.stringify({ ...json, rope_theta: 12345 }))
  expect(hex(servingFingerprint(config, SETTINGS))).not.toBe(base)
  // a fine-tune of the same shape: the headers agree, a sampled weight byte does not
  const tuned = copyOfModel(dir)
  const file = join(
    tuned,
    readdirSync(tuned).find((f) => f.endsWith('.safetensors'))!,
  )
  const fd = openSync(file, 'r+')
  const head = Buffer.alloc(8)
  readSync(fd, head, 0, 8, 0)
  const data = 8 + Number(head.readBigUInt64LE(0))
  // inside the middle sample (a byte elsewhere may go unseen: the fingerprint samples, it does not hash everything)
  const middle = data + Math.floor((statSync(file).size - data) / 2) + 100
  const byte = Buffer.alloc(1)
  readSync(fd, byte, 0, 1, middle)
  writeSync(fd, Buffer.of(byte[0]! ^ 0xff), 0, 1, middle)
  closeSync(fd)
  expect(hex(servingFingerprint(tuned, SETTINGS))).not.toBe(base)
})
