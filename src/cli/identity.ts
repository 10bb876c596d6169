/** `dbcluster identity`: this machine's signing key, fingerprint and signed attestation. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { fingerprint } from '../trust/identity.ts'
import { mdaFreshnessCode } from '../trust/mda.ts'
import { attestLocalMachine, defaultKeyFile, loadLocalIdentity } from '../trust/local-identity.ts'

const keyFileArg = {
  type: 'string' as const,
  description:
    'Software key file (default: $DBCLUSTER_HOME/identity.key, ~/.dbcluster); a Secure Enclave key is kept beside it as identity.enclave',
  valueHint: 'FILE',
}

const show = defineCommand({
  meta: { name: 'show', description: 'Print the public key, its fingerprint, its kind and the signed attestation' },
  args: {
    'key-file': keyFileArg,
    rdma: {
      type: 'boolean',
      description: 'Ask for RDMA: the capability gate decides what the attestation says (and says why on stderr)',
      default: false,
    },
    json: {
      type: 'boolean',
      description: 'Print {public_key, fingerprint, key_kind, key_file, mda_nonce, attestation} as JSON',
      default: false,
    },
  },
  async run({ args }) {
    const { identity, created, keyFile } = loadLocalIdentity(args['key-file'] ?? defaultKeyFile())
    if (created) consola.info(`created a new identity key at ${keyFile} (mode 0600)`)
    const { attestation, rdma } = await attestLocalMachine(identity, args.rdma)
    if (args.rdma && !rdma.enabled)
      consola.warn(`RDMA requested but not available: ${rdma.reason}; attesting rdmaEnabled=false`)
    const publicKey = Buffer.from(identity.publicKey).toString('base64')
    // what an MDM must request the device attestation with, so Apple's chain vouches for this key (docs/trust.md)
    const mdaNonce = Buffer.from(mdaFreshnessCode(identity.publicKey)).toString('base64')
    if (args.json) {
      console.log(
        JSON.stringify({
          public_key: publicKey,
          fingerprint: fingerprint(identity.publicKey),
          key_kind: identity.kind,
          key_file: keyFile,
          mda_nonce: mdaNonce,
          attestation,
        }),
      )
      return
    }
    console.log(`public key   ${publicKey}`)
    console.log(`fingerprint  ${fingerprint(identity.publicKey)}`)
    console.log(`kind         ${identity.kind} (${keyFile})`)
    console.log(`MDA nonce    ${mdaNonce} (DeviceAttestationNonce for serve --mda-chain)`)
    console.log(`attestation  ${JSON.stringify(attestation, null, 2)}`)
  },
})

const init = defineCommand({
  meta: {
    name: 'init',
    description: 'Create this machine’s identity key if it has none (0600), and print its fingerprint',
  },
  args: { 'key-file': keyFileArg },
  run({ args }) {
    const { identity, created, keyFile } = loadLocalIdentity(args['key-file'] ?? defaultKeyFile())
    consola.success(
      `${created ? 'created' : 'kept the existing'} ${identity.kind} identity at ${keyFile}: ${fingerprint(identity.publicKey)}`,
    )
  },
})

export default defineCommand({
  meta: { name: 'identity', description: 'This machine’s identity key and attestation' },
  subCommands: { show, init },
})
