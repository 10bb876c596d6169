/** How much memory this machine has free now and how pressed it is, for the live node health a pong carries
 * (docs/cluster.md §Status). Linux: MemAvailable from /proc/meminfo and the kernel's pressure stall information
 * (/proc/pressure/memory) where it has it. macOS: `memory_pressure`'s free percentage of the system's memory and the
 * kernel's own level (`sysctl kern.memorystatus_vm_pressure_level`). The parsers are pure; the readers are thin. */
import { readFileSync } from 'node:fs'
import { freemem } from 'node:os'

/** unknown: this machine does not say (no PSI, a tool missing), never a guess. */
export type PressureLevel = 'normal' | 'warn' | 'critical' | 'unknown'

export interface MemoryState {
  freeBytes: number
  pressure: PressureLevel
}

/** Available memory below these shares of the total counts as pressure (when the kernel gives no stall figures). */
const WARN_AVAILABLE = 0.15
const CRITICAL_AVAILABLE = 0.05
/** Share of the last 10 s in which some (warn) or all (critical) tasks stalled waiting for memory, in percent. */
const WARN_STALL = 10
const CRITICAL_STALL = 10

/** `/proc/meminfo`: MemTotal and MemAvailable in bytes, or null when either is missing. */
export function parseMeminfo(text: string): { totalBytes: number; availableBytes: number } | null {
  const kib = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s*kB`, 'm').exec(text)
    return m ? Number(m[1]) * 1024 : null
  }
  const totalBytes = kib('MemTotal')
  const availableBytes = kib('MemAvailable')
  return totalBytes === null || availableBytes === null ? null : { totalBytes, availableBytes }
}

/** `/proc/pressure/memory`: the avg10 of its `some` and `full` lines (percent), or null when it is not that file. */
export function parsePressureStall(text: string): { some: number; full: number } | null {
  const avg10 = (kind: string) => {
    const m = new RegExp(`^${kind} avg10=(\\d+(?:\\.\\d+)?)`, 'm').exec(text)
    return m ? Number(m[1]) : null
  }
  const some = avg10('some')
  const full = avg10('full')
  return some === null || full === null ? null : { some, full }
}

/** Linux: the level from the stall figures when the kernel has them, and from the available share either way. */
export function linuxPressure(
  meminfo: { totalBytes: number; availableBytes: number },
  stall: { some: number; full: number } | null,
): PressureLevel {
  const share = meminfo.availableBytes / meminfo.totalBytes
  if (share < CRITICAL_AVAILABLE || (stall && stall.full >= CRITICAL_STALL)) return 'critical'
  if (share < WARN_AVAILABLE || (stall && stall.some >= WARN_STALL)) return 'warn'
  return 'normal'
}

/** macOS `memory_pressure`: "The system has N (…)" bytes and "System-wide memory free percentage: P%". */
export function parseMacMemoryPressure(text: string): { totalBytes: number; freePercent: number } | null {
  const total = /The system has (\d+)/.exec(text)
  const free = /System-wide memory free percentage:\s*(\d+(?:\.\d+)?)%/.exec(text)
  return total && free ? { totalBytes: Number(total[1]), freePercent: Number(free[1]) } : null
}

/** macOS `sysctl -n kern.memorystatus_vm_pressure_level`: 1 normal, 2 warn, 4 critical (the kernel's own levels). */
export function parseMacPressureLevel(text: string): PressureLevel {
  return ({ '1': 'normal', '2': 'warn', '4': 'critical' } as const)[text.trim() as '1' | '2' | '4'] ?? 'unknown'
}

/** This Linux machine now (synchronous: two small procfs reads); elsewhere, or without /proc, free memory and unknown. */
export function readLinuxMemory(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): MemoryState {
  let meminfo: ReturnType<typeof parseMeminfo> = null
  try {
    meminfo = parseMeminfo(read('/proc/meminfo'))
  } catch {
    // not Linux, or /proc is hidden: the runtime's figure follows
  }
  if (!meminfo) return { freeBytes: freemem(), pressure: 'unknown' }
  let stall: ReturnType<typeof parsePressureStall> = null
  try {
    stall = parsePressureStall(read('/proc/pressure/memory'))
  } catch {
    // kernels without PSI (or containers that hide it): the available share alone decides
  }
  return { freeBytes: meminfo.availableBytes, pressure: linuxPressure(meminfo, stall) }
}

/** This Mac now: two short subprocesses, run off the event loop. A tool that fails leaves its part unknown. */
export async function readMacMemory(): Promise<MemoryState> {
  const run = async (command: string[]) => {
    try {
      const proc = Bun.spawn(command, { stdout: 'pipe', stderr: 'ignore', stdin: 'ignore' })
      const text = await new Response(proc.stdout).text()
      return (await proc.exited) === 0 ? text : ''
    } catch {
      return ''
    }
  }
  const [stats, level] = await Promise.all([
    run(['/usr/bin/memory_pressure']),
    run(['/usr/sbin/sysctl', '-n', 'kern.memorystatus_vm_pressure_level']),
  ])
  const parsed = parseMacMemoryPressure(stats)
  return {
    freeBytes: parsed ? Math.round((parsed.totalBytes * parsed.freePercent) / 100) : freemem(),
    pressure: parseMacPressureLevel(level),
  }
}
