/** Registration decisions without a server: attestation verdicts, rdma reconciliation, key binding and serial ownership. */
import { describe, expect, test } from 'bun:test'
import type { ProviderRecord } from '../../src/coordinator/provider-record.ts'
import { decideRegistration, type RegistrationDecision } from '../../src/coordinator/registration.ts'
import { attest, forge, identity, keyB64 } from './support.ts'

const NOW = Date.now()
const A = identity(1, 'secure-enclave')
const B = identity(2)
const stored = new Map<string, ProviderRecord>()
const decide = (command: Parameters<typeof decideRegistration>[0]['command'], accountId = 1) =>
  decideRegistration({ command, accountId, lookup: (s) => stored.get(s), now: NOW, maxAgeMs: 300_000 })
const accepted = (d: RegistrationDecision) => {
  if (!d.accepted) throw new Error(`refused: ${d.message}`)
  return d
}

describe('decideRegistration', () => {
  test('a valid attestation: attested, key proven, signed rdma, hardware trust, no warnings', async () => {
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
      reason: null,
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
      message: 'serial S1 is registered to another account',
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
})
