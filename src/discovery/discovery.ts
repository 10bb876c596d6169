/** Discovery on the cable: watch for a link-local interface, announce ourselves with signed beacons, collect the peers
 * whose beacons check out, elect ranks, and start over when the link comes or goes. */
import { consola } from 'consola'
import type { Identity } from '../trust/identity.ts'
import { readNeighbours } from './arp.ts'
import { BEACON_PORT, signBeacon, verifyBeacon } from './beacon.ts'
import { electRanks, type Member } from './election.ts'
import { linkLocalInterfaces, type LinkLocalInterface } from './link-local.ts'

const log = consola.withTag('discovery')

export interface DiscoveryOptions {
  identity: Identity
  serial: string
  /** TCP port of this node's sealed link listener, announced in beacons. */
  linkPort: number
  beaconPort?: number
  /** Restrict to one interface (e.g. bridge0); default: the first link-local one. */
  iface?: string
  intervalMs?: number
  /** A peer is dropped after this many intervals without a beacon. */
  missedBeacons?: number
  isTrusted: (serial: string, publicKey: string) => boolean
  clusterId?: string
  now?: () => number
  interfaces?: () => LinkLocalInterface[]
}

export interface DiscoveryState {
  iface: LinkLocalInterface | null
  /** Every verified member including this node, with its elected rank. */
  members: (Member & { rank: number })[]
  /** Neighbours from the ARP table that sent no verified beacon: candidates only, never members. */
  candidates: string[]
  /** Recent rejected beacons with the reason (newest last, at most 20). */
  rejected: { from: string; reason: string }[]
}

export class Discovery {
  readonly #o: Required<Omit<DiscoveryOptions, 'iface' | 'clusterId'>> & Pick<DiscoveryOptions, 'iface' | 'clusterId'>
  #iface: LinkLocalInterface | null = null
  #peers = new Map<string, Member & { lastSeen: number }>()
  #rejected: { from: string; reason: string }[] = []
  #candidates: string[] = []
  #socket: import('bun').udp.Socket<'buffer'> | null = null
  #timer: ReturnType<typeof setInterval> | null = null
  #listeners: ((state: DiscoveryState) => void)[] = []
  #signature = ''

  constructor(options: DiscoveryOptions) {
    this.#o = {
      beaconPort: BEACON_PORT,
      intervalMs: 1000,
      missedBeacons: 3,
      now: Date.now,
      interfaces: () => linkLocalInterfaces(options.iface),
      ...options,
    }
  }

  onChange(listener: (state: DiscoveryState) => void): void {
    this.#listeners.push(listener)
  }

  async start(): Promise<void> {
    const socket = await Bun.udpSocket({
      port: this.#o.beaconPort,
      hostname: '0.0.0.0',
      socket: { data: (_s, data, _port, address) => this.#receive(new Uint8Array(data), address) },
    })
    socket.setBroadcast(true)
    this.#socket = socket
    await this.#tick()
    this.#timer = setInterval(() => void this.#tick(), this.#o.intervalMs)
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#socket?.close()
    this.#timer = null
    this.#socket = null
  }

  state(): DiscoveryState {
    const self = this.#iface
      ? [
          {
            serial: this.#o.serial,
            address: this.#iface.address,
            port: this.#o.linkPort,
            publicKey: Buffer.from(this.#o.identity.publicKey).toString('base64'),
          },
        ]
      : []
    const peers = [...this.#peers.values()].map(({ lastSeen: _, ...m }) => m)
    return {
      iface: this.#iface,
      members: this.#iface ? electRanks([...self, ...peers]) : [],
      candidates: this.#candidates,
      rejected: [...this.#rejected],
    }
  }

  async #tick(): Promise<void> {
    const current = this.#o.interfaces()[0] ?? null
    if (current?.address !== this.#iface?.address || current?.name !== this.#iface?.name) {
      log.info(
        current ? `link-local link on ${current.name} (${current.address})` : 'no link-local link: waiting for a cable',
      )
      this.#iface = current
      this.#peers.clear() // a new link means a new cluster: nothing carries over
    }
    const now = this.#o.now()
    for (const [address, peer] of this.#peers) {
      if (now - peer.lastSeen > this.#o.intervalMs * this.#o.missedBeacons) {
        log.warn(`peer ${peer.serial} at ${address} went quiet`)
        this.#peers.delete(address)
      }
    }
    if (this.#iface && this.#socket) {
      const datagram = await signBeacon(this.#o.identity, {
        serial: this.#o.serial,
        address: this.#iface.address,
        port: this.#o.linkPort,
        ts: now,
        ...(this.#o.clusterId ? { cluster: this.#o.clusterId } : {}),
      })
      this.#socket.send(datagram, this.#o.beaconPort, this.#iface.broadcast)
      const known = new Set([this.#iface.address, ...this.#peers.keys()])
      this.#candidates = readNeighbours(this.#iface.name)
        .map((n) => n.address)
        .filter((a) => !known.has(a))
    }
    this.#emitIfChanged()
  }

  #receive(datagram: Uint8Array, from: string): void {
    if (!this.#iface || from === this.#iface.address) return
    const verdict = verifyBeacon(datagram, { from, now: this.#o.now(), isTrusted: this.#o.isTrusted })
    if (!verdict.ok) {
      if (this.#rejected.at(-1)?.reason !== verdict.reason) {
        log.warn(`ignored beacon: ${verdict.reason}`)
        this.#rejected.push({ from, reason: verdict.reason })
        if (this.#rejected.length > 20) this.#rejected.shift()
      }
      return
    }
    const { serial, address, port, publicKey } = verdict.body
    this.#peers.set(address, { serial, address, port, publicKey, lastSeen: this.#o.now() })
    this.#emitIfChanged()
  }

  #emitIfChanged(): void {
    const state = this.state()
    const signature = JSON.stringify([
      state.iface?.address,
      state.members.map((m) => [m.serial, m.address, m.port, m.rank]),
    ])
    if (signature === this.#signature) return
    this.#signature = signature
    for (const listener of this.#listeners) listener(state)
  }
}
