/** The one way a peer is pinned by hand, shared by `trust pin` and `cluster setup`: its key from --key or from the
 * peer's handshake, its serial and fingerprint printed to compare out of band, a confirmation, then the pin. */
import { consola } from 'consola'
import { UsageError } from '../errors.ts'
import { CIPHERS, type CipherName } from '../link/aead-channel.ts'
import { readPeerIdentity } from '../link/peer-identity.ts'
import { TrustError } from '../trust/errors.ts'
import { fingerprint } from '../trust/identity.ts'
import { defaultPinFile, loadLocalIdentity } from '../trust/local-identity.ts'
import { openLocalPinStore } from '../trust/local-pin-store.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { manualPin, parsePublicKey, planPin } from '../trust/manual-pin.ts'
import { confirm } from './confirm.ts'

export interface PinPeerRequest {
  /** Required with `key`; with `fromPeer`, the serial the peer must present. */
  serial?: string
  /** Base64 key text, as --key gave it. */
  key?: string
  fromPeer?: { host: string; port: number }
  replace: boolean
  yes: boolean
  clusterId: string
  /** With fromPeer: the peer's --cipher. */
  cipher?: CipherName
  /** The serial this machine presents to the peer (serve's --node-name; default the machine serial). */
  nodeName?: string
  /** Flag names for messages (cluster setup calls them --peer-serial and --from-peer). */
  flags: { serial: string; key: string; fromPeer: string }
}

export interface PinnedPeer {
  serial: string
  publicKey: Uint8Array
  action: 'new' | 'unchanged' | 'replace'
  location: string
}

/** HOST:PORT of a link port; `what` names the flag. */
export function parseHostPort(value: string, what: string): { host: string; port: number } {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(value.trim())
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535)
    throw new UsageError(`${what} must be HOST:PORT (the peer's link port), got '${value}'`)
  return { host: m[1]!, port: Number(m[2]) }
}

export async function pinPeer(r: PinPeerRequest): Promise<PinnedPeer> {
  const { flags } = r
  if (r.key !== undefined && r.fromPeer) throw new UsageError(`give ${flags.key} or ${flags.fromPeer}, not both`)
  if (r.key === undefined && !r.fromPeer)
    throw new UsageError(
      `give the peer's key: ${flags.key} BASE64 (from its 'dbcluster identity show') or ${flags.fromPeer} (read from its link port)`,
    )
  if (r.key !== undefined && !r.serial) throw new UsageError(`${flags.key} needs ${flags.serial} SERIAL`)
  if (r.serial !== undefined && !r.serial.trim()) throw new UsageError(`${flags.serial} must not be empty`)
  let publicKey = r.key !== undefined ? parsePublicKey(r.key, flags.key) : undefined
  const { store, location } = openLocalPinStore(defaultPinFile())
  let serial = r.serial
  if (r.fromPeer) {
    const { identity, created, keyFile } = loadLocalIdentity()
    if (created) consola.info(`created this machine's identity key at ${keyFile} (mode 0600)`)
    const where = `${r.fromPeer.host}:${r.fromPeer.port}`
    const presented = await readPeerIdentity({
      ...r.fromPeer,
      identity,
      serial: r.nodeName ?? machineSerial(),
      clusterId: r.clusterId,
      cipher: r.cipher,
    })
    if (serial !== undefined && presented.serial !== serial)
      throw new TrustError(
        'E_SERIAL_MISMATCH',
        `${where} presents serial '${presented.serial}', not '${serial}'`,
        `check the address, or pass ${flags.serial} ${presented.serial} if that is the machine you mean`,
      )
    serial = presented.serial
    publicKey = presented.publicKey
    consola.info(`${where} proved it holds this key (its signature over the handshake verified)`)
  }
  const plan = planPin(store, serial!, publicKey!, r.replace)
  const print = fingerprint(publicKey!)
  console.log(`serial       ${serial}`)
  console.log(`fingerprint  ${print}`)
  console.log(`key          ${Buffer.from(publicKey!).toString('base64')}`)
  if (plan.action === 'unchanged') {
    consola.success(`${serial} is already pinned to this key (${location}); nothing changed`)
    return { serial: serial!, publicKey: publicKey!, action: 'unchanged', location }
  }
  if (plan.action === 'replace') {
    const old = fingerprint(new Uint8Array(Buffer.from(plan.current.publicKey, 'base64')))
    console.log(`replaces     ${old} (${plan.current.source}, ${new Date(plan.current.pinnedAt).toISOString()})`)
  }
  const question = `Pin ${serial} to fingerprint ${print}? Compare it with 'dbcluster identity show' on that machine.`
  if (!(await confirm(question, { yes: r.yes, flag: '--yes' })))
    throw new TrustError(
      'E_PIN_DECLINED',
      `${serial} was not pinned (not confirmed)`,
      'run the command again to pin it',
    )
  store.set(serial!, manualPin(publicKey!))
  consola.success(`${plan.action === 'replace' ? 're-pinned' : 'pinned'} ${serial} (${print}) in ${location}`)
  return { serial: serial!, publicKey: publicKey!, action: plan.action, location }
}

/** What --from-peer's handshake must name as the peer does (`trust pin` and `cluster setup` share them). */
export const PEER_HANDSHAKE_ARGS = {
  'cluster-id': {
    type: 'string',
    description: "With --from-peer: the peer's --cluster-id (bound into the handshake)",
    default: 'dbcluster',
  },
  cipher: {
    type: 'enum',
    options: [...CIPHERS] as CipherName[],
    description: "With --from-peer: the peer's --cipher (its handshake refuses another)",
    default: 'aes-256-gcm',
    valueHint: CIPHERS.join('|'),
  },
} as const
