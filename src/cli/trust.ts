/** `dbcluster trust`: the peers this machine trusts — list the pins, pin a peer's key by hand, forget one. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { TrustError } from '../trust/errors.ts'
import { fingerprint } from '../trust/identity.ts'
import { defaultPinFile } from '../trust/local-identity.ts'
import { openLocalPinStore } from '../trust/local-pin-store.ts'
import { parseHostPort, PEER_HANDSHAKE_ARGS, pinPeer } from './pin-peer.ts'

const keyOf = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'))
const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString())

const list = defineCommand({
  meta: { name: 'list', description: 'Every pinned peer: serial, fingerprint, key, who vouched, when last seen' },
  args: {
    json: {
      type: 'boolean',
      description:
        'Print a JSON array of {serial, fingerprint, public_key, key_kind, source, store, pinned_at, last_seen_at}',
      default: false,
    },
  },
  run({ args }) {
    const { store, location, choice } = openLocalPinStore(defaultPinFile())
    const rows = Object.entries(store.list())
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([serial, pin]) => ({
        serial,
        fingerprint: fingerprint(keyOf(pin.publicKey)),
        public_key: pin.publicKey,
        key_kind: pin.keyKind,
        source: pin.source,
        store: choice.kind,
        pinned_at: iso(pin.pinnedAt),
        last_seen_at: iso(pin.lastSeenAt),
      }))
    if (args.json) return console.log(JSON.stringify(rows))
    if (rows.length === 0) return consola.info(`no pins in ${location}`)
    console.log('| serial | fingerprint | source | pinned | last seen | key |')
    console.log('| --- | --- | --- | --- | --- | --- |')
    for (const r of rows)
      console.log(
        `| ${r.serial} | ${r.fingerprint} | ${r.source} (${r.store}) | ${r.pinned_at} | ${r.last_seen_at ?? 'never'} | ${r.public_key} |`,
      )
    consola.info(`${rows.length} pin(s) in ${location}`)
  },
})

const pin = defineCommand({
  meta: {
    name: 'pin',
    description:
      "Pin a peer's identity key for its serial: given (--key) or read from its link port (--from-peer); prints the fingerprint to compare and asks first",
  },
  args: {
    serial: {
      type: 'string',
      description:
        "The peer's serial (its --node-name, or its machine serial); with --from-peer, checked against what it presents",
      valueHint: 'SERIAL',
    },
    key: {
      type: 'string',
      description:
        "The peer's public key, base64 of the compressed or uncompressed P-256 point ('dbcluster identity show' prints it)",
      valueHint: 'BASE64',
    },
    'from-peer': {
      type: 'string',
      description:
        "Read the key from a running node's link port: the key whose signature over the handshake verifies (the peer must already trust this machine)",
      valueHint: 'HOST:PORT',
    },
    yes: { type: 'boolean', description: 'Pin without asking (needed without a terminal)', default: false },
    replace: {
      type: 'boolean',
      description: 'Allow replacing a different key already pinned for the serial (a re-keyed machine)',
      default: false,
    },
    ...PEER_HANDSHAKE_ARGS,
    'node-name': {
      type: 'string',
      description:
        'With --from-peer: the serial this machine presents (as serve --node-name; default: the machine serial)',
    },
  },
  async run({ args }) {
    await pinPeer({
      serial: args.serial,
      key: args.key,
      fromPeer: args['from-peer'] !== undefined ? parseHostPort(args['from-peer'], '--from-peer') : undefined,
      replace: args.replace === true,
      yes: args.yes === true,
      clusterId: args['cluster-id'],
      cipher: args.cipher,
      nodeName: args['node-name'],
      flags: { serial: '--serial', key: '--key', fromPeer: '--from-peer' },
    })
  },
})

const forget = defineCommand({
  meta: { name: 'forget', description: 'Remove the pin of SERIAL: that peer can no longer join until pinned again' },
  args: { serial: { type: 'positional', description: 'The pinned serial (see dbcluster trust list)', required: true } },
  run({ args }) {
    const { store, location } = openLocalPinStore(defaultPinFile())
    const current = store.get(args.serial)
    if (!current || !store.delete(args.serial))
      throw new TrustError(
        'E_PIN_UNKNOWN',
        `no pin for '${args.serial}' in ${location}`,
        "run 'dbcluster trust list' for the pinned serials",
      )
    consola.success(
      `forgot ${args.serial} (${fingerprint(keyOf(current.publicKey))}); a running node refuses it from its next handshake`,
    )
  },
})

export default defineCommand({
  meta: { name: 'trust', description: 'Pinned peer keys: list them, pin a peer by hand, forget one' },
  subCommands: { list, pin, forget },
})
