/** The RDMA peer-list gate as a table: each row changes one thing about the caller or a peer. */
import { describe, expect, test } from 'bun:test'
import { isRdmaEligible, rdmaPeersFor } from '../../src/coordinator/gate.ts'
import type { ProviderRecord } from '../../src/coordinator/provider-record.ts'

const CALLER = 1
const OTHER = 2

function provider(serial: string, accountId: number, changes: Partial<ProviderRecord> = {}): ProviderRecord {
  return {
    serial,
    accountId,
    kind: 'machine',
    publicKey: `key-${serial}`,
    keyKind: 'software',
    keyVerified: true,
    attested: true,
    status: 'online',
    statusReason: null,
    rdmaEnabled: true,
    hostname: `h-${serial}`,
    chip: null,
    memoryBytes: null,
    attestation: null,
    clusterTrust: null,
    mdaVerified: false,
    registeredAt: 0,
    lastSeen: 0,
    ...changes,
  }
}

const good = provider('mine', CALLER)

describe('who may see the list', () => {
  const rows: [string, ProviderRecord[], boolean][] = [
    ['no provider', [], false],
    ['only provider not RDMA-enabled', [provider('mine', CALLER, { rdmaEnabled: false })], false],
    ['only provider not attested', [provider('mine', CALLER, { attested: false })], false],
    ['only provider untrusted (though attested)', [provider('mine', CALLER, { status: 'untrusted' })], false],
    ['only provider offline', [provider('mine', CALLER, { status: 'offline' })], false],
    ['only provider is a cluster', [provider('mine', CALLER, { kind: 'cluster' })], false],
    ['only provider has no key', [provider('mine', CALLER, { publicKey: '' })], false],
    ['a record of another account passed in as own', [provider('mine', OTHER)], false],
    [
      'one eligible among ineligible ones',
      [provider('a', CALLER, { status: 'offline' }), good, provider('b', CALLER, { rdmaEnabled: false })],
      true,
    ],
  ]
  for (const [name, own, allowed] of rows) {
    test(`${name}: ${allowed ? 'allowed' : '403'}`, () => {
      const verdict = rdmaPeersFor(CALLER, own, [provider('peer', OTHER)])
      expect(verdict.allowed).toBe(allowed)
      if (!verdict.allowed)
        expect(verdict.reason).toBe(
          own.length === 0
            ? 'this account owns no provider; register an attested, RDMA-enabled machine first'
            : 'this account owns no attested, online, RDMA-enabled machine',
        )
    })
  }
})

describe('what the list holds', () => {
  test("excludes the caller's own and every peer not attested, untrusted, offline, non-RDMA or a cluster", () => {
    const candidates = [
      good,
      provider('mine-2', CALLER),
      provider('ok-1', OTHER, { keyKind: 'secure-enclave' }),
      provider('ok-2', 3),
      provider('unattested', OTHER, { attested: false }),
      provider('untrusted', OTHER, { status: 'untrusted' }),
      provider('offline', OTHER, { status: 'offline' }),
      provider('no-rdma', OTHER, { rdmaEnabled: false }),
      provider('cluster', OTHER, { kind: 'cluster' }),
    ]
    const verdict = rdmaPeersFor(CALLER, [good], candidates)
    expect(verdict).toEqual({
      allowed: true,
      peers: [
        {
          serial: 'ok-1',
          public_key: 'key-ok-1',
          key_kind: 'secure-enclave',
          trust_level: 'software',
          hostname: 'h-ok-1',
        },
        { serial: 'ok-2', public_key: 'key-ok-2', key_kind: 'software', trust_level: 'software', hostname: 'h-ok-2' },
      ],
    })
  })

  test('an allowed caller may get an empty list', () => {
    expect(rdmaPeersFor(CALLER, [good], [good])).toEqual({ allowed: true, peers: [] })
  })

  test('isRdmaEligible needs all of: machine, attested, online, RDMA, key', () => {
    expect(isRdmaEligible(good)).toBe(true)
    for (const change of [
      { attested: false },
      { status: 'offline' as const },
      { status: 'untrusted' as const },
      { rdmaEnabled: false },
      { kind: 'cluster' as const },
      { publicKey: '' },
    ]) {
      expect(isRdmaEligible({ ...good, ...change })).toBe(false)
    }
  })
})
