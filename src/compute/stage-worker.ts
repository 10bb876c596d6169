/** The compute thread's side (a Bun Worker): it opens the backend, loads the stage and its prefix cache, and runs each
 * step it is sent, one at a time in the order sent, while the node's event loop stays free (stage-thread.ts). */
import { StagePrefixCache } from '../engine/stage-prefix.ts'
import { DbcError } from '../errors.ts'
import { ModelStage } from '../model/shard.ts'
import { runStageNow } from '../model/stage-runner.ts'
import { openCpuBackend } from '../tensor/cpu.ts'
import { openMlxBackend } from '../tensor/mlx.ts'
import {
  toWire,
  transferablesOf,
  type FromCompute,
  type PrefixTally,
  type StageLoad,
  type ToCompute,
} from './stage-messages.ts'

declare const self: Worker

let stage: ModelStage | null = null
let prefix: StagePrefixCache | null = null
let stallMs = 0
const tally: PrefixTally = { hitTokens: 0, queryTokens: 0, evictions: 0, blocks: 0, bytes: 0 }

const reply = (message: FromCompute, transfer: ArrayBuffer[] = []) => self.postMessage(message, transfer)

function load(l: StageLoad): ModelStage {
  const { name, threads, precision } = l.backend
  const backend = name === 'mlx' ? openMlxBackend(precision) : openCpuBackend({ threads, precision })
  return ModelStage.load(l.dir, backend, { lo: l.lo, hi: l.hi, slots: l.slots, maxLen: l.maxLen })
}

const loaded = (): ModelStage => {
  if (!stage) throw new DbcError('E_COMPUTE', 'the compute thread has no stage loaded')
  return stage
}

/** The prefix cache's counters for this thread, handed to the event loop with each answer (its metrics live there). */
const counters = {
  hitTokens: { inc: (_?: unknown, by = 1) => void (tally.hitTokens += by) },
  queryTokens: { inc: (_?: unknown, by = 1) => void (tally.queryTokens += by) },
  evictions: { inc: (_?: unknown, by = 1) => void (tally.evictions += by) },
  blocks: { set: (value: number) => void (tally.blocks = value) },
}

function takeTally(): PrefixTally {
  const out = { ...tally, bytes: prefix?.pool.bytes ?? 0 }
  tally.hitTokens = tally.queryTokens = tally.evictions = 0
  return out
}

function handle(m: ToCompute): void {
  switch (m.op) {
    case 'load': {
      stage = load(m.load)
      const { range, weightBytes, cache } = stage
      return reply({
        id: m.id,
        ok: true,
        loaded: {
          range,
          weightBytes,
          kvBytes: cache.bytes,
          kvDtype: cache.dtype,
          blockReuseRefusal: cache.blockReuseRefusal,
        },
      })
    }
    case 'run': {
      if (stallMs) {
        const until = performance.now() + stallMs
        stallMs = 0
        while (performance.now() < until); // the test hook's stuck kernel
      }
      // a kept logits buffer would be handed over and lost to the stage: steps that send logits get new ones
      const input = m.input.output === 'reused-logits' ? { ...m.input, output: 'logits' as const } : m.input
      const run = runStageNow(loaded(), input, m.sampling)
      return reply({ id: m.id, ok: true, run }, transferablesOf(run))
    }
    case 'claim':
      return loaded().cache.claim(m.slot)
    case 'release':
      return loaded().cache.release(m.slot)
    case 'releaseAll':
      return loaded().cache.releaseAll()
    case 'prefix-open':
      prefix = new StagePrefixCache([loaded()], { capacityBytes: m.capacityBytes, model: m.model, counters })
      return reply({ id: m.id, ok: true, value: null, tally: takeTally() })
    case 'prefix-restore': {
      const hit = prefix ? prefix.restore(m.slot, m.ids, m.tenant) : 0
      return reply({ id: m.id, ok: true, value: hit, tally: takeTally() })
    }
    case 'prefix-store':
      prefix?.store(m.slot, m.ids, m.upTo, m.tenant)
      return reply({ id: m.id, ok: true, value: null, tally: takeTally() })
    case 'prefix-finish':
      return prefix?.finish(m.slot)
    case 'stall':
      stallMs = m.ms
      return
    case 'close':
      prefix?.close()
      stage?.close()
      prefix = stage = null
      return reply({ id: m.id, ok: true, value: null })
  }
}

self.onmessage = (event: MessageEvent<ToCompute>) => {
  const m = event.data
  try {
    handle(m)
  } catch (error) {
    if ('id' in m) reply({ id: m.id, ok: false, error: toWire(error) })
    else reply({ fault: `${m.op}: ${(error as Error).message}` })
  }
}
