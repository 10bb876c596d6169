/** A node's live health, as the darkbloom seed's pong carries it (`{modelLoaded, memoryPressure}`) plus its free memory
 * now: every cluster node appends it to the pongs it sends (docs/protocol.md §Health), so the head knows each stage's
 * state as of the last ping, not as of its join. Bytes after the pong's echo: `u32 model loaded (0|1) | u32 pressure
 * (0 unknown, 1 normal, 2 warn, 3 critical) | f64 free bytes`, little-endian. */
import { freemem } from 'node:os'
import { Reader, Writer } from './binary-codec.ts'
import { readLinuxMemory, readMacMemory, type MemoryState, type PressureLevel } from './memory-pressure.ts'

export interface NodeHealth {
  /** This node holds its layers and serves its hops. */
  modelLoaded: boolean
  memoryPressure: PressureLevel
  freeBytes: number
}

const LEVELS: readonly PressureLevel[] = ['unknown', 'normal', 'warn', 'critical']

export function encodeNodeHealth(h: NodeHealth): Uint8Array {
  const w = new Writer()
  w.u32(h.modelLoaded ? 1 : 0)
  w.u32(LEVELS.indexOf(h.memoryPressure))
  w.f64(h.freeBytes)
  return w.join()
}

/** Throws RangeError on bytes that are not a node health (wrong size, unknown level, a bad figure). */
export function decodeNodeHealth(bytes: Uint8Array): NodeHealth {
  const r = new Reader(bytes, 'node health')
  const loaded = r.u32()
  const level = LEVELS[r.u32()]
  const freeBytes = r.f64()
  r.end()
  if (loaded > 1 || !level || !(freeBytes >= 0) || !Number.isFinite(freeBytes))
    throw new RangeError('node health has a bad field')
  return { modelLoaded: loaded === 1, memoryPressure: level, freeBytes }
}

/** The memory figures are read at most this often (a pong goes out every ping interval on each of a node's links). */
const LINUX_FRESH_MS = 1000
/** On a Mac each reading runs two subprocesses: in the background, at most this often; a pong takes the latest. */
const MAC_FRESH_MS = 5000

/** This node's health on demand: `sample(modelLoaded)` never blocks on a subprocess. */
export class NodeHealthSampler {
  #last: MemoryState
  #at = 0
  #reading = false

  constructor(
    private readonly platform: NodeJS.Platform = process.platform,
    private readonly now: () => number = Date.now,
  ) {
    this.#last = { freeBytes: freemem(), pressure: 'unknown' }
  }

  sample(modelLoaded: boolean): NodeHealth {
    this.#refresh()
    return { modelLoaded, memoryPressure: this.#last.pressure, freeBytes: this.#last.freeBytes }
  }

  #refresh(): void {
    const now = this.now()
    if (this.platform !== 'darwin') {
      if (now - this.#at < LINUX_FRESH_MS) return
      this.#at = now
      this.#last = readLinuxMemory()
      return
    }
    if (this.#reading || now - this.#at < MAC_FRESH_MS) return
    this.#reading = true
    void readMacMemory()
      .then((state) => ((this.#last = state), (this.#at = this.now())))
      .finally(() => (this.#reading = false))
  }
}
