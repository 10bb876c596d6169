/** Apple managed device attestation (MDA): the evidence that lifts a Secure Enclave claim to `hardware` trust.
 *
 * An MDM server asks a Mac for `DevicePropertiesAttestation` (the DeviceInformation command) with
 * `DeviceAttestationNonce` set to this machine's freshness code, SHA-256 of its 33-byte compressed identity key. Apple's
 * attestation servers answer with a certificate chain, leaf first, ending at the Apple Enterprise Attestation Root CA,
 * whose leaf carries the device's serial and that nonce in Apple's extensions. A chain that verifies to the root and
 * carries both values ties this serial to this key with Apple's signature, which a software key cannot forge. What is
 * checked, exactly, is listed in docs/trust.md §Hardware trust. */
import { X509Certificate, createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { UsageError } from '../errors.ts'
import { AsnConvert } from '@peculiar/asn1-schema'
import { Certificate } from '@peculiar/asn1-x509'
import { APPLE_ENTERPRISE_ATTESTATION_ROOT_PEM } from './apple-attestation-root.ts'
import { compressPublicKey } from './identity.ts'

/** Apple's extension OIDs in a DevicePropertiesAttestation leaf (values are the raw bytes, not DER-wrapped). */
export const MDA_OID = {
  serial: '1.2.840.113635.100.8.9.1',
  udid: '1.2.840.113635.100.8.9.2',
  osVersion: '1.2.840.113635.100.8.10.1',
  sepOsVersion: '1.2.840.113635.100.8.10.2',
  freshnessCode: '1.2.840.113635.100.8.11.1',
} as const

/** Leaf, intermediate(s), and optionally the root itself; anything longer is not Apple's. */
export const MDA_MAX_CHAIN = 4
const MAX_CERT_BASE64 = 8192

/** The nonce an MDM server must request the attestation with, for this identity key. */
export function mdaFreshnessCode(publicKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(compressPublicKey(publicKey)).digest())
}

/** PEM text (one or more certificates) → base64 DER strings, in file order. */
export function pemCertificates(text: string): string[] {
  const out: string[] = []
  for (const m of text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g))
    out.push(m[1]!.replace(/\s+/g, ''))
  return out
}

/** `serve --mda-chain FILE`: the chain as the MDM delivered it, PEM, leaf first; refused when unreadable or empty. */
export function readMdaChain(path: string): string[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new UsageError(`--mda-chain: cannot read ${path}: ${(error as Error).message}`)
  }
  const chain = pemCertificates(text)
  if (chain.length === 0 || chain.length > MDA_MAX_CHAIN)
    throw new UsageError(
      `--mda-chain: ${path} holds ${chain.length} PEM certificates; expected 1 to ${MDA_MAX_CHAIN}, leaf first`,
    )
  return chain
}

/** Trust anchors from PEM text; the default is Apple's root. Throws on text without a valid certificate. */
export function mdaRoots(pem: string = APPLE_ENTERPRISE_ATTESTATION_ROOT_PEM): X509Certificate[] {
  const certs = pemCertificates(pem)
  if (certs.length === 0) throw new Error('no PEM certificate found')
  return certs.map((b64) => new X509Certificate(Buffer.from(b64, 'base64')))
}

export interface MdaFacts {
  serial: string
  udid: string | null
  osVersion: string | null
  sepOsVersion: string | null
}

export type MdaVerdict = { ok: true; facts: MdaFacts } | { ok: false; reason: string }

const time = (text: string) => Date.parse(text)

/** Verifies a chain (base64 DER, leaf first) for this serial and key against the roots. Never throws on untrusted input. */
export function verifyMdaChain(
  chain: unknown,
  expect: { serial: string; publicKey: Uint8Array },
  options: { roots: readonly X509Certificate[]; now?: number },
): MdaVerdict {
  if (!Array.isArray(chain) || chain.length === 0 || chain.length > MDA_MAX_CHAIN)
    return { ok: false, reason: `the MDA chain must list 1 to ${MDA_MAX_CHAIN} certificates, leaf first` }
  const certs: X509Certificate[] = []
  const der: Buffer[] = []
  for (const [i, b64] of chain.entries()) {
    if (typeof b64 !== 'string' || b64.length > MAX_CERT_BASE64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64))
      return { ok: false, reason: `certificate ${i} of the MDA chain is not base64 DER` }
    try {
      der.push(Buffer.from(b64, 'base64'))
      certs.push(new X509Certificate(der[i]!))
    } catch {
      return { ok: false, reason: `certificate ${i} of the MDA chain does not parse as X.509` }
    }
  }
  const now = options.now ?? Date.now()
  for (const [i, c] of certs.entries()) {
    if (!(time(c.validFrom) <= now && now <= time(c.validTo)))
      return {
        ok: false,
        reason: `certificate ${i} of the MDA chain is outside its validity (${c.validFrom} – ${c.validTo})`,
      }
  }
  for (let i = 0; i + 1 < certs.length; i++) {
    const issuer = certs[i + 1]!
    if (!issuer.ca) return { ok: false, reason: `certificate ${i + 1} of the MDA chain is not a CA` }
    if (!certs[i]!.checkIssued(issuer) || !certs[i]!.verify(issuer.publicKey))
      return { ok: false, reason: `certificate ${i} of the MDA chain is not signed by certificate ${i + 1}` }
  }
  const top = certs.at(-1)!
  const anchored = options.roots.some(
    (root) =>
      root.fingerprint256 === top.fingerprint256 || (root.ca && top.checkIssued(root) && top.verify(root.publicKey)),
  )
  if (!anchored)
    return { ok: false, reason: 'the MDA chain does not end at a trusted root (Apple Enterprise Attestation Root CA)' }
  let extensions: Map<string, Uint8Array>
  try {
    const leaf = AsnConvert.parse(der[0]!, Certificate)
    extensions = new Map(
      (leaf.tbsCertificate.extensions ?? []).map((e) => [e.extnID, new Uint8Array(e.extnValue.buffer)]),
    )
  } catch {
    return { ok: false, reason: 'the MDA leaf certificate has unreadable extensions' }
  }
  const text = (oid: string) => {
    const v = extensions.get(oid)
    return v ? new TextDecoder().decode(v) : null
  }
  const serial = text(MDA_OID.serial)
  if (serial === null) return { ok: false, reason: 'the MDA leaf names no device serial' }
  if (serial !== expect.serial)
    return {
      ok: false,
      reason: `the MDA leaf is for serial ${JSON.stringify(serial.slice(0, 64))}, not ${expect.serial}`,
    }
  const nonce = extensions.get(MDA_OID.freshnessCode)
  let expected: Uint8Array
  try {
    expected = mdaFreshnessCode(expect.publicKey)
  } catch {
    return { ok: false, reason: 'the attested public key is not a P-256 point' }
  }
  if (!nonce || Buffer.compare(Buffer.from(nonce), Buffer.from(expected)) !== 0)
    return {
      ok: false,
      reason:
        "the MDA leaf's freshness code is not SHA-256 of this identity key (the attestation was requested for another key)",
    }
  return {
    ok: true,
    facts: {
      serial,
      udid: text(MDA_OID.udid),
      osVersion: text(MDA_OID.osVersion),
      sepOsVersion: text(MDA_OID.sepOsVersion),
    },
  }
}
