/** Identity keys, pins, the RDMA gate and attestations. */
import { describe, expect, test } from 'bun:test'
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { canonicalJson } from '../../src/trust/canonical-json.ts'
import { signAttestation, verifyAttestation } from '../../src/trust/attestation.ts'
import { loadSoftwareIdentity } from '../../src/trust/identity-software.ts'
import { open as openEnclave, probe as enclaveProbe } from '../../src/trust/identity-enclave.ts'
import { fingerprint, verifySignature } from '../../src/trust/identity.ts'
import { authorizeByPins, FilePinStore } from '../../src/trust/pinned-keys.ts'
import {
  decideRdma,
  hasThunderbolt5,
  parseAppleChip,
  parseRdmaCtlStatus,
  type RdmaProbes,
} from '../../src/trust/rdma-gate.ts'
import { testIdentity } from '../support/identities.ts'

const dir = () => mkdtempSync(join(tmpdir(), 'dbc-trust-'))

describe('software identity', () => {
  test('a key file whose secret is not 64 hex characters, or not a P-256 secret, is refused saying so', () => {
    const cases: [string, string][] = [
      [
        'zz'.repeat(32),
        'its secretKey must be 64 hexadecimal characters (32 bytes), found 64 characters with non-hex ones',
      ],
      ['ab'.repeat(10), 'found 20 characters'],
      ['00'.repeat(32), 'is not a valid P-256 secret'],
      ['ff'.repeat(32), 'is not a valid P-256 secret'],
    ]
    for (const [secretKey, words] of cases) {
      const path = join(dir(), 'identity.key')
      writeFileSync(path, JSON.stringify({ version: 1, kind: 'software', secretKey }), { mode: 0o600 })
      expect(() => loadSoftwareIdentity(path)).toThrow(
        expect.objectContaining({
          code: 'E_KEY_FILE',
          message: expect.stringContaining(words),
          hint: expect.stringContaining('identity init'),
        }),
      )
    }
  })

  test('a key in a folder that group or others may write is refused (another user could swap it)', () => {
    const folder = dir()
    const path = join(folder, 'identity.key')
    loadSoftwareIdentity(path)
    chmodSync(folder, 0o777)
    expect(() => loadSoftwareIdentity(path)).toThrow(
      expect.objectContaining({
        code: 'E_KEY_PERMISSIONS',
        message: expect.stringContaining('is writable by group or others (mode 777)'),
        hint: `run 'chmod 700 ${folder}'`,
      }),
    )
    chmodSync(folder, 0o755)
    expect(loadSoftwareIdentity(path).created).toBe(false)
  })

  test('created 0600 on first use, reloaded with the same key, signatures verify', async () => {
    const path = join(dir(), 'sub', 'identity.key')
    const first = loadSoftwareIdentity(path)
    expect(first.created).toBe(true)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const again = loadSoftwareIdentity(path)
    expect(again.created).toBe(false)
    expect(again.identity.publicKey).toEqual(first.identity.publicKey)
    const msg = new TextEncoder().encode('hello')
    expect(verifySignature(again.identity.publicKey, msg, await again.identity.sign(msg))).toBe(true)
    expect(fingerprint(first.identity.publicKey)).toMatch(/^([0-9a-f]{2}:){15}[0-9a-f]{2}$/)
  })

  test('a key file readable by group or others is refused with the chmod to run', () => {
    const path = join(dir(), 'identity.key')
    loadSoftwareIdentity(path)
    chmodSync(path, 0o640)
    expect(() => loadSoftwareIdentity(path)).toThrow(/readable by group or others/)
    try {
      loadSoftwareIdentity(path)
    } catch (e) {
      expect((e as { hint?: string }).hint).toBe(`run 'chmod 600 ${path}'`)
    }
  })

  test('a missing key with create=false says how to make one; the enclave reports why it is unavailable here', () => {
    expect(() => loadSoftwareIdentity(join(dir(), 'none.key'), { create: false })).toThrow(/no identity key/)
    const p = enclaveProbe({ platform: 'linux', arch: 'x64' })
    expect(p).toEqual({
      available: false,
      reason:
        'Secure Enclave identity unavailable: the Secure Enclave exists only on Apple Silicon Macs (this is linux x64)',
    })
    if (process.platform !== 'darwin')
      expect(() => openEnclave(join(dir(), 'identity.enclave'))).toThrow(
        expect.objectContaining({ code: 'E_ENCLAVE_UNAVAILABLE' }),
      )
  })
})

describe('pin store', () => {
  test('pins persist 0600 and authorize exactly the pinned key', () => {
    const path = join(dir(), 'pins.json')
    const store = new FilePinStore(path)
    const bob = testIdentity(2)
    store.set('bob', {
      publicKey: Buffer.from(bob.publicKey).toString('base64'),
      keyKind: 'software',
      source: 'coordinator',
      pinnedAt: 1,
    })
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const reloaded = new FilePinStore(path)
    const authorize = authorizeByPins(reloaded)
    expect(authorize('bob', bob.publicKey)).toBe('authorized')
    expect(authorize('bob', testIdentity(3).publicKey)).toBe('key-mismatch')
    expect(authorize('carol', bob.publicKey)).toBe('not-pinned')
    expect(JSON.parse(readFileSync(path, 'utf8')).bob.source).toBe('coordinator')
  })
})

describe('RDMA capability gate', () => {
  const mac = (chip: string, status: string | null): RdmaProbes => ({
    platform: 'darwin',
    chip,
    rdmaCtlStatus: () => status,
    infinibandDevices: () => [],
  })
  test('macOS: a Thunderbolt 5 chip family with rdma_ctl enabled', () => {
    expect(decideRdma(true, mac('Apple M5 Max', 'enabled\n'))).toEqual({
      enabled: true,
      detail: 'Apple M5 Max, rdma_ctl: enabled',
    })
    // TN3205's own example is an M4 Pro Mac mini; the Mac Studio's M3 Ultra has Thunderbolt 5 too
    expect(decideRdma(true, mac('Apple M4 Pro', 'enabled'))).toMatchObject({ enabled: true })
    expect(decideRdma(true, mac('Apple M3 Ultra', 'enabled'))).toMatchObject({ enabled: true })
    expect(decideRdma(true, mac('Apple M4', 'enabled'))).toMatchObject({
      enabled: false,
      reason: expect.stringContaining('no Thunderbolt 5'),
    })
    expect(decideRdma(true, mac('Apple M3 Max', 'enabled'))).toMatchObject({
      enabled: false,
      reason: expect.stringContaining('no Thunderbolt 5'),
    })
    expect(decideRdma(true, mac('Apple M5 Pro', 'disabled'))).toMatchObject({
      enabled: false,
      reason: expect.stringContaining('rdma_ctl enable'),
    })
    expect(decideRdma(true, mac('Apple M5 Pro', null))).toMatchObject({
      enabled: false,
      reason: expect.stringContaining('did not answer'),
    })
    expect(decideRdma(true, mac('Apple M5 Pro', 'usage: rdma_ctl [enable|disable|status]'))).toMatchObject({
      enabled: false,
      reason: expect.stringContaining('not enabled'),
    })
    expect(decideRdma(true, mac('Intel Core i9', 'enabled'))).toMatchObject({
      enabled: false,
      reason: "chip 'Intel Core i9' is not Apple Silicon",
    })
    // a family newer than the table is left to rdma_ctl
    expect(decideRdma(true, mac('Apple M7', 'enabled'))).toMatchObject({ enabled: true })
  })
  test('chip family and rdma_ctl parsers', () => {
    expect(parseAppleChip('Apple M4 Pro')).toEqual({ generation: 4, tier: 'Pro' })
    expect(parseAppleChip('Apple M3 Ultra')).toEqual({ generation: 3, tier: 'Ultra' })
    expect(parseAppleChip('Apple M5')).toEqual({ generation: 5, tier: 'base' })
    expect(parseAppleChip('Apple M10 Max')).toEqual({ generation: 10, tier: 'Max' })
    expect(parseAppleChip('AMD EPYC 7B13')).toBeNull()
    expect(hasThunderbolt5({ generation: 5, tier: 'base' })).toBe(false)
    expect(hasThunderbolt5({ generation: 2, tier: 'Ultra' })).toBe(false)
    expect(hasThunderbolt5({ generation: 6, tier: 'base' })).toBe('unknown')
    expect(parseRdmaCtlStatus('enabled\n')).toBe('enabled')
    expect(parseRdmaCtlStatus('RDMA over Thunderbolt\ndisabled\n')).toBe('disabled')
    expect(parseRdmaCtlStatus('')).toBe('unknown')
  })
  test('Linux: a device under /sys/class/infiniband; not requested means off', () => {
    const linux = (devices: string[]): RdmaProbes => ({
      platform: 'linux',
      chip: 'x',
      rdmaCtlStatus: () => null,
      infinibandDevices: () => devices,
    })
    expect(decideRdma(true, linux(['mlx5_0']))).toEqual({ enabled: true, detail: 'RDMA devices: mlx5_0' })
    expect(decideRdma(true, linux([]))).toMatchObject({ enabled: false, reason: expect.stringContaining('infiniband') })
    expect(decideRdma(false, linux(['mlx5_0']))).toMatchObject({ enabled: false })
  })
})

describe('attestation', () => {
  const facts = {
    serial: 's1',
    hostname: 'h',
    chip: 'Apple M5',
    memoryBytes: 1024,
    osVersion: 'macOS 26.2',
    binaryHash: 'ab',
    rdmaEnabled: true,
  }
  test('canonical JSON sorts keys and drops whitespace', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'x'], c: { z: 1, y: 2 } })).toBe(
      '{"a":[true,null,"x"],"b":1,"c":{"y":2,"z":1}}',
    )
  })
  test('a signed attestation verifies; any edit, a stale one or a bad shape does not', async () => {
    const att = await signAttestation(testIdentity(5), { ...facts, timestamp: 1_000_000 })
    expect(verifyAttestation(att, { now: 1_000_500, maxAgeMs: 60_000 })).toMatchObject({ ok: true })
    expect(verifyAttestation({ ...att, body: { ...att.body, rdmaEnabled: false } }, { now: 1_000_500 })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('signature'),
    })
    expect(verifyAttestation(att, { now: 1_000_000 + 120_000, maxAgeMs: 60_000 })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('stale'),
    })
    expect(verifyAttestation({ body: { ...att.body, memoryBytes: '1' }, signature: att.signature })).toMatchObject({
      ok: false,
      reason: "field 'memoryBytes' must be a number",
    })
    expect(verifyAttestation(null)).toMatchObject({ ok: false })
  })
})

describe('machine facts', () => {
  test('serial, memory and binary hash come from the machine and the running entry point', async () => {
    const { binaryHash, binaryPath, machineFacts } = await import('../../src/trust/machine-info.ts')
    const { createHash } = await import('node:crypto')
    const { existsSync } = await import('node:fs')
    const { totalmem, hostname } = await import('node:os')
    const facts = machineFacts()
    if (process.platform === 'linux' && existsSync('/etc/machine-id'))
      expect(facts.serial).toBe(readFileSync('/etc/machine-id', 'utf8').trim())
    expect(facts.memoryBytes).toBe(totalmem())
    expect(facts.hostname).toBe(hostname())
    expect(facts.chip.length).toBeGreaterThan(0)
    expect(binaryHash()).toBe(createHash('sha256').update(readFileSync(binaryPath())).digest('hex'))
  })
})
