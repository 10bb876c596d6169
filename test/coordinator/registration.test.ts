/** Registration decisions without a server: attestation verdicts, rdma reconciliation, key binding and serial ownership. */
import { describe, expect, test } from 'bun:test'
import type { ProviderRecord } from '../../src/coordinator/provider-record.ts'
import { decideRegistration, type RegistrationDecision } from '../../src/coordinator/registration.ts'
import { mdaFreshnessCode, mdaRoots } from '../../src/trust/mda.ts'
import { mintCa, mintDeviceLeaf } from '../support/test-certificates.ts'
import { attest as signed, forge, identity, keyB64 } from './support.ts'

const NOW = Date.now()
/** The nonce this test's "socket" sent; every attestation below signs it unless a test says otherwise. */
const CHALLENGE = 'Y2hhbGxlbmdlLW9uZQ=='
const attest = (id: Parameters<typeof signed>[0], serial: string, rdma: boolean, timestamp = NOW) =>
  signed(id, serial, rdma, timestamp, CHALLENGE)
const root = mintCa('Test Enterprise Attestation Root CA')
const sub = mintCa('Test Enterprise Attestation Sub CA 1', root)
const roots = mdaRoots(root.pem)
const mdaChain = (id: Parameters<typeof signed>[0], serial: string) => [
  mintDeviceLeaf(sub, { serial, freshnessCode: mdaFreshnessCode(id.publicKey) }).toString('base64'),
  sub.der.toString('base64'),
]
const A = identity(1, 'secure-enclave')
const B = identity(2)
const stored = new Map<string, ProviderRecord>()
const decide = (command: Parameters<typeof decideRegistration>[0]['command'], accountId = 1) =>
  decideRegistration({
    command,
    accountId,
    lookup: (s) => stored.get(s),
    now: NOW,
    maxAgeMs: 300_000,
    challenge: CHALLENGE,
    mdaRoots: roots,
  })
const accepted = (d: RegistrationDecision) => {
  if (!d.accepted) throw new Error(`refused: ${d.message}`)
  return d
}

describe('decideRegistration', () => {
  test('a valid attestation claiming the enclave, without MDA: attested, key proven, signed rdma, software trust and why', async () => {
    const d = accepted(decide({ type: 'register', rdma_enabled: true, attestation: await attest(A, 'S1', true, NOW) }))
    expect(d.record).toMatchObject({
      serial: 'S1',
      accountId: 1,
      publicKey: keyB64(A),
      keyKind: 'secure-enclave',
      keyVerified: true,
      attested: true,
      status: 'online',
      rdmaEnabled: true,
      hostname: 'host-S1',
    })
    expect(d.reply).toEqual({
      type: 'registered',
      serial: 'S1',
      kind: 'machine',
      status: 'online',
      attested: true,
      trust_level: 'software',
      rdma_enabled: true,
      reason: 'claims a Secure Enclave key, but no Apple managed device attestation (MDA) was verified: software trust',
      mda_verified: false,
    })
    expect(d.warnings).toEqual([])
    stored.set('S1', d.record)
  })

  test('the signed rdma flag wins over the claim, both ways, with a warning', async () => {
    for (const signed of [true, false]) {
      const d = accepted(
        decide({ type: 'register', rdma_enabled: !signed, attestation: await attest(B, 'S2', signed, NOW) }),
      )
      expect(d.record.rdmaEnabled).toBe(signed)
      expect(d.reply.rdma_mismatch).toEqual({ claimed: !signed, attested: signed })
      expect(d.warnings).toEqual([
        `provider S2 claimed rdma_enabled=${!signed} but its signed attestation says ${signed}; keeping the signed value`,
      ])
    }
  })

  test('forged and stale blobs: untrusted, not attested, key not proven', async () => {
    const forged = accepted(decide({ type: 'register', rdma_enabled: true, attestation: await forge(B, 'S3', true) }))
    expect(forged.record).toMatchObject({
      attested: false,
      keyVerified: false,
      status: 'untrusted',
      statusReason: 'attestation rejected: signature does not verify against the attested public key',
    })
    const stale = accepted(
      decide({ type: 'register', rdma_enabled: true, attestation: await attest(B, 'S4', true, NOW - 301_000) }),
    )
    expect(stale.record).toMatchObject({
      attested: false,
      status: 'untrusted',
      statusReason: 'attestation rejected: attestation is stale (301 s old)',
    })
    const future = accepted(
      decide({ type: 'register', rdma_enabled: true, attestation: await attest(B, 'S5', true, NOW + 3600_000) }),
    )
    expect(future.reply.reason).toBe('attestation rejected: attestation timestamp is in the future (check the clock)')
  })

  test('a proven key is never replaced: a new key marks the provider untrusted and keeps the old key', async () => {
    const d = accepted(decide({ type: 'register', rdma_enabled: true, attestation: await attest(B, 'S1', true, NOW) }))
    expect(d.record).toMatchObject({
      publicKey: keyB64(A),
      keyKind: 'secure-enclave',
      attested: true,
      status: 'untrusted',
    })
    expect(d.reply.trust_level).toBe('none')
    const forgedForProven = accepted(
      decide({ type: 'register', rdma_enabled: true, attestation: await forge(B, 'S1', true) }),
    )
    expect(forgedForProven.record).toMatchObject({ publicKey: keyB64(A), status: 'untrusted', attested: false })
  })

  test('another account cannot take a proven serial; it can take an unproven one by proving a key', async () => {
    expect(decide({ type: 'register', rdma_enabled: true, attestation: await attest(B, 'S1', true, NOW) }, 2)).toEqual({
      accepted: false,
      code: 'E_SERIAL_TAKEN',
      message:
        "serial S1 is registered to another account; this machine can prove the serial is its own with an Apple managed device attestation (serve --mda-chain), or the coordinator's operator can free it with 'dbcluster coordinator provider forget S1'",
    })
    const squatted = accepted(
      decide({ type: 'register', rdma_enabled: true, serial: 'S6', public_key: keyB64(B), key_kind: 'software' }, 2),
    )
    stored.set('S6', squatted.record)
    expect(
      decide({ type: 'register', rdma_enabled: true, serial: 'S6', public_key: keyB64(A), key_kind: 'software' }, 1),
    ).toMatchObject({ accepted: false, code: 'E_SERIAL_TAKEN' })
    const proven = accepted(
      decide({ type: 'register', rdma_enabled: true, attestation: await attest(A, 'S6', true, NOW) }, 1),
    )
    expect(proven.record).toMatchObject({ accountId: 1, publicKey: keyB64(A), keyVerified: true, status: 'online' })
  })

  test('a bare registration is online but never attested; trust none', () => {
    const d = accepted(
      decide({ type: 'register', rdma_enabled: true, serial: 'S7', public_key: keyB64(B), key_kind: 'software' }),
    )
    expect(d.record).toMatchObject({
      attested: false,
      keyVerified: false,
      status: 'online',
      rdmaEnabled: true,
      statusReason: 'registered without an attestation',
    })
    expect(d.reply.trust_level).toBe('none')
  })

  test("a replayed attestation (another connection's challenge, or none) is not attested: untrusted, key not proven", async () => {
    for (const challenge of ['b3RoZXItY29ubmVjdGlvbg==', undefined]) {
      const d = accepted(
        decide({ type: 'register', rdma_enabled: true, attestation: await signed(B, 'S8', true, NOW, challenge) }),
      )
      expect(d.record).toMatchObject({ attested: false, keyVerified: false, status: 'untrusted' })
      expect(d.reply.reason).toContain("does not sign this connection's challenge")
      expect(d.reply.trust_level).toBe('none')
    }
  })

  test('a verified MDA chain for this serial and key lifts a Secure Enclave key to hardware', async () => {
    const C = identity(3, 'secure-enclave')
    const d = accepted(
      decide({
        type: 'register',
        rdma_enabled: false,
        attestation: await attest(C, 'S9', false),
        mda_chain: mdaChain(C, 'S9'),
      }),
    )
    expect(d.record).toMatchObject({ attested: true, mdaVerified: true, status: 'online' })
    expect(d.reply).toMatchObject({ trust_level: 'hardware', mda_verified: true, reason: null })
    // the same chain cannot lift a software key: the key kind must claim the enclave too
    const soft = identity(4)
    const s = accepted(
      decide({
        type: 'register',
        rdma_enabled: false,
        attestation: await attest(soft, 'S10', false),
        mda_chain: mdaChain(soft, 'S10'),
      }),
    )
    expect(s.reply).toMatchObject({ trust_level: 'software', mda_verified: true })
  })

  test('an MDA chain for another key or serial, or from another root, leaves software trust and says why', async () => {
    const C = identity(5, 'secure-enclave')
    const cases: [string[], RegExp][] = [
      [mdaChain(identity(6), 'S11'), /freshness code is not SHA-256 of this identity key/],
      [mdaChain(C, 'S-OTHER'), /not S11/],
      [
        [
          mintDeviceLeaf(mintCa('Other Sub', mintCa('Other Root')), {
            serial: 'S11',
            freshnessCode: mdaFreshnessCode(C.publicKey),
          }).toString('base64'),
        ],
        /trusted root/,
      ],
    ]
    for (const [chain, why] of cases) {
      const d = accepted(
        decide({ type: 'register', rdma_enabled: false, attestation: await attest(C, 'S11', false), mda_chain: chain }),
      )
      expect(d.record).toMatchObject({ attested: true, mdaVerified: false, status: 'online' })
      expect(d.reply.trust_level).toBe('software')
      expect(d.reply.reason).toMatch(why)
      expect(d.warnings.join('\n')).toMatch(why)
    }
  })

  test('a squatted serial moves to the machine that proves it with MDA; an MDA-proven serial moves for no one', async () => {
    const squatter = identity(7)
    const owner = identity(8, 'secure-enclave')
    const squat = accepted(
      decide({ type: 'register', rdma_enabled: true, attestation: await attest(squatter, 'S12', true) }, 2),
    )
    stored.set('S12', squat.record)
    // the owner without proof is refused, told how to prove it
    expect(
      decide({ type: 'register', rdma_enabled: false, attestation: await attest(owner, 'S12', false) }, 1),
    ).toMatchObject({
      accepted: false,
      code: 'E_SERIAL_TAKEN',
      message: expect.stringContaining('serve --mda-chain'),
    })
    const proven = accepted(
      decide(
        {
          type: 'register',
          rdma_enabled: false,
          attestation: await attest(owner, 'S12', false),
          mda_chain: mdaChain(owner, 'S12'),
        },
        1,
      ),
    )
    expect(proven.record).toMatchObject({ accountId: 1, publicKey: keyB64(owner), mdaVerified: true, status: 'online' })
    expect(proven.reply.trust_level).toBe('hardware')
    expect(proven.warnings.join('\n')).toContain('S12 moved to this account')
    stored.set('S12', proven.record)
    // now even another verified chain (say, the squatter's MDM) cannot move it back
    const again = identity(9, 'secure-enclave')
    expect(
      decide(
        {
          type: 'register',
          rdma_enabled: false,
          attestation: await attest(again, 'S12', false),
          mda_chain: mdaChain(again, 'S12'),
        },
        2,
      ),
    ).toMatchObject({
      accepted: false,
      code: 'E_SERIAL_TAKEN',
      message: expect.stringContaining('verified Apple device attestation'),
    })
  })
})
