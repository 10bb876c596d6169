/** KV blocks saved from one prefill and restored into a fresh slot: prefilling only the rest of a longer prompt gives the
 * logits and greedy tokens of a cold prefill of the whole prompt, for every synthetic family (sliding-window rings
 * included); recurrent layers are refused with their reason. */
import { describe, expect, test } from 'bun:test'
import { PREFIX_BLOCK_TOKENS } from '../../src/engine/prefix-cache.ts'
import type { KvBlock } from '../../src/model/kv-cache.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { argmax } from '../../src/model/sampler.ts'
import type { Backend } from '../../src/tensor/backend.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { openMlxBackend, probe } from '../../src/tensor/mlx.ts'
import type { SynthArch, SynthDtype, SynthSpec } from '../../src/model/synth.ts'
import { maxAbsDiff } from '../reference/kernels.ts'
import { synthModel } from '../support/synth-models.ts'

const backend = openCpuBackend()
const mlx = probe()
// the same save/restore through the mlx glue (f32 caches), where mlx-c is installed
const BACKENDS: [string, () => Backend][] = [
  ['cpu', () => backend],
  ...(mlx.available ? [['mlx', openMlxBackend] as [string, () => Backend]] : []),
]
if (!mlx.available) console.log(`prefix blocks on mlx skipped: ${mlx.reason}`)
const B = PREFIX_BLOCK_TOKENS
const tokens = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => 100 + ((i * 7919 + seed * 104729) % 5000))
const A = tokens(3 * B + 21, 1) // three whole blocks and a partial one
const AB = [...A, ...tokens(45, 2)]

/** Prefills `ids[from, …)` into `slot` (positions from `from`), `chunk` rows a step, then decodes `n` greedy tokens;
 * returns the prompt's last logits and the tokens. */
function run(stage: ModelStage, slot: number, ids: number[], from: number, n: number, chunk = 96) {
  let logits: Float32Array = new Float32Array(0)
  for (let lo = from; lo < ids.length; lo += chunk) {
    const hi = Math.min(ids.length, lo + chunk)
    const out = stage.forward({
      tokens: Int32Array.from(ids.slice(lo, hi)),
      slots: new Int32Array(hi - lo).fill(slot),
      positions: Int32Array.from({ length: hi - lo }, (_, i) => lo + i),
      logitRows: Int32Array.of(hi - lo - 1),
    })
    logits = out.logits!
  }
  const first = logits
  const out: number[] = []
  for (let p = ids.length; out.length < n; p++) {
    out.push(argmax(logits))
    logits = stage.forward({
      tokens: Int32Array.of(out.at(-1)!),
      slots: Int32Array.of(slot),
      positions: Int32Array.of(p),
    }).logits!
  }
  return { logits: first, tokens: out }
}

const FAMILIES: [SynthArch, SynthDtype, Partial<SynthSpec>][] = [
  ['llama', 'f32', {}],
  ['qwen2', 'bf16', {}],
  ['qwen3', 'q4', {}],
  // windows shorter than a block and longer than one: rings of 2·window, some blocks only partly kept
  ['gemma3', 'f32', { slidingWindow: 20, slidingWindowPattern: 2 }],
  ['gemma4', 'bf16', { slidingWindow: 80, slidingWindowPattern: 2 }],
  ['gpt_oss', 'f32', { slidingWindow: 48 }],
]

describe('prefix blocks restored into a fresh slot', () => {
  for (const [name, open] of BACKENDS)
    for (const [arch, dtype, extra] of FAMILIES)
      test(`${name}: ${arch} ${dtype}: restore + the rest == a cold prefill of the whole prompt`, async () => {
        const stage = ModelStage.load(await synthModel(arch, dtype, extra), open(), { slots: 3, maxLen: 512 })
        const cold = run(stage, 0, AB, 0, 8)
        // prompt A alone in slot 1, its whole blocks saved as soon as it is prefilled
        run(stage, 1, A, 0, 0)
        const blocks: KvBlock[] = []
        for (let b = 0; b < Math.floor(A.length / B); b++)
          blocks.push(stage.cache.saveBlock(1, b * B, (b + 1) * B, A.length))
        const n = stage.cache.restorableBlocks(blocks)
        expect(n).toBe(blocks.length)
        stage.cache.restoreBlocks(2, blocks.slice(0, n))
        const warm = run(stage, 2, AB, n * B, 8)
        expect(warm.tokens).toEqual(cold.tokens)
        expect(maxAbsDiff(warm.logits, cold.logits)).toBeLessThan(dtype === 'q4' ? 1e-3 : 1e-4)
        for (const block of blocks) stage.cache.freeBlock(block)
        stage.close()
      }, 120_000)

  test('a ring that no longer holds a block restores only up to where it still does', async () => {
    // window 20: a ring of 40 positions, which after a 150-token prefill holds positions 110..149
    const stage = ModelStage.load(
      await synthModel('gemma3', 'f32', { slidingWindow: 20, slidingWindowPattern: 2 }),
      backend,
      {
        slots: 2,
        maxLen: 512,
      },
    )
    run(stage, 0, A.slice(0, 150), 0, 0)
    const blocks = [0, 1].map((b) => stage.cache.saveBlock(0, b * B, (b + 1) * B, 150))
    // block 0's sliding layers are gone, block 1's keep 110..127: a restore at 64 would lack 45..63, at 128 position 109
    expect(blocks[0]!.layers.some((l) => l === null)).toBe(true)
    expect(blocks[1]!.layers.map((l) => l?.from ?? 64)).toContain(110)
    expect(stage.cache.restorableBlocks(blocks)).toBe(0)
    for (const block of blocks) stage.cache.freeBlock(block)
    stage.close()
  }, 60_000)

  test('recurrent layers (Qwen3.5) are refused with the reason', async () => {
    const stage = ModelStage.load(await synthModel('qwen3_5', 'bf16'), backend, { slots: 1, maxLen: 256 })
    expect(stage.cache.blockReuseRefusal).toContain('recurrent')
    expect(() => stage.cache.saveBlock(0, 0, 64, 64)).toThrow(/recurrent/)
    stage.close()
  }, 60_000)
})
