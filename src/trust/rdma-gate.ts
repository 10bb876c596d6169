/** The RDMA capability gate: what the attestation may claim. macOS: an M5-or-later chip and `rdma_ctl status` enabled;
 * Linux: a device under /sys/class/infiniband. Pure decision over injected probes, so every branch is testable. */
export interface RdmaProbes {
  platform: NodeJS.Platform
  /** e.g. "Apple M5 Max" */
  chip: string
  /** stdout of `rdma_ctl status`, or null when the command is missing or timed out */
  rdmaCtlStatus: () => string | null
  /** names under /sys/class/infiniband */
  infinibandDevices: () => string[]
}

export type RdmaDecision = { enabled: true; detail: string } | { enabled: false; reason: string }

export function appleChipGeneration(chip: string): number | null {
  const m = /Apple M(\d+)/.exec(chip)
  return m ? Number(m[1]) : null
}

export function decideRdma(requested: boolean, probes: RdmaProbes): RdmaDecision {
  if (!requested) return { enabled: false, reason: 'RDMA not requested' }
  if (probes.platform === 'darwin') {
    const generation = appleChipGeneration(probes.chip)
    if (generation === null) return { enabled: false, reason: `chip '${probes.chip}' is not Apple Silicon` }
    if (generation < 5) return { enabled: false, reason: `${probes.chip} cannot do Thunderbolt RDMA (M5 or later needed)` }
    const status = probes.rdmaCtlStatus()
    if (status === null) return { enabled: false, reason: "'rdma_ctl status' is missing or did not answer (macOS 26.2 or later needed)" }
    if (!/enabled/i.test(status) || /disabled/i.test(status)) return { enabled: false, reason: "RDMA is disabled: run 'rdma_ctl enable' in Recovery, then reboot" }
    return { enabled: true, detail: `${probes.chip}, rdma_ctl: enabled` }
  }
  if (probes.platform === 'linux') {
    const devices = probes.infinibandDevices()
    if (devices.length === 0) return { enabled: false, reason: 'no RDMA device under /sys/class/infiniband' }
    return { enabled: true, detail: `RDMA devices: ${devices.join(', ')}` }
  }
  return { enabled: false, reason: `RDMA is not supported on ${probes.platform}` }
}
