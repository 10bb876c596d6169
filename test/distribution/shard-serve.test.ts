/** The head's side of shard transfer and the stage's throttle, over a real sealed link inside one process: the head
 * serves only files its manifest lists, within their sizes; a throttled stage stays under its byte rate. */
import { afterAll, expect, test } from 'bun:test'
import { consola } from 'consola'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildManifest } from '../../src/distribution/manifest.ts'
import type { TransferProgress } from '../../src/distribution/progress.ts'
import { receiveShards, serveShards } from '../../src/distribution/shard-transfer.ts'
import { decodeMessage, encodeMessage, FrameType } from '../../src/link/frames.ts'
import { connectLink, listenLinks, type SealedLink } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from '../support/identities.ts'
import { synthModel } from '../support/synth-models.ts'

/** Every folder this file makes lives under one scratch folder, removed at the end. */
const scratch = mkdtempSync(join(tmpdir(), 'dbc-dist-test-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

consola.level = 1
const model = await synthModel('qwen3', 'q4')
const manifest = buildManifest(model)
const authorize = pins({ head: testIdentity(1), stage: testIdentity(2) })
const listener = listenLinks(
  '127.0.0.1',
  0,
  { identity: testIdentity(1), serial: 'head', clusterId: 'c', authorize },
  (link) => serveShards(link, model, manifest, testIdentity(1)),
)
afterAll(() => listener.stop(true))
const connect = () =>
  connectLink('127.0.0.1', listener.port, { identity: testIdentity(2), serial: 'stage', clusterId: 'c', authorize })

/** One raw chunk request (u64 offset | u32 length | name inside a fileChunk frame) and the head's answer. */
async function ask(link: SealedLink, offset: number, length: number, name: string, requestId: bigint) {
  const nameBytes = new TextEncoder().encode(name)
  const body = new Uint8Array(4 + nameBytes.byteLength)
  new DataView(body.buffer).setUint32(0, length, true)
  body.set(nameBytes, 4)
  const { type, payload } = encodeMessage({ type: 'fileChunk', offset: BigInt(offset), bytes: body })
  const answer = link.nextFrame((f) => f.requestId === requestId, 5000)
  link.send(type, payload, { requestId })
  const f = await answer
  return decodeMessage(f.type, f.payload)
}

test('the head serves listed files within their size and refuses anything else with a coded error', async () => {
  const link = await connect()
  const config = manifest.files.find((f) => f.name === 'config.json')!
  const ok = await ask(link, 2, 10, 'config.json', 1n)
  expect(ok.type).toBe('fileChunk')
  expect(new TextDecoder().decode((ok as { bytes: Uint8Array }).bytes)).toBe(
    (await Bun.file(join(model, 'config.json')).text()).slice(2, 12),
  )
  const refusals = await Promise.all([
    ask(link, 0, 10, '../../etc/passwd', 2n),
    ask(link, 0, 10, '.dbcluster-manifest.json', 3n),
    ask(link, config.size - 5, 10, 'config.json', 4n),
    ask(link, 0, 0, 'config.json', 5n),
    ask(link, 0, 64 * 1024 * 1024, 'config.json', 6n),
  ])
  expect(refusals.map((m) => (m.type === 'error' ? m.error.code : m.type))).toEqual([
    'E_FILE_UNKNOWN',
    'E_FILE_UNKNOWN',
    'E_FILE_RANGE',
    'E_FILE_RANGE',
    'E_FILE_RANGE',
  ])
  link.close()
})

test('a throttled stage stays under its byte rate', async () => {
  const link = await connect()
  const rate = 8 * 1024 * 1024
  let last: TransferProgress | null = null
  const t0 = performance.now()
  const result = await receiveShards(link, {
    dir: mkdtempSync(join(scratch, 'dbc-throttle-')),
    lo: 0,
    hi: 3,
    first: true,
    last: true,
    headKey: testIdentity(1).publicKey,
    chunkBytes: 512 * 1024,
    throttleBytesPerSecond: rate,
    onProgress: (p) => (last = p),
  })
  const seconds = (performance.now() - t0) / 1000
  expect(result.bytes).toBe(manifest.files.reduce((a, f) => a + f.size, 0))
  // the first window goes out at once; after that the requests follow the rate
  expect(seconds).toBeGreaterThan((result.bytes - 4 * 512 * 1024) / rate)
  expect(last!.rate).toBeLessThan(rate * 1.3)
  expect(last!.bytes).toBe(result.bytes)
  link.close()
}, 30_000)
