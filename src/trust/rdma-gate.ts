/** The RDMA capability gate: what the attestation may claim. macOS: a chip family with Thunderbolt 5 and `rdma_ctl status`
 * enabled; Linux: a device under /sys/class/infiniband. Pure decision over injected probes, so every branch is testable.
 * Apple TN3205: RDMA over Thunderbolt needs macOS 26.2+ on Apple silicon with Thunderbolt 5, enabled with `rdma_ctl enable`
 * in Recovery; `rdma_ctl status` then prints "enabled". */
export interface RdmaProbes {
  platform: NodeJS.Platform
  /** e.g. "Apple M5 Max" (sysctl machdep.cpu.brand_string) */
  chip: string
  /** stdout of `rdma_ctl status`, or null when the command is missing or timed out */
  rdmaCtlStatus: () => string | null
  /** names under /sys/class/infiniband */
  infinibandDevices: () => string[]
}

export type RdmaDecision = { enabled: true; detail: string } | { enabled: false; reason: string }

export type AppleChipTier = 'base' | 'Pro' | 'Max' | 'Ultra'
export interface AppleChip {
  generation: number
  tier: AppleChipTier
}

/** "Apple M4 Pro" → { generation: 4, tier: 'Pro' }; null for anything that is not an Apple M chip. */
export function parseAppleChip(chip: string): AppleChip | null {
  const m = /\bApple M(\d+)(?:\s+(Pro|Max|Ultra))?\b/i.exec(chip)
  if (!m) return null
  const tier = m[2] ? ((m[2][0]!.toUpperCase() + m[2].slice(1).toLowerCase()) as AppleChipTier) : 'base'
  return { generation: Number(m[1]), tier }
}

export function appleChipGeneration(chip: string): number | null {
  return parseAppleChip(chip)?.generation ?? null
}

/** Whether the chip family ships Thunderbolt 5: M3 Ultra, M4 Pro/Max and later Pro/Max/Ultra. Base chips through M5 have
 * Thunderbolt 4 at most. Families newer than this table knows are not refused here: `rdma_ctl status` decides. */
export function hasThunderbolt5(chip: AppleChip): boolean | 'unknown' {
  if (chip.generation >= 6) return 'unknown'
  if (chip.tier === 'base') return false
  if (chip.generation >= 4) return true
  return chip.generation === 3 && chip.tier === 'Ultra'
}

/** `rdma_ctl status` prints "enabled" or "disabled" (macOS 26.2+); its last line decides; anything else is unknown. */
export function parseRdmaCtlStatus(output: string): 'enabled' | 'disabled' | 'unknown' {
  const last = output.trim().split('\n').at(-1)?.trim().toLowerCase() ?? ''
  if (/\bdisabled\b/.test(last)) return 'disabled'
  if (/\benabled\b/.test(last)) return 'enabled'
  return 'unknown'
}

export function decideRdma(requested: boolean, probes: RdmaProbes): RdmaDecision {
  if (!requested) return { enabled: false, reason: 'RDMA not requested' }
  if (probes.platform === 'darwin') {
    const chip = parseAppleChip(probes.chip)
    if (chip === null) return { enabled: false, reason: `chip '${probes.chip}' is not Apple Silicon` }
    if (hasThunderbolt5(chip) === false)
      return {
        enabled: false,
        reason: `${probes.chip} has no Thunderbolt 5, which RDMA over Thunderbolt needs (M4 Pro/Max, M3 Ultra, or a later Pro/Max/Ultra)`,
      }
    const output = probes.rdmaCtlStatus()
    if (output === null)
      return { enabled: false, reason: "'rdma_ctl status' is missing or did not answer (macOS 26.2 or later needed)" }
    const status = parseRdmaCtlStatus(output)
    if (status === 'disabled')
      return { enabled: false, reason: "RDMA is disabled: run 'rdma_ctl enable' in Recovery, then reboot" }
    if (status === 'unknown')
      return {
        enabled: false,
        reason: `'rdma_ctl status' answered ${JSON.stringify(output.trim().slice(0, 80))}, not enabled`,
      }
    return { enabled: true, detail: `${probes.chip}, rdma_ctl: enabled` }
  }
  if (probes.platform === 'linux') {
    const devices = probes.infinibandDevices()
    if (devices.length === 0) return { enabled: false, reason: 'no RDMA device under /sys/class/infiniband' }
    return { enabled: true, detail: `RDMA devices: ${devices.join(', ')}` }
  }
  return { enabled: false, reason: `RDMA is not supported on ${probes.platform}` }
}
