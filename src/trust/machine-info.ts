/** What a machine reports about itself for its attestation, read from the OS (every external command under a timeout). */
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { cpus, hostname, release, totalmem, type } from 'node:os'
import { runningFromSource } from '../self-command.ts'
import type { RdmaProbes } from './rdma-gate.ts'

function run(cmd: string[], timeout = 2000): string | null {
  try {
    const r = Bun.spawnSync(cmd, { stdout: 'pipe', stderr: 'ignore', timeout })
    return r.exitCode === 0 ? r.stdout.toString() : null
  } catch {
    return null
  }
}

export function machineSerial(): string {
  if (process.platform === 'darwin') {
    const m = /"IOPlatformSerialNumber" = "([^"]+)"/.exec(run(['ioreg', '-rd1', '-c', 'IOPlatformExpertDevice']) ?? '')
    if (m) return m[1]!
  }
  for (const f of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    if (existsSync(f)) return readFileSync(f, 'utf8').trim()
  }
  return `host-${hostname()}`
}

export function chipName(): string {
  if (process.platform === 'darwin') return (run(['sysctl', '-n', 'machdep.cpu.brand_string']) ?? 'unknown').trim()
  return cpus()[0]?.model ?? 'unknown'
}

export function osVersion(): string {
  if (process.platform === 'darwin') return `macOS ${(run(['sw_vers', '-productVersion']) ?? release()).trim()}`
  try {
    const m = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))
    if (m) return `${m[1]} (${type()} ${release()})`
  } catch {}
  return `${type()} ${release()}`
}

/** The file the attestation's binary hash covers: the compiled executable, or the entry script when run from source. */
export function binaryPath(): string {
  return runningFromSource() ? Bun.main : process.execPath
}

/** SHA-256 of the running executable (the compiled binary), or of the entry script when run from source. */
export function binaryHash(): string {
  try {
    return createHash('sha256').update(readFileSync(binaryPath())).digest('hex')
  } catch {
    return 'unknown'
  }
}

export function rdmaProbes(): RdmaProbes {
  return {
    platform: process.platform,
    chip: chipName(),
    rdmaCtlStatus: () => run(['rdma_ctl', 'status']),
    infinibandDevices: () => (existsSync('/sys/class/infiniband') ? readdirSync('/sys/class/infiniband') : []),
  }
}

export function machineFacts() {
  return {
    serial: machineSerial(),
    hostname: hostname(),
    chip: chipName(),
    memoryBytes: totalmem(),
    osVersion: osVersion(),
    binaryHash: binaryHash(),
  }
}
