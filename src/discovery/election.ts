/** Rank election: deterministic on every node — ascending IPv4 address on the link, so the lowest address is rank 0. */
import { ipv4ToNumber } from './link-local.ts'

export interface Member {
  serial: string
  address: string
  port: number
  publicKey: string
}

export function electRanks<T extends { address: string }>(members: readonly T[]): (T & { rank: number })[] {
  const seen = new Set<string>()
  for (const m of members) {
    if (seen.has(m.address)) throw new Error(`two members claim ${m.address}`)
    seen.add(m.address)
  }
  return [...members]
    .sort((a, b) => ipv4ToNumber(a.address) - ipv4ToNumber(b.address))
    .map((m, rank) => ({ ...m, rank }))
}
