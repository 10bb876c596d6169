/** The manifest: hashes and tensor→file map of a real (synthetic) checkpoint, which files each stage needs, and the
 * signature check a stage runs against the head's pinned key. */
import { expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  buildManifest,
  encodeSignedManifest,
  filesForStage,
  manifestFor,
  MANIFEST_SIDECAR,
  signManifest,
  verifySignedManifest,
  type Manifest,
} from '../../src/distribution/manifest.ts'
import { testIdentity } from '../support/identities.ts'
import { copyOfModel, synthModel } from '../support/synth-models.ts'

// 3 layers in several files: 40 KB shards put the embedding alone in the first and a layer or so in each of the others
const sharded = () =>
  synthModel('llama', 'f32', { vocab: 151936, hidden: 64, shardBytes: 80_000, tieEmbeddings: false })
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')

test('every file has its size and SHA-256; weight files list their tensors and layers (from the index)', async () => {
  const dir = await sharded()
  const m = buildManifest(dir)
  expect(m.numLayers).toBe(3)
  expect(m.tieWordEmbeddings).toBe(false)
  const names = m.files.map((f) => f.name)
  expect(names).toContain('config.json')
  expect(names).toContain('tokenizer.json')
  expect(names).toContain('model.safetensors.index.json')
  for (const f of m.files) {
    expect(f.sha256).toBe(sha256(join(dir, f.name)))
    expect(f.size).toBe(readFileSync(join(dir, f.name)).byteLength)
  }
  const weights = m.files.filter((f) => f.name.endsWith('.safetensors'))
  expect(weights.length).toBeGreaterThan(2)
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')).weight_map as Record<
    string,
    string
  >
  for (const w of weights) {
    expect(w.tensors).toEqual(
      Object.keys(index)
        .filter((t) => index[t] === w.name)
        .sort(),
    )
    expect(w.layers).toEqual(
      [
        ...new Set(
          w.tensors!.flatMap((t) => (/layers\.(\d+)\./.exec(t) ? [Number(/layers\.(\d+)\./.exec(t)![1])] : [])),
        ),
      ].sort(),
    )
  }
  expect(
    weights
      .flatMap((w) => w.layers!)
      .filter((l, i, a) => a.indexOf(l) === i)
      .sort(),
  ).toEqual([0, 1, 2])
})

test('without an index, tensors come from the safetensors header', async () => {
  const dir = await synthModel('qwen3', 'q4')
  const m = buildManifest(dir)
  const weights = m.files.filter((f) => f.name.endsWith('.safetensors'))
  expect(weights.map((w) => w.name)).toEqual(['model.safetensors'])
  expect(weights[0]!.tensors).toContain('model.layers.2.mlp.down_proj.scales')
  expect(weights[0]!.layers).toEqual([0, 1, 2])
  expect(m.tieWordEmbeddings).toBe(true)
})

test('a stage gets the files of its layers, embedding on the first, norm and lm_head on the last, and the shared files', async () => {
  const dir = await sharded()
  const m = buildManifest(dir)
  const holders = (pred: (t: string) => boolean) => m.files.filter((f) => f.tensors?.some(pred)).map((f) => f.name)
  const shared = m.files.filter((f) => !f.name.endsWith('.safetensors')).map((f) => f.name)
  for (const range of [
    { lo: 0, hi: 1, first: true, last: false },
    { lo: 1, hi: 2, first: false, last: false },
    { lo: 2, hi: 3, first: false, last: true },
    { lo: 0, hi: 3, first: true, last: true },
  ]) {
    const expected = new Set([
      ...shared,
      ...holders((t) => {
        const l = /layers\.(\d+)\./.exec(t)
        if (l) return Number(l[1]) >= range.lo && Number(l[1]) < range.hi
        if (t.startsWith('model.embed_tokens.')) return range.first
        return range.last && (t.startsWith('model.norm.') || t.startsWith('lm_head.'))
      }),
    ])
    expect(new Set(filesForStage(m, range).map((f) => f.name))).toEqual(expected)
  }
  // the middle stage never gets the embedding's file, which holds nothing else
  const embedFile = holders((t) => t.startsWith('model.embed_tokens.'))[0]!
  expect(filesForStage(m, { lo: 1, hi: 2, first: false, last: false }).map((f) => f.name)).not.toContain(embedFile)
  expect(() => filesForStage(m, { lo: 2, hi: 4, first: false, last: true })).toThrow(
    "layer range [2, 4) is not inside the model's 3 layers",
  )
})

test('a tied lm_head puts the embedding on the last stage as well', async () => {
  const m = buildManifest(await synthModel('qwen3', 'f32', { shardBytes: 80_000 }))
  const embedFile = m.files.find((f) => f.tensors?.some((t) => t.startsWith('model.embed_tokens.')))!.name
  expect(filesForStage(m, { lo: 2, hi: 3, first: false, last: true }).map((f) => f.name)).toContain(embedFile)
  expect(filesForStage(m, { lo: 1, hi: 2, first: false, last: false }).map((f) => f.name)).not.toContain(embedFile)
})

test('signed by the head: verifies with its key, refuses another key, a changed byte, or a name leaving the folder', async () => {
  const m = buildManifest(await synthModel('qwen3', 'q4'))
  const head = testIdentity(1)
  const bytes = encodeSignedManifest(await signManifest(m, head))
  expect(verifySignedManifest(bytes, head.publicKey)).toEqual(m)
  expect(() => verifySignedManifest(bytes, testIdentity(2).publicKey)).toThrow(
    /signed by .* not by the head's pinned key/,
  )
  const tampered = new TextDecoder().decode(bytes).replace(m.files[0]!.sha256, '0'.repeat(64))
  expect(() => verifySignedManifest(new TextEncoder().encode(tampered), head.publicKey)).toThrow(
    "the manifest's signature does not verify",
  )
  // a forged key field cannot help: the key must be the pinned one
  const other = encodeSignedManifest(await signManifest({ ...m, numLayers: 9 }, testIdentity(3)))
  expect(() => verifySignedManifest(other, head.publicKey)).toThrow(/not by the head's pinned key/)
  const evil: Manifest = { ...m, files: [{ name: '../../etc/passwd', size: 1, sha256: '0'.repeat(64) }] }
  const evilBytes = encodeSignedManifest(await signManifest(evil, head))
  expect(() => verifySignedManifest(evilBytes, head.publicKey)).toThrow('is not a plain relative path')
  expect(() => verifySignedManifest(new TextEncoder().encode('nope'), head.publicKey)).toThrow('not JSON')
})

test('manifestFor reuses the sidecar until a file changes, then hashes again', async () => {
  const dir = copyOfModel(await synthModel('qwen3', 'q4'))
  const first = manifestFor(dir)
  let hashed: string[] = []
  expect(manifestFor(dir, (f) => hashed.push(f))).toEqual(first)
  expect(hashed).toEqual([])
  writeFileSync(join(dir, 'generation_config.json'), '{"eos_token_id": 1}')
  utimesSync(join(dir, 'generation_config.json'), new Date(), new Date(Date.now() + 5000))
  const second = manifestFor(dir, (f) => hashed.push(f))
  expect(hashed.length).toBeGreaterThan(0)
  expect(second.files.find((f) => f.name === 'generation_config.json')!.sha256).toBe(
    sha256(join(dir, 'generation_config.json')),
  )
  expect(second.files.map((f) => f.name)).not.toContain(MANIFEST_SIDECAR)
  rmSync(dir, { recursive: true })
})
