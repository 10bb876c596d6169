/** Measures streaming memory read bandwidth (GB/s) through the shim: the roofline for decode, which reads every weight per token. */
import { check, shim } from './native.ts'

export interface MemoryBandwidthOptions {
  /** Buffer size; must dwarf the last-level cache. Default 512 MiB. */
  bytes?: number
  iterations?: number
  /** 1 = one thread; anything else = the shim's whole thread pool. */
  threads?: number
}

export function measureMemoryReadGbps(options: MemoryBandwidthOptions = {}): number {
  const bytes = options.bytes ?? 512 * 1024 * 1024
  const seconds = new Float64Array(1)
  const lib = shim()
  check(lib.dbc_init(0))
  check(lib.dbc_memory_read_bench(bytes, options.iterations ?? 5, options.threads ?? 0, seconds))
  return bytes / seconds[0]! / 1e9
}
