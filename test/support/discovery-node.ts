/** One discovery node for the network-namespace test: identity from a seed, trusted keys from env; prints each change
 * of membership as one JSON line and exits after DURATION_MS. */
import { p256 } from '@noble/curves/nist.js'
import { Discovery } from '../../src/discovery/discovery.ts'
import type { Identity } from '../../src/trust/identity.ts'

const seed = Number(process.env.SEED)
const secret = new Uint8Array(32).fill(seed)
const identity: Identity = {
  kind: 'software',
  publicKey: p256.getPublicKey(secret, true),
  sign: async (m) => p256.sign(m, secret),
}
const trusted: Record<string, string> = JSON.parse(process.env.TRUSTED ?? '{}')
const discovery = new Discovery({
  identity,
  serial: process.env.SERIAL!,
  linkPort: 7000 + seed,
  intervalMs: Number(process.env.INTERVAL_MS ?? 200),
  isTrusted: (serial, key) => trusted[serial] === key,
})
discovery.onChange((state) =>
  console.log(
    JSON.stringify({
      t: Date.now(),
      iface: state.iface?.name ?? null,
      members: state.members,
      rejected: state.rejected.length,
    }),
  ),
)
await discovery.start()
setTimeout(
  () => {
    const s = discovery.state()
    console.log(JSON.stringify({ final: true, members: s.members, rejected: s.rejected, candidates: s.candidates }))
    discovery.stop()
    process.exit(0)
  },
  Number(process.env.DURATION_MS ?? 3000),
)
