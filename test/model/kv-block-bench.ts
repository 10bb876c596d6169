/** Prefix-cache block save and restore on Qwen3-0.6B's KV shapes (28 layers, 8 KV heads, head_dim 128, f16 on the cpu
 * backend, serve's default 8 slots of 4,096 positions): the old path of generic Backend ops (kv-block-reference.ts)
 * beside KvCache's direct copy, interleaved in one run, medians over every block of every round.
 *   node_modules/.bin/bun test/model/kv-block-bench.ts [--blocks 23] [--rounds 3] [--slots 8] [--max-len 4096]
 * With --model DIR, a cached server's first turn instead: a --prompt-tokens prompt prefilled 256 rows a step into one
 * slot, its whole blocks stored after each step (StagePrefixCache.store), with no cache, with the old copy and with the
 * direct one, in turn. Prefill and stores are timed apart, so the stores' share of the turn does not drown in the noise
 * of a shared machine as the TTFTs of two servers do. */
import { parseArgs } from 'node:util'
import { StagePrefixCache } from '../../src/engine/stage-prefix.ts'
import { fullLayers, KvCache, type KvBlock } from '../../src/model/kv-cache.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { restoreBlocksGeneric, saveBlockGeneric } from './kv-block-reference.ts'

const { values: args } = parseArgs({
  options: {
    blocks: { type: 'string', default: '23' },
    rounds: { type: 'string', default: '3' },
    slots: { type: 'string', default: '8' },
    'max-len': { type: 'string', default: '4096' },
    threads: { type: 'string', default: '2' },
    model: { type: 'string' },
    'prompt-tokens': { type: 'string', default: '1500' },
  },
})
const BLOCK = 64
const rounds = Number(args.rounds)
const b = openCpuBackend({ threads: Number(args.threads) })

const time = (fn: () => void): number => {
  const t0 = performance.now()
  fn()
  return performance.now() - t0
}
const median = (xs: number[]) => {
  const s = [...xs].sort((p, q) => p - q)
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

function blockCopies(blocks: number) {
  const cache = new KvCache(b, fullLayers(28, 8, 128), Number(args.slots), Number(args['max-len']))
  const filled = blocks * BLOCK
  // slot 0 holds a prompt of `filled` positions; both paths restore into slot 1
  const chunk = 256
  const data = new Float32Array(chunk * 8 * 128)
  for (let lo = 0; lo < filled; lo += chunk) {
    const n = Math.min(chunk, filled - lo)
    for (let i = 0; i < data.length; i++) data[i] = Math.sin(lo * 131 + i * 0.37)
    b.scope(() => {
      const x = b.fromFloat32(data.subarray(0, n * 8 * 128), [n, 8, 128])
      const slots = b.fromInt32(new Int32Array(n), [n])
      const positions = b.fromInt32(
        Int32Array.from({ length: n }, (_, r) => lo + r),
        [n],
      )
      for (const c of cache.layerCaches)
        if (c.kind === 'attention') (b.kvWrite(c.keys, x, slots, positions), b.kvWrite(c.values, x, slots, positions))
    })
  }
  const t = { oldSave: [] as number[], newSave: [] as number[], oldRestore: [] as number[], newRestore: [] as number[] }
  for (let round = 0; round < rounds; round++)
    for (let k = 0; k < blocks; k++) {
      const [s, e] = [k * BLOCK, (k + 1) * BLOCK]
      let old!: KvBlock, direct!: KvBlock
      // alternate which path goes first, so neither always finds the caches warm
      const save = [
        () => t.oldSave.push(time(() => (old = saveBlockGeneric(b, cache, 0, s, e, filled)))),
        () => t.newSave.push(time(() => (direct = cache.saveBlock(0, s, e, filled)))),
      ]
      for (const f of k % 2 ? save.reverse() : save) f()
      const restore = [
        () => t.oldRestore.push(time(() => restoreBlocksGeneric(b, cache, 1, [old]))),
        () => t.newRestore.push(time(() => cache.restoreBlocks(1, [direct]))),
      ]
      for (const f of k % 2 ? restore.reverse() : restore) f()
      cache.freeBlock(old)
      cache.freeBlock(direct)
    }
  const row = (name: string, old: number[], direct: number[]) =>
    console.log(
      `${name.padEnd(8)} old ${median(old).toFixed(2).padStart(7)} ms   direct ${median(direct).toFixed(2).padStart(6)} ms   ×${(median(old) / median(direct)).toFixed(1)}`,
    )
  console.log(
    `KV block of ${BLOCK} positions, 28 layers × 8 KV heads × 128, ${cache.dtype}, ${cache.slots} slots × ${cache.maxLen}; medians of ${blocks} blocks × ${rounds} rounds`,
  )
  row('save', t.oldSave, t.newSave)
  row('restore', t.oldRestore, t.newRestore)
  cache.close()
}

function firstTurn(dir: string, promptTokens: number) {
  // as `bench serve --shared-prefix` starts its servers: one slot, a context just longer than the prompts
  const stage = ModelStage.load(dir, b, { slots: 1, maxLen: promptTokens + 52 })
  const prefix = new StagePrefixCache([stage], { capacityBytes: 2 ** 30, model: dir })
  const direct = stage.cache.saveBlock.bind(stage.cache)
  const generic = (slot: number, s: number, e: number, f: number) => saveBlockGeneric(b, stage.cache, slot, s, e, f)
  const modes = ['no cache', 'old copy', 'direct'] as const
  const runs = new Map(modes.map((m) => [m, { prefill: [] as number[], store: [] as number[] }]))
  for (let round = 0; round < rounds; round++)
    for (let k = 0; k < modes.length; k++) {
      // the order rotates each round; every prompt is new, so no block is found cached
      const mode = modes[(k + round) % modes.length]!
      stage.cache.saveBlock = mode === 'old copy' ? generic : direct
      const ids = Array.from({ length: promptTokens }, (_, i) => 100 + ((i * 7919 + (round * 3 + k) * 104729) % 30000))
      let prefill = 0,
        store = 0
      for (let lo = 0; lo < ids.length; lo += 256) {
        const hi = Math.min(ids.length, lo + 256)
        prefill += time(() =>
          stage.forward({
            tokens: Int32Array.from(ids.slice(lo, hi)),
            slots: new Int32Array(hi - lo),
            positions: Int32Array.from({ length: hi - lo }, (_, i) => lo + i),
            logitRows: Int32Array.of(hi - lo - 1),
          }),
        )
        if (mode !== 'no cache') store += time(() => prefix.store(0, ids, hi, 'bench'))
      }
      prefix.close()
      runs.get(mode)!.prefill.push(prefill)
      runs.get(mode)!.store.push(store)
    }
  console.log(
    `first turn of ${promptTokens} tokens (${Math.floor(promptTokens / BLOCK)} blocks stored), ${dir}, cpu, ${b.threads} threads; medians of ${rounds} rounds`,
  )
  for (const [mode, r] of runs)
    console.log(
      `${mode.padEnd(9)} prefill ${median(r.prefill).toFixed(0).padStart(6)} ms   stores ${median(r.store).toFixed(1).padStart(6)} ms   stores / prefill ${((100 * median(r.store)) / median(r.prefill)).toFixed(2)}%`,
    )
  stage.close()
}

if (args.model) firstTurn(args.model, Number(args['prompt-tokens']))
else blockCopies(Number(args.blocks))
