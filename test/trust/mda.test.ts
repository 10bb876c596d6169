import { describe, expect, test } from 'bun:test'
import { createHash, X509Certificate } from 'node:crypto'
import {
  APPLE_ENTERPRISE_ATTESTATION_ROOT_PEM,
  APPLE_ENTERPRISE_ATTESTATION_ROOT_SHA256,
} from '../../src/trust/apple-attestation-root.ts'
import { softwareIdentityFromSecret } from '../../src/trust/identity-software.ts'
import { mdaFreshnessCode, mdaRoots, pemCertificates, verifyMdaChain } from '../../src/trust/mda.ts'
import { mintCa, mintDeviceLeaf } from '../support/test-certificates.ts'

const identity = softwareIdentityFromSecret(new Uint8Array(32).fill(7))
const other = softwareIdentityFromSecret(new Uint8Array(32).fill(9))
const root = mintCa('Test Enterprise Attestation Root CA')
const sub = mintCa('Test Enterprise Attestation Sub CA 1', root)
const roots = mdaRoots(root.pem)
const b64 = (d: Buffer) => d.toString('base64')
const SERIAL = 'C02TEST123'

function chainFor(fields: Parameters<typeof mintDeviceLeaf>[1], ca = sub) {
  return [b64(mintDeviceLeaf(ca, fields)), b64(ca.der)]
}

describe('MDA chain verification', () => {
  test('the embedded Apple root is the certificate Apple publishes (SHA-256 fingerprint)', () => {
    const cert = new X509Certificate(APPLE_ENTERPRISE_ATTESTATION_ROOT_PEM)
    expect(cert.fingerprint256).toBe(APPLE_ENTERPRISE_ATTESTATION_ROOT_SHA256)
    expect(cert.subject).toContain('Apple Enterprise Attestation Root CA')
    expect(cert.ca).toBe(true)
  })

  test('the freshness code is SHA-256 of the compressed identity key', () => {
    expect(Buffer.from(mdaFreshnessCode(identity.publicKey)).toString('hex')).toBe(
      createHash('sha256').update(identity.publicKey).digest('hex'),
    )
  })

  test('a chain to the root, for this serial and this key, verifies and reports the device facts', () => {
    const chain = chainFor({ serial: SERIAL, udid: 'UDID-1', freshnessCode: mdaFreshnessCode(identity.publicKey) })
    const v = verifyMdaChain(chain, { serial: SERIAL, publicKey: identity.publicKey }, { roots })
    expect(v).toEqual({ ok: true, facts: { serial: SERIAL, udid: 'UDID-1', osVersion: '15.2', sepOsVersion: null } })
    // the root itself may travel at the end of the chain
    expect(
      verifyMdaChain([...chain, b64(root.der)], { serial: SERIAL, publicKey: identity.publicKey }, { roots }).ok,
    ).toBe(true)
  })

  const refusals: [string, () => unknown, RegExp][] = [
    [
      'a chain from another root',
      () =>
        chainFor(
          { serial: SERIAL, freshnessCode: mdaFreshnessCode(identity.publicKey) },
          mintCa('Mallory Sub CA', mintCa('Mallory Root')),
        ),
      /does not end at a trusted root/,
    ],
    [
      'a leaf for another serial',
      () => chainFor({ serial: 'C02OTHER', freshnessCode: mdaFreshnessCode(identity.publicKey) }),
      /for serial "C02OTHER", not C02TEST123/,
    ],
    [
      'a leaf requested for another key',
      () => chainFor({ serial: SERIAL, freshnessCode: mdaFreshnessCode(other.publicKey) }),
      /freshness code is not SHA-256 of this identity key/,
    ],
    ['a leaf without a freshness code', () => chainFor({ serial: SERIAL }), /freshness code/],
    [
      'a leaf without a serial',
      () => chainFor({ freshnessCode: mdaFreshnessCode(identity.publicKey) }),
      /names no device serial/,
    ],
    [
      'an expired leaf',
      () =>
        chainFor({
          serial: SERIAL,
          freshnessCode: mdaFreshnessCode(identity.publicKey),
          notBefore: new Date(Date.now() - 7200_000),
          notAfter: new Date(Date.now() - 3600_000),
        }),
      /outside its validity/,
    ],
    [
      'a leaf signed by a key that is not a CA',
      () => {
        const notCa = mintDeviceLeaf(sub, { serial: 'x' })
        return [
          b64(mintDeviceLeaf(sub, { serial: SERIAL, freshnessCode: mdaFreshnessCode(identity.publicKey) })),
          b64(notCa),
          b64(sub.der),
        ]
      },
      /not a CA/,
    ],
    [
      'intermediates out of order',
      () => [
        b64(mintDeviceLeaf(sub, { serial: SERIAL, freshnessCode: mdaFreshnessCode(identity.publicKey) })),
        b64(root.der),
        b64(sub.der),
      ],
      /not signed by certificate 1/,
    ],
    [
      'a tampered leaf',
      () => {
        const leaf = mintDeviceLeaf(sub, { serial: SERIAL, freshnessCode: mdaFreshnessCode(identity.publicKey) })
        const at = leaf.indexOf(Buffer.from(SERIAL))
        leaf[at + 3] = leaf[at + 3]! ^ 1
        return [b64(leaf), b64(sub.der)]
      },
      /not signed by certificate 1/,
    ],
    ['garbage', () => ['AAAA'], /does not parse as X.509/],
    ['not base64', () => ['@@@'], /not base64 DER/],
    ['an empty chain', () => [], /1 to 4 certificates/],
    ['not a list', () => 'MII', /1 to 4 certificates/],
    ['too long a chain', () => Array(5).fill(b64(sub.der)), /1 to 4 certificates/],
  ]
  for (const [name, chain, reason] of refusals) {
    test(`refused: ${name}`, () => {
      const v = verifyMdaChain(chain(), { serial: SERIAL, publicKey: identity.publicKey }, { roots })
      expect(v.ok).toBe(false)
      expect((v as { reason: string }).reason).toMatch(reason)
    })
  }

  test('a genuine-shaped chain fails against the real Apple root (the test root is not trusted by default)', () => {
    const chain = chainFor({ serial: SERIAL, freshnessCode: mdaFreshnessCode(identity.publicKey) })
    const v = verifyMdaChain(chain, { serial: SERIAL, publicKey: identity.publicKey }, { roots: mdaRoots() })
    expect(v).toEqual({ ok: false, reason: expect.stringContaining('trusted root') })
  })

  test('PEM files with several certificates are read in order; a file with none is refused', () => {
    expect(pemCertificates(sub.pem + root.pem)).toEqual([b64(sub.der), b64(root.der)])
    expect(() => mdaRoots('not a certificate')).toThrow(/no PEM certificate/)
  })
})
