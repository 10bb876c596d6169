/** `serve --discover`: run discovery until the expected number of nodes (this one included) has been seen on the
 * link-local link, every one vouched for by a pinned key — pinned earlier, or pinned now from the coordinator's peer
 * list when one is configured — and the membership has held still for a moment; then the elected ranks and the
 * members' link addresses are the cluster. The addresses are link-local, so the sealed links bind to that cable: when it
 * goes, the ring reports degraded; it never re-forms over Wi-Fi, Ethernet or a VPN. */
import { consola } from 'consola'
import type { CoordinatorClient, PinStore } from '../coordinator/client.ts'
import { DbcError } from '../errors.ts'
import { Discovery, type DiscoveryOptions, type DiscoveryState } from './discovery.ts'
import type { LinkLocalInterface } from './link-local.ts'

const log = consola.withTag('discovery')

export interface FormClusterOptions extends Omit<DiscoveryOptions, 'isTrusted'> {
  /** Nodes the cluster has, this one included. */
  nodes: number
  pins: PinStore
  /** Where unknown serials are looked up (their attested key is pinned), if configured. */
  coordinator?: CoordinatorClient
  /** The membership must hold this long before the cluster forms (default 3 beacon intervals). */
  stableMs?: number
  signal?: AbortSignal
}

export interface FormedCluster {
  discovery: Discovery
  iface: LinkLocalInterface
  /** Link addresses in rank order (lowest IPv4 first). */
  peers: { host: string; port: number; serial: string }[]
  rank: number
}

export async function formCluster(o: FormClusterOptions): Promise<FormedCluster> {
  if (!Number.isInteger(o.nodes) || o.nodes < 2)
    throw new DbcError('E_USAGE', `--nodes must be at least 2 with --discover, got ${o.nodes}`)
  const asked = new Set<string>()
  const isTrusted = (serial: string, publicKey: string): boolean => {
    const pin = o.pins.get(serial)
    if (pin) return pin.publicKey === publicKey
    if (o.coordinator && !asked.has(serial)) {
      // the beacon is ignored until the coordinator vouches for this serial; its next beacon then checks against the pin
      asked.add(serial)
      o.coordinator.pinPeerKey(serial).then(
        (r) => log.info(r.message),
        (error) => log.warn(`the coordinator does not vouch for ${serial}: ${(error as Error).message}`),
      )
    }
    return false
  }
  const discovery = new Discovery({ ...o, isTrusted })
  const intervalMs = o.intervalMs ?? 1000
  const stableMs = o.stableMs ?? 3 * intervalMs
  await discovery.start()
  try {
    const state = await new Promise<DiscoveryState>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | null = null
      let said = ''
      const check = (s: DiscoveryState) => {
        if (timer) clearTimeout(timer)
        timer = null
        const line = s.iface
          ? `on ${s.iface.name} (${s.iface.address}): ${s.members.length} of ${o.nodes} nodes seen`
          : 'no link-local interface yet: connect the Thunderbolt cable (or give --iface)'
        if (line !== said) log.info((said = line))
        if (s.iface && s.members.length === o.nodes) timer = setTimeout(() => resolve(discovery.state()), stableMs)
        else if (s.members.length > o.nodes)
          log.warn(
            `${s.members.length} nodes answer on ${s.iface?.name}, more than --nodes ${o.nodes}: waiting for it to settle`,
          )
      }
      discovery.onChange(check)
      check(discovery.state())
      o.signal?.addEventListener('abort', () => reject(new DbcError('E_ABORTED', 'stopped while discovering peers')), {
        once: true,
      })
    })
    const me = state.members.find((m) => m.serial === o.serial)!
    const formed: FormedCluster = {
      discovery,
      iface: state.iface!,
      peers: state.members.map((m) => ({ host: m.address, port: m.port, serial: m.serial })),
      rank: me.rank,
    }
    log.success(
      `cluster on ${formed.iface.name}: ${formed.peers.map((p, r) => `rank ${r} ${p.serial} ${p.host}`).join(', ')}; this node is rank ${formed.rank}`,
    )
    // from now on the membership is fixed; say so when the cable or a member goes, the ring reports degraded itself
    discovery.onChange((s) => {
      if (!s.iface)
        log.warn(
          `the link-local link on ${formed.iface.name} is gone: the cluster stays on it and reports degraded until it is back`,
        )
      else if (s.members.length < o.nodes)
        log.warn(`${o.nodes - s.members.length} member(s) stopped answering on ${s.iface.name}`)
    })
    return formed
  } catch (error) {
    discovery.stop()
    throw error
  }
}
