/** Live node health (cluster/node-health.ts, memory-pressure.ts) and the stop frame's payload: the parsers on captured
 * text from Linux procfs and macOS tools, the pressure rule, and the binary layouts with their refusals. */
import { describe, expect, test } from 'bun:test'
import {
  linuxPressure,
  parseMacMemoryPressure,
  parseMacPressureLevel,
  parseMeminfo,
  parsePressureStall,
  readLinuxMemory,
} from '../../src/cluster/memory-pressure.ts'
import { decodeNodeHealth, encodeNodeHealth, NodeHealthSampler } from '../../src/cluster/node-health.ts'
import { decodeStop, encodeStop } from '../../src/cluster/stop-message.ts'

const MEMINFO = `MemTotal:       32780592 kB
MemFree:         1234567 kB
MemAvailable:   22791832 kB
Buffers:          456789 kB
`
const PSI = `some avg10=12.50 avg60=3.10 avg300=0.80 total=123456
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
`
// macOS 14 `memory_pressure` (no arguments), abridged to its first and last lines
const MAC_MEMORY_PRESSURE = `The system has 17179869184 (1048576 pages with a page size of 16384).

Stats:
Pages free: 31469
Pages purgeable: 12079

System-wide memory free percentage: 52%
`

describe('memory pressure', () => {
  test('Linux: MemAvailable is the free memory; stall figures and the available share decide the level', () => {
    const m = parseMeminfo(MEMINFO)!
    expect(m).toEqual({ totalBytes: 32780592 * 1024, availableBytes: 22791832 * 1024 })
    expect(parseMeminfo('MemTotal: 5 kB\n')).toBeNull()
    const stall = parsePressureStall(PSI)!
    expect(stall).toEqual({ some: 12.5, full: 0 })
    expect(parsePressureStall('nonsense')).toBeNull()
    expect(linuxPressure(m, null)).toBe('normal')
    expect(linuxPressure(m, stall)).toBe('warn') // some tasks stalled 12.5% of the last 10 s
    expect(linuxPressure(m, { some: 40, full: 15 })).toBe('critical')
    expect(linuxPressure({ totalBytes: 100, availableBytes: 10 }, null)).toBe('warn')
    expect(linuxPressure({ totalBytes: 100, availableBytes: 4 }, null)).toBe('critical')
  })

  test('Linux reader: procfs as given, and the runtime figure with no procfs', () => {
    const files: Record<string, string> = { '/proc/meminfo': MEMINFO, '/proc/pressure/memory': PSI }
    const read = (path: string) => {
      if (!(path in files)) throw new Error('ENOENT')
      return files[path]!
    }
    expect(readLinuxMemory(read)).toEqual({ freeBytes: 22791832 * 1024, pressure: 'warn' })
    delete files['/proc/pressure/memory'] // a kernel without PSI
    expect(readLinuxMemory(read).pressure).toBe('normal')
    const none = readLinuxMemory(() => {
      throw new Error('ENOENT')
    })
    expect(none.pressure).toBe('unknown')
    expect(none.freeBytes).toBeGreaterThan(0)
  })

  test('macOS: memory_pressure gives the total and the free share; sysctl gives the kernel level', () => {
    expect(parseMacMemoryPressure(MAC_MEMORY_PRESSURE)).toEqual({ totalBytes: 17179869184, freePercent: 52 })
    expect(parseMacMemoryPressure('')).toBeNull()
    expect(['1\n', '2', '4', '3', ''].map(parseMacPressureLevel)).toEqual([
      'normal',
      'warn',
      'critical',
      'unknown',
      'unknown',
    ])
  })
})

describe('node health on the pong', () => {
  test('round-trips its documented bytes, and refuses what is not one', () => {
    const bytes = encodeNodeHealth({ modelLoaded: true, memoryPressure: 'warn', freeBytes: 2 ** 33 })
    expect(Buffer.from(bytes).toString('hex')).toBe('01000000' + '02000000' + '0000000000000042')
    expect(decodeNodeHealth(bytes)).toEqual({ modelLoaded: true, memoryPressure: 'warn', freeBytes: 2 ** 33 })
    expect(() => decodeNodeHealth(bytes.subarray(0, 12))).toThrow(/truncated/)
    expect(() => decodeNodeHealth(new Uint8Array([...bytes, 0]))).toThrow(/trailing/)
    const badLevel = bytes.slice()
    badLevel[4] = 9
    expect(() => decodeNodeHealth(badLevel)).toThrow(/bad field/)
  })

  test('the sampler reads this machine now and says whether the layers are loaded', () => {
    const sampler = new NodeHealthSampler('linux')
    const h = sampler.sample(false)
    expect(h.modelLoaded).toBe(false)
    expect(h.freeBytes).toBeGreaterThan(0)
    expect(sampler.sample(true).modelLoaded).toBe(true)
  })
})

test('the stop frame: now flag and reason, and nothing else', () => {
  const bytes = encodeStop({ now: true, reason: 'dbcluster cluster stop' })
  expect(decodeStop(bytes)).toEqual({ now: true, reason: 'dbcluster cluster stop' })
  expect(() => decodeStop(new Uint8Array([...bytes, 1]))).toThrow(/trailing/)
  const bad = bytes.slice()
  bad[0] = 2
  expect(() => decodeStop(bad)).toThrow(/now = 2/)
})
