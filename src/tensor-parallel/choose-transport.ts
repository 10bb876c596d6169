/** Which transport rdma-ping runs: the one asked for if it can work here, else one clear line saying why and which one
 * would. `auto` prefers jaccl (macOS, RDMA gate passing, MLX built with it), then ring (MLX present), then link. */
import { DbcError } from '../errors.ts'
import type { RdmaDecision } from '../trust/rdma-gate.ts'

export type PingTransport = 'link' | 'ring' | 'jaccl'
export type Availability = { available: true } | { available: false; reason: string }

export interface TransportProbes {
  platform: NodeJS.Platform
  rdmaGate: () => RdmaDecision
  /** Whether this machine's MLX (libmlxc + the glue) can run the backend. */
  mlx: (transport: 'ring' | 'jaccl') => Availability
}

export function chooseTransport(
  requested: PingTransport | 'auto',
  p: TransportProbes,
): { transport: PingTransport; reason: string } {
  if (requested === 'link') return { transport: 'link', reason: 'link (chosen): the sealed TCP link' }
  let ring: Availability | undefined
  const ringWorks = () => (ring ??= p.mlx('ring')).available
  const alternative = () =>
    ringWorks()
      ? 'use --transport ring (MLX over TCP) or --transport link'
      : 'use --transport link (works everywhere, no MLX needed)'
  const jaccl = (): Availability => {
    if (p.platform !== 'darwin')
      return {
        available: false,
        reason: `jaccl needs macOS 26.2+ with RDMA over Thunderbolt 5; this machine is ${p.platform}`,
      }
    const gate = p.rdmaGate()
    if (!gate.enabled) return { available: false, reason: `jaccl needs RDMA: ${gate.reason}` }
    return p.mlx('jaccl')
  }
  if (requested === 'jaccl') {
    const j = jaccl()
    if (!j.available) throw new DbcError('E_TRANSPORT_UNAVAILABLE', j.reason, alternative())
    return { transport: 'jaccl', reason: 'jaccl (chosen): MLX over Thunderbolt RDMA' }
  }
  if (requested === 'ring') {
    if (!ringWorks())
      throw new DbcError(
        'E_TRANSPORT_UNAVAILABLE',
        `ring needs MLX: ${(ring as { reason: string }).reason}`,
        'use --transport link (works everywhere, no MLX needed)',
      )
    return { transport: 'ring', reason: 'ring (chosen): MLX over TCP' }
  }
  const j = jaccl()
  if (j.available) return { transport: 'jaccl', reason: 'jaccl (auto: RDMA gate passed and MLX has jaccl)' }
  if (ringWorks()) return { transport: 'ring', reason: `ring (auto: ${j.reason})` }
  return {
    transport: 'link',
    reason: `link (auto: ${j.reason}; ring needs MLX: ${(ring as unknown as { reason: string }).reason})`,
  }
}
