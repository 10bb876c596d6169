/** Writes test/vectors/link-frames.json from docs/protocol.md §Sealed frames alone, with @noble (no code of src/):
 * `bun test/vectors/link-frames.make.ts`. Fixed keys and plaintexts, so the file is the same on every run. */
import { writeFileSync } from 'node:fs'
import { gcm } from '@noble/ciphers/aes.js'
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex } from '@noble/hashes/utils.js'

type Cipher = 'aes-256-gcm' | 'chacha20-poly1305'
interface FrameSpec {
  type: number
  stage: number
  requestId: bigint
  plaintext: Uint8Array
}

const le = (value: bigint, bytes: number) => {
  const out = new Uint8Array(bytes)
  for (let i = 0; i < bytes; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn)
  return out
}
const be = (value: bigint, bytes: number) => le(value, bytes).reverse()
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0))
  let at = 0
  for (const p of parts) (out.set(p, at), (at += p.byteLength))
  return out
}
/** Deterministic bytes: a byte counter from `seed`. */
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (seed + i * 7) & 0xff)

function stream(
  name: string,
  cipher: Cipher,
  key0: Uint8Array,
  direction: 1 | 2,
  clusterId: string,
  rekeyInterval: bigint,
  frames: FrameSpec[],
) {
  const cluster = new TextEncoder().encode(clusterId)
  let key = key0
  return {
    name,
    cipher,
    key: bytesToHex(key0),
    direction,
    clusterId,
    rekeyInterval: rekeyInterval.toString(),
    frames: frames.map((f, i) => {
      const seq = BigInt(i)
      if (seq > 0n && seq % rekeyInterval === 0n)
        key = hkdf(sha256, key, undefined, new TextEncoder().encode('dbcluster/v1 rekey'), 32)
      const nonce = cat(be(BigInt(direction), 4), be(seq, 8))
      const header = cat(le(seq, 8), le(BigInt(f.stage), 4), le(f.requestId, 8))
      const aad = cat(Uint8Array.of(f.type), header, cluster)
      const sealed = (cipher === 'aes-256-gcm' ? gcm(key, nonce, aad) : chacha20poly1305(key, nonce, aad)).encrypt(
        f.plaintext,
      )
      const frame = cat(le(BigInt(1 + header.byteLength + sealed.byteLength), 8), Uint8Array.of(f.type), header, sealed)
      return {
        seq: i,
        type: f.type,
        stage: f.stage,
        requestId: f.requestId.toString(),
        plaintext: bytesToHex(f.plaintext),
        key: bytesToHex(key),
        nonce: bytesToHex(nonce),
        aad: bytesToHex(aad),
        frame: bytesToHex(frame),
      }
    }),
  }
}

// frame types (docs/protocol.md §Frame types): 4 ping, 5 pong, 6 step, 7 activation, 10 error, 12 file chunk, 13 data, 15 fragment
const message = bytes(100, 3)
const streams = [
  stream(
    'a ring hop: a step in three records (fragment, fragment, step), a ping, its pong, the closing error',
    'aes-256-gcm',
    bytes(32, 0x40),
    1,
    'ring-ü✓',
    3n,
    [
      { type: 15, stage: 2, requestId: 41n, plaintext: message.subarray(0, 40) },
      { type: 15, stage: 2, requestId: 41n, plaintext: message.subarray(40, 80) },
      { type: 6, stage: 2, requestId: 41n, plaintext: message.subarray(80) },
      { type: 4, stage: 0, requestId: 0n, plaintext: le(1765000000000n, 8) },
      { type: 5, stage: 0, requestId: 0n, plaintext: cat(le(1765000000001n, 8), bytes(16, 9)) },
      { type: 7, stage: 0xffff_ffff, requestId: 0x0102_0304_0506_0708n, plaintext: bytes(1000, 11) },
      { type: 13, stage: 1, requestId: 5n, plaintext: new Uint8Array(0) },
      {
        type: 10,
        stage: 0,
        requestId: 0xffff_ffff_ffff_ffffn,
        plaintext: cat(le(14n, 2), new TextEncoder().encode('E_PEER_CLOSEDxstopping')),
      },
    ],
  ),
  stream(
    'a shard transfer answer in ChaCha20-Poly1305 (responder to initiator), rekeyed every 2 frames',
    'chacha20-poly1305',
    bytes(32, 0x90),
    2,
    'shards',
    2n,
    [
      { type: 15, stage: 0, requestId: 0x0003_2a00_0000_0001n, plaintext: cat(le(4096n, 8), bytes(56, 1)) },
      { type: 12, stage: 0, requestId: 0x0003_2a00_0000_0001n, plaintext: bytes(64, 65) },
      { type: 14, stage: 0, requestId: 0x0003_2a00_0000_0002n, plaintext: bytes(32, 200) },
      { type: 8, stage: 3, requestId: 9n, plaintext: cat(le(2n, 4), le(151643n, 4), le(42n, 4)) },
      { type: 13, stage: 0, requestId: 0n, plaintext: bytes(17, 0) },
    ],
  ),
]

const file = new URL('./link-frames.json', import.meta.url).pathname
writeFileSync(
  file,
  JSON.stringify(
    {
      source: 'test/vectors/link-frames.make.ts: docs/protocol.md §Sealed frames with @noble/ciphers and @noble/hashes',
      streams,
    },
    null,
    2,
  ) + '\n',
)
console.log(`wrote ${file}`)
