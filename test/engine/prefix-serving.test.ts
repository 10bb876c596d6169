/** The scheduler over a local pipeline with a prefix cache: a prompt that extends an earlier one skips the prefill of
 * its cached blocks and decodes exactly what a server without the cache decodes — hit, partial hit, miss, eviction under
 * pressure, concurrent requests sharing a prefix, tenants kept apart, and a request cancelled mid-prefill that leaves
 * only whole, computed blocks behind. */
import { describe, expect, test } from 'bun:test'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { PREFIX_BLOCK_TOKENS as B } from '../../src/engine/prefix-cache.ts'
import { Scheduler, type RequestEvent } from '../../src/engine/scheduler.ts'
import { StagePrefixCache } from '../../src/engine/stage-prefix.ts'
import { GREEDY, type RowSampling } from '../../src/model/sampler.ts'
import { ModelStage, type StageInput } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { synthModel } from '../support/synth-models.ts'

const backend = openCpuBackend()
const tokens = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => 100 + ((i * 7919 + seed * 104729) % 5000))
type Done = Extract<RequestEvent, { type: 'done' }>

function run(scheduler: Scheduler, promptIds: number[], extra: { signal?: AbortSignal; tenant?: string } = {}) {
  return new Promise<Done>((resolve, reject) => {
    scheduler.submit(
      { promptIds, maxTokens: 6, sampling: GREEDY, eosTokenIds: [], signal: extra.signal, cacheTenant: extra.tenant },
      (e) => {
        if (e.type === 'done') resolve(e)
        if (e.type === 'error') reject(e.error)
      },
    )
  })
}

describe('prefix cache in the scheduler', async () => {
  const families = [
    ['qwen3', await synthModel('qwen3', 'q4')],
    ['gemma3', await synthModel('gemma3', 'bf16', { slidingWindow: 40, slidingWindowPattern: 2 })],
  ] as const
  const open = (dir: string, capacityBytes = 64 << 20, slots = 4) => {
    const stage = ModelStage.load(dir, backend, { slots, maxLen: 1024 })
    const metrics = new ServingMetrics()
    const prefix = new StagePrefixCache([stage], { capacityBytes, model: dir, counters: metrics.prefixCache })
    const pipeline = new LocalPipeline([stage], { prefix })
    return { stage, prefix, metrics, scheduler: new Scheduler(pipeline, () => '', { prefillChunk: 96 }, metrics) }
  }
  const coldOf = async (dir: string, prompts: number[][]) => {
    const stage = ModelStage.load(dir, backend, { slots: 4, maxLen: 1024 })
    const scheduler = new Scheduler(new LocalPipeline([stage]), () => '', { prefillChunk: 96 })
    const out = []
    for (const p of prompts) out.push(await run(scheduler, p))
    stage.close()
    return out
  }
  const A = tokens(4 * B + 30, 1)
  const AB = [...A, ...tokens(50, 2)]
  const partial = [...A.slice(0, B + 10), ...tokens(120, 3)] // shares block 0 only
  const miss = tokens(200, 4)

  for (const [arch, dir] of families)
    test(`${arch}: hit, partial hit and miss decode what a cold server decodes`, async () => {
      const cold = await coldOf(dir, [A, AB, partial, miss])
      const { scheduler, metrics, prefix, stage } = open(dir)
      const warm = [
        await run(scheduler, A),
        await run(scheduler, AB),
        await run(scheduler, partial),
        await run(scheduler, miss),
      ]
      expect(warm.map((d) => d.tokens)).toEqual(cold.map((d) => d.tokens))
      expect(cold[0]!.cachedTokens).toBeUndefined()
      expect(warm.map((d) => d.cachedTokens)).toEqual([0, 4 * B, B, 0])
      const text = metrics.render()
      expect(text).toContain(`dbcluster_prefix_cache_hit_tokens_total ${5 * B}`)
      expect(text).toContain(
        `dbcluster_prefix_cache_query_tokens_total ${A.length + AB.length + partial.length + miss.length}`,
      )
      // prompt tokens computed: everything but the hits
      expect(text).toContain(
        `dbcluster_prompt_tokens_total ${A.length + AB.length + partial.length + miss.length - 5 * B}`,
      )
      expect(prefix.pool.blocks).toBe(4 + 1 + 2 + 3) // A's 4, AB's 5th, partial's blocks 1 and 2, miss's 3
      prefix.close()
      stage.close()
    }, 120_000)

  test('eviction under pressure: a pool of three blocks keeps serving correct text', async () => {
    const [, dir] = families[0]
    const cold = await coldOf(dir, [A, miss, AB, A])
    // one block's bytes, from a block saved out of a stage's zeroed slot
    const probe = ModelStage.load(dir, backend, { slots: 1, maxLen: B })
    const block = probe.cache.saveBlock(0, 0, B, B)
    const blockBytes = block.bytes
    probe.cache.freeBlock(block)
    probe.close()
    const { scheduler: small, prefix: pool, stage: s2 } = open(dir, 3 * blockBytes)
    const warm = []
    for (const p of [A, miss, AB, A]) warm.push(await run(small, p))
    expect(warm.map((d) => d.tokens)).toEqual(cold.map((d) => d.tokens))
    expect(pool.pool.evictions).toBeGreaterThan(0)
    expect(pool.pool.bytes).toBeLessThanOrEqual(3 * blockBytes)
    // A's blocks went for miss's, then came back with AB: A hits again
    expect(warm.map((d) => d.cachedTokens)).toEqual([0, 0, 0, 3 * B])
    pool.close()
    s2.close()
  }, 120_000)

  test('concurrent requests sharing a prefix: each decodes the cold text, the later ones from the first one’s blocks', async () => {
    const [, dir] = families[0]
    const prompts = [AB, [...A, ...tokens(20, 5)], [...A.slice(0, 2 * B + 5), ...tokens(70, 6)]]
    const cold = await coldOf(dir, prompts)
    const { scheduler, prefix, stage } = open(dir)
    const warm = await Promise.all(prompts.map((p) => run(scheduler, p)))
    expect(warm.map((d) => d.tokens)).toEqual(cold.map((d) => d.tokens))
    // the first prefills alone; the others start after its blocks are kept
    expect(warm.map((d) => d.cachedTokens)).toEqual([0, 4 * B, 2 * B])
    prefix.close()
    stage.close()
  }, 120_000)

  test('tenants do not share blocks', async () => {
    const [, dir] = families[0]
    const { scheduler, prefix, stage } = open(dir)
    await run(scheduler, A, { tenant: 'alice' })
    expect((await run(scheduler, AB, { tenant: 'bob' })).cachedTokens).toBe(0)
    expect((await run(scheduler, AB, { tenant: 'alice' })).cachedTokens).toBe(4 * B)
    prefix.close()
    stage.close()
  }, 120_000)

  test('a request cancelled mid-prefill, or failed in a step, leaves only blocks of completed steps', async () => {
    const [, dir] = families[0]
    const long = tokens(6 * B + 7, 7) // prefill chunks of 96: [0,96) [96,192) [192,288) [288,391)
    const [cold] = await coldOf(dir, [long])
    const { scheduler, prefix, stage } = open(dir)
    const pipeline = scheduler.pipeline as LocalPipeline
    const sample = pipeline.sample.bind(pipeline)
    let steps = 0
    let onStep = (_n: number) => {}
    pipeline.sample = async (input: StageInput, rows: readonly RowSampling[]) => {
      onStep(++steps)
      return sample(input, rows)
    }
    // cancelled while its second chunk is computed: that step completes, the third never runs (a cancelled request
    // emits nothing more, so wait for the scheduler to let it go)
    const abort = new AbortController()
    onStep = (n) => n === 2 && abort.abort()
    void run(scheduler, long, { signal: abort.signal })
    while (scheduler.running || scheduler.queueDepth) await Bun.sleep(20)
    expect(steps).toBe(2)
    expect(prefix.pool.blocks).toBe(3) // [0, 192): three whole blocks
    // a step that fails after writing its keys: the slot's positions 192..287 are written, yet no block of them is kept
    steps = 0
    onStep = () => {}
    const failing = pipeline.sample
    pipeline.sample = async (input: StageInput, rows: readonly RowSampling[]) => {
      const out = await failing(input, rows)
      if (steps === 1) throw new Error('the step was lost after its layers ran')
      return out
    }
    await expect(run(scheduler, long)).rejects.toThrow(/lost after its layers ran/)
    expect(prefix.pool.blocks).toBe(3)
    pipeline.sample = sample
    const again = await run(scheduler, long)
    expect(again.cachedTokens).toBe(3 * B)
    expect(again.tokens).toEqual(cold!.tokens)
    prefix.close()
    stage.close()
  }, 120_000)
})
