/** Static membership: `--peers host:port,…` in rank order, and the layer range each rank holds (`--split` or an even
 * largest-remainder split). */
import { UsageError } from '../errors.ts'
import { largestRemainder } from './plan-layers.ts'
import type { RingAddress } from './ring.ts'

export function parsePeers(value: string): RingAddress[] {
  const peers = value.split(',').map((p) => {
    const m = /^([^:\s]+):(\d{1,5})$/.exec(p.trim())
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535)
      throw new UsageError(`bad peer '${p}'`, 'use host:port,host:port (rank order)')
    return { host: m[1]!, port: Number(m[2]) }
  })
  if (peers.length < 2) throw new UsageError('--peers needs at least two nodes')
  return peers
}

/** [lo, hi) of every rank. */
export function layerRanges(numLayers: number, nodes: number, split?: string): [number, number][] {
  let counts: number[]
  if (split) {
    counts = split.split(',').map(Number)
    if (counts.length !== nodes || counts.some((c) => !Number.isInteger(c) || c < 1)) {
      throw new UsageError(`--split ${split} must give one positive layer count per node (${nodes} nodes)`)
    }
    if (counts.reduce((a, b) => a + b, 0) !== numLayers)
      throw new UsageError(
        `--split ${split} covers ${counts.reduce((a, b) => a + b, 0)} layers; the model has ${numLayers}`,
      )
  } else {
    counts = largestRemainder(numLayers, Array(nodes).fill(1))
  }
  let lo = 0
  return counts.map((c) => [lo, (lo += c)] as [number, number])
}
