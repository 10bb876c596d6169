/** X.509 chains minted in tests (a test root standing in for Apple's), built field by field with @peculiar/asn1-x509 and
 * signed by node:crypto, so the MDA verifier is checked against certificates it did not make itself. */
import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import { AsnConvert, OctetString } from '@peculiar/asn1-schema'
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  BasicConstraints,
  Certificate,
  Extension,
  Extensions,
  Name,
  RelativeDistinguishedName,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from '@peculiar/asn1-x509'

const ECDSA_SHA384 = '1.2.840.10045.4.3.3'
const BASIC_CONSTRAINTS = '2.5.29.19'
const COMMON_NAME = '2.5.4.3'

export interface TestCa {
  name: string
  key: KeyObject
  der: Buffer
  pem: string
}

const nameOf = (cn: string) =>
  new Name([
    new RelativeDistinguishedName([
      new AttributeTypeAndValue({ type: COMMON_NAME, value: new AttributeValue({ utf8String: cn }) }),
    ]),
  ])

export const toPem = (der: Buffer) =>
  `-----BEGIN CERTIFICATE-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END CERTIFICATE-----\n`

let serialCounter = 1

/** One certificate: subject key `publicKey`, signed by `issuer` (or self-signed with `selfKey`). */
export function mintCertificate(o: {
  subject: string
  publicKey: KeyObject
  issuer: { name: string; key: KeyObject }
  ca: boolean
  notBefore?: Date
  notAfter?: Date
  extensions?: { oid: string; value: Uint8Array }[]
}): Buffer {
  const now = Date.now()
  const extensions = new Extensions([
    new Extension({
      extnID: BASIC_CONSTRAINTS,
      critical: true,
      extnValue: new OctetString(AsnConvert.serialize(new BasicConstraints({ cA: o.ca }))),
    }),
    ...(o.extensions ?? []).map(
      (e) => new Extension({ extnID: e.oid, critical: false, extnValue: new OctetString(e.value) }),
    ),
  ])
  const algorithm = new AlgorithmIdentifier({ algorithm: ECDSA_SHA384 })
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: new Uint8Array([serialCounter++ & 0x7f, 1, 2, 3]).buffer,
    signature: algorithm,
    issuer: nameOf(o.issuer.name),
    validity: new Validity({
      notBefore: o.notBefore ?? new Date(now - 3600_000),
      notAfter: o.notAfter ?? new Date(now + 365 * 86400_000),
    }),
    subject: nameOf(o.subject),
    subjectPublicKeyInfo: AsnConvert.parse(o.publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo),
    extensions,
  })
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs))
  const signature = sign('sha384', tbsDer, o.issuer.key)
  const cert = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: algorithm,
    signatureValue: signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength),
  })
  return Buffer.from(AsnConvert.serialize(cert))
}

export function mintCa(name: string, issuer?: TestCa): TestCa {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' })
  const der = mintCertificate({
    subject: name,
    publicKey,
    issuer: issuer ? { name: issuer.name, key: issuer.key } : { name, key: privateKey },
    ca: true,
  })
  return { name, key: createPrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' })), der, pem: toPem(der) }
}

/** An Apple-shaped DevicePropertiesAttestation leaf: serial and freshness code in Apple's extensions. */
export function mintDeviceLeaf(
  issuer: TestCa,
  fields: { serial?: string; freshnessCode?: Uint8Array; udid?: string; notAfter?: Date; notBefore?: Date },
): Buffer {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' })
  const text = (s: string) => new TextEncoder().encode(s)
  return mintCertificate({
    subject: 'device attestation',
    publicKey,
    issuer: { name: issuer.name, key: issuer.key },
    ca: false,
    notAfter: fields.notAfter,
    notBefore: fields.notBefore,
    extensions: [
      ...(fields.serial !== undefined ? [{ oid: '1.2.840.113635.100.8.9.1', value: text(fields.serial) }] : []),
      ...(fields.udid !== undefined ? [{ oid: '1.2.840.113635.100.8.9.2', value: text(fields.udid) }] : []),
      { oid: '1.2.840.113635.100.8.10.1', value: text('15.2') },
      ...(fields.freshnessCode ? [{ oid: '1.2.840.113635.100.8.11.1', value: fields.freshnessCode }] : []),
    ],
  })
}
