/** Roster signing and verification: round trip, tampering of every field, expiry, foreign coordinator, min-member trust. */
import { describe, expect, test } from 'bun:test'
import { signRoster, verifyRoster, type RosterMember, type SignedRoster } from '../../src/coordinator/roster.ts'
import { minTrust, trustLevelOf } from '../../src/coordinator/trust-level.ts'
import { decideClusterRegistration } from '../../src/coordinator/cluster-registration.ts'
import type { ProviderRecord } from '../../src/coordinator/provider-record.ts'
import { attest, identity, keyB64 } from './support.ts'

const coordinator = identity(90)
const NOW = 1_750_000_000_000
const member = (seed: number, serial: string, trust: RosterMember['trust_level']): RosterMember => ({
  serial,
  public_key: keyB64(identity(seed)),
  key_kind: trust === 'hardware' ? 'secure-enclave' : 'software',
  trust_level: trust,
  attested: trust !== 'none',
})
const members = [member(1, 'head', 'hardware'), member(2, 'b', 'software'), member(3, 'c', 'hardware')]
const make = (ms = members, ttlMs = 3600_000) =>
  signRoster(coordinator, { clusterId: 'c-1', members: ms, issuedAt: NOW, ttlMs })

describe('trust levels', () => {
  test('a cluster is as trusted as its weakest member', () => {
    expect(minTrust(['hardware', 'software', 'hardware'])).toBe('software')
    expect(minTrust(['hardware', 'none'])).toBe('none')
    expect(minTrust(['hardware'])).toBe('hardware')
    expect(minTrust([])).toBe('none')
  })
  test("level of a provider: attested key kind, none when unattested or untrusted, capped by a cluster's members", () => {
    // hardware needs evidence beyond the key's own signature: a Secure Enclave claim alone is software
    expect(trustLevelOf({ attested: true, status: 'online', keyKind: 'secure-enclave' })).toBe('software')
    expect(trustLevelOf({ attested: true, status: 'online', keyKind: 'secure-enclave', mdaVerified: true })).toBe(
      'hardware',
    )
    expect(trustLevelOf({ attested: true, status: 'offline', keyKind: 'software' })).toBe('software')
    expect(trustLevelOf({ attested: false, status: 'online', keyKind: 'secure-enclave' })).toBe('none')
    expect(trustLevelOf({ attested: true, status: 'untrusted', keyKind: 'secure-enclave' })).toBe('none')
    expect(
      trustLevelOf({ attested: true, status: 'online', keyKind: 'secure-enclave', clusterTrust: 'software' }),
    ).toBe('software')
  })
})

describe('signed rosters', () => {
  test('round trip: body fields, head, min trust, expiry', async () => {
    const r = await make()
    expect(r.body).toEqual({
      version: 1,
      cluster_id: 'c-1',
      head: 'head',
      members,
      trust_level: 'software',
      issued_at: NOW,
      expires_at: NOW + 3600_000,
      coordinator_key: keyB64(coordinator),
    })
    expect(Buffer.from(r.signature, 'base64').length).toBe(64)
    expect(verifyRoster(r, coordinator.publicKey, { now: NOW + 1000 })).toEqual({ ok: true, body: r.body })
  })

  test('any changed field breaks the signature', async () => {
    const r = await make()
    const edits: ((b: SignedRoster['body']) => void)[] = [
      (b) => (b.cluster_id = 'c-2'),
      (b) => (b.expires_at += 1),
      (b) => (b.members[1]!.public_key = keyB64(identity(9))),
      (b) => (b.members[2]!.serial = 'd'),
      (b) => (b.members[1]!.attested = false),
      (b) => b.members.pop(),
    ]
    for (const edit of edits) {
      const t = structuredClone(r)
      edit(t.body)
      expect(verifyRoster(t, coordinator.publicKey, { now: NOW })).toEqual({
        ok: false,
        reason: 'roster signature does not verify against the coordinator key',
      })
    }
    expect(
      verifyRoster({ ...r, signature: Buffer.alloc(64, 1).toString('base64') }, coordinator.publicKey, { now: NOW }).ok,
    ).toBe(false)
  })

  test('expired, from the future, from another coordinator, malformed: rejected with the reason', async () => {
    const r = await make(members, 60_000)
    expect(verifyRoster(r, coordinator.publicKey, { now: NOW + 59_999 }).ok).toBe(true)
    expect(verifyRoster(r, coordinator.publicKey, { now: NOW + 60_000 })).toEqual({
      ok: false,
      reason: `roster expired at ${new Date(NOW + 60_000).toISOString()}`,
    })
    expect(verifyRoster(r, coordinator.publicKey, { now: NOW - 10 * 60_000 })).toEqual({
      ok: false,
      reason: 'roster was issued in the future (check the clock)',
    })
    expect(verifyRoster(r, identity(91).publicKey, { now: NOW })).toEqual({
      ok: false,
      reason: 'roster was signed by a different coordinator',
    })
    expect(verifyRoster(null, coordinator.publicKey, { now: NOW })).toEqual({
      ok: false,
      reason: 'roster is not an object',
    })
    expect(
      verifyRoster({ body: { ...r.body, members: [] }, signature: r.signature }, coordinator.publicKey, { now: NOW }),
    ).toEqual({ ok: false, reason: 'roster has no members' })
    expect(verifyRoster({ body: r.body }, coordinator.publicKey, { now: NOW })).toEqual({
      ok: false,
      reason: 'roster has no signature',
    })
  })

  test('a roster whose stated trust is above its weakest member is refused even when signed', async () => {
    const r = await make()
    const body = { ...r.body, trust_level: 'hardware' as const }
    const { canonicalJson } = await import('../../src/trust/canonical-json.ts')
    const signature = Buffer.from(await coordinator.sign(new TextEncoder().encode(canonicalJson(body)))).toString(
      'base64',
    )
    expect(verifyRoster({ body, signature }, coordinator.publicKey, { now: NOW })).toEqual({
      ok: false,
      reason: 'roster trust is not its lowest member trust',
    })
  })
})

describe('a cluster registered as one provider', () => {
  test('hardware only when every member is a Secure Enclave key whose MDA chain this coordinator verified; one software member lowers it', async () => {
    const now = Date.now()
    const ids = { head: identity(11, 'secure-enclave'), b: identity(12, 'secure-enclave'), c: identity(13) }
    const records = new Map<string, ProviderRecord>()
    const record = (serial: string, id: ReturnType<typeof identity>, mdaVerified: boolean): ProviderRecord => ({
      serial,
      accountId: 1,
      kind: 'machine',
      publicKey: keyB64(id),
      keyKind: id.kind,
      keyVerified: true,
      attested: true,
      mdaVerified,
      status: 'online',
      statusReason: null,
      rdmaEnabled: false,
      hostname: null,
      chip: null,
      memoryBytes: null,
      attestation: null,
      clusterTrust: null,
      registeredAt: now,
      lastSeen: now,
    })
    records.set('head', record('head', ids.head, true))
    records.set('b', record('b', ids.b, true))
    records.set('c', record('c', ids.c, false))
    const decide = async (serials: (keyof typeof ids)[]) => {
      const roster = await signRoster(coordinator, {
        clusterId: `c-${serials.join('')}`,
        members: serials.map((s) => ({
          serial: s,
          public_key: keyB64(ids[s]),
          key_kind: ids[s].kind,
          trust_level: trustLevelOf(records.get(s)!),
          attested: true,
        })),
        issuedAt: now,
        ttlMs: 3600_000,
      })
      return decideClusterRegistration({
        command: {
          type: 'register_cluster',
          roster,
          attestations: await Promise.all(serials.map((s) => attest(ids[s], s, false, now))),
        },
        accountId: 1,
        coordinatorKey: coordinator.publicKey,
        lookup: (s) => records.get(s),
        now,
        maxAgeMs: 300_000,
      })
    }
    const hardware = await decide(['head', 'b'])
    expect(hardware).toMatchObject({ accepted: true, reply: { trust_level: 'hardware', attested: true } })
    const mixed = await decide(['head', 'b', 'c'])
    expect(mixed).toMatchObject({ accepted: true, reply: { trust_level: 'software' } })
    expect((mixed as { reply: { members: unknown[] } }).reply.members).toContainEqual({
      serial: 'c',
      attested: true,
      trust_level: 'software',
      reason: null,
    })
    // a member whose stored record was verified for another key does not lend its verification
    records.set('b', { ...record('b', ids.c, true) })
    expect(await decide(['head', 'b'])).toMatchObject({ reply: { trust_level: 'software' } })
  })
})
