/** A head process for shard-transfer tests: serves MODEL_DIR over sealed links as `head` (test identity 1).
 * TAMPER=name flips a byte of that file after the manifest was made; SIGN_SEED signs the manifest with another key;
 * HUGE=1 adds a signed entry for a file far larger than any disk. */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildManifest } from '../../src/distribution/manifest.ts'
import { serveShards } from '../../src/distribution/shard-transfer.ts'
import { listenLinks } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from './identities.ts'

let dir = process.env.MODEL_DIR!
const manifest = buildManifest(dir)
if (process.env.TAMPER) {
  const copy = mkdtempSync(join(tmpdir(), 'dbc-head-'))
  cpSync(dir, copy, { recursive: true })
  const bytes = readFileSync(join(copy, process.env.TAMPER))
  bytes[bytes.byteLength >> 1]! ^= 0x01
  writeFileSync(join(copy, process.env.TAMPER), bytes)
  dir = copy
  process.on('SIGTERM', () => {
    rmSync(copy, { recursive: true, force: true })
    process.exit(0)
  })
}
if (process.env.HUGE) manifest.files.push({ name: 'huge.json', size: 2 ** 50, sha256: '0'.repeat(64) })
const signer = testIdentity(Number(process.env.SIGN_SEED ?? 1))
const listener = listenLinks(
  '127.0.0.1',
  0,
  {
    identity: testIdentity(1),
    serial: 'head',
    clusterId: 'c',
    authorize: pins({ head: testIdentity(1), stage: testIdentity(2) }),
  },
  (link) => serveShards(link, dir, manifest, signer, (e) => console.log(JSON.stringify(e))),
)
console.log(`listening ${listener.port}`)
