import { describe, expect, test } from 'bun:test'
import { p256 } from '@noble/curves/nist.js'
import { parseArpA, parseIpNeigh, parseProcNetArp } from '../../src/discovery/arp.ts'
import { signBeacon, verifyBeacon } from '../../src/discovery/beacon.ts'
import { electRanks } from '../../src/discovery/election.ts'
import { linkLocalInterfaces } from '../../src/discovery/link-local.ts'
import type { Identity } from '../../src/trust/identity.ts'

function testIdentity(seed: number): Identity {
  const secret = new Uint8Array(32).fill(seed)
  return { kind: 'software', publicKey: p256.getPublicKey(secret, true), sign: async (m) => p256.sign(m, secret) }
}
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64')

describe('beacons', () => {
  const a = testIdentity(1)
  const now = 1_800_000_000_000
  const pins = new Map([['serial-a', b64(a.publicKey)]])
  const isTrusted = (serial: string, key: string) => pins.get(serial) === key
  const fields = { serial: 'serial-a', address: '169.254.1.1', port: 7000, ts: now }

  test('a signed beacon from its claimed address, fresh, with the pinned key, is accepted', async () => {
    const verdict = verifyBeacon(await signBeacon(a, fields), { from: '169.254.1.1', now, isTrusted })
    expect(verdict).toEqual({ ok: true, body: { v: 1, publicKey: b64(a.publicKey), ...fields } })
  })

  test('tampered, spoofed, stale, unpinned and malformed beacons are refused with a reason', async () => {
    const good = await signBeacon(a, fields)
    const tampered = new TextEncoder().encode(new TextDecoder().decode(good).replace('"port":7000', '"port":7001'))
    expect(verifyBeacon(tampered, { from: '169.254.1.1', now, isTrusted })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('bad signature'),
    })
    expect(verifyBeacon(good, { from: '169.254.9.9', now, isTrusted })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('came from 169.254.9.9'),
    })
    expect(verifyBeacon(good, { from: '169.254.1.1', now: now + 60_000, isTrusted })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('stale'),
    })
    const impostor = testIdentity(2) // signs correctly, but its key is not the one pinned for serial-a
    expect(verifyBeacon(await signBeacon(impostor, fields), { from: '169.254.1.1', now, isTrusted })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('not pinned'),
    })
    expect(verifyBeacon(new TextEncoder().encode('{nope'), { from: 'x', now, isTrusted })).toEqual({
      ok: false,
      reason: 'beacon is not JSON',
    })
    expect(verifyBeacon(new Uint8Array(5000), { from: 'x', now, isTrusted }).ok).toBe(false)
  })
})

describe('rank election and link-local interfaces', () => {
  test('lower IPv4 is rank 0, numerically (not as text)', () => {
    const ranked = electRanks([{ address: '169.254.10.9' }, { address: '169.254.2.200' }, { address: '169.254.10.10' }])
    expect(ranked.map((m) => [m.address, m.rank])).toEqual([
      ['169.254.2.200', 0],
      ['169.254.10.9', 1],
      ['169.254.10.10', 2],
    ])
    expect(() => electRanks([{ address: '169.254.1.1' }, { address: '169.254.1.1' }])).toThrow(/two members/)
  })

  test('only wired link-local IPv4 interfaces count, with their broadcast address', () => {
    const fake = () => ({
      lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '', internal: true, cidr: null }],
      en0: [{ address: '192.168.1.5', netmask: '255.255.255.0', family: 'IPv4', mac: '', internal: false, cidr: null }],
      bridge0: [
        { address: '169.254.33.7', netmask: '255.255.0.0', family: 'IPv4', mac: '', internal: false, cidr: null },
        {
          address: 'fe80::1',
          netmask: 'ffff:ffff:ffff:ffff::',
          family: 'IPv6',
          mac: '',
          internal: false,
          cidr: null,
          scopeid: 1,
        },
      ],
    })
    expect(linkLocalInterfaces(undefined, fake as never)).toEqual([
      { name: 'bridge0', address: '169.254.33.7', broadcast: '169.254.255.255' },
    ])
  })

  test('ARP tables of Linux and macOS parse to neighbours, skipping incomplete entries', () => {
    const proc = `IP address       HW type     Flags       HW address            Mask     Device
169.254.10.2     0x1         0x2         aa:bb:cc:dd:ee:01     *        veth0
169.254.10.3     0x1         0x0         00:00:00:00:00:00     *        veth0`
    expect(parseProcNetArp(proc)).toEqual([{ address: '169.254.10.2', mac: 'aa:bb:cc:dd:ee:01', iface: 'veth0' }])
    expect(
      parseIpNeigh('169.254.10.2 dev veth0 lladdr AA:bb:cc:dd:ee:01 REACHABLE\n169.254.10.4 dev veth0  FAILED'),
    ).toEqual([{ address: '169.254.10.2', iface: 'veth0', mac: 'aa:bb:cc:dd:ee:01' }])
    expect(parseArpA('? (169.254.3.4) at 1a:2b:3c:4d:5e:6f on bridge0 ifscope [bridge]')).toEqual([
      { address: '169.254.3.4', mac: '1a:2b:3c:4d:5e:6f', iface: 'bridge0' },
    ])
  })
})
