/** A stage on its compute thread (compute/stage-thread.ts) against the same stage in this thread: the same logits and the
 * same sampled tokens, its errors back with their codes, the event loop free while a step computes, and a stuck step
 * reported as a hung compute thread — then forgiven when the thread answers again. */
import { afterAll, expect, test } from 'bun:test'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { StageThread } from '../../src/compute/stage-thread.ts'
import { rowSampling, samplingParams } from '../../src/model/sampler.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { copyOfModel, synthModel } from '../support/synth-models.ts'

const threads: StageThread[] = []
/** What a promise rejected with (bun's `expect(p).rejects` waits in a way that keeps a worker's answers from arriving). */
const failure = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (error: unknown) => error,
  )
afterAll(() => threads.forEach((t) => t.close()))

async function start(dir: string, extra: { hungAfterMs?: number; slots?: number } = {}) {
  const thread = await StageThread.start({
    dir,
    backend: { name: 'cpu', threads: 1 },
    slots: extra.slots ?? 2,
    maxLen: 64,
    hungAfterMs: extra.hungAfterMs,
  })
  threads.push(thread)
  return thread
}

const prompt = (n: number) => ({
  tokens: Int32Array.from({ length: n }, (_, i) => (i * 7919 + 11) % 5000),
  slots: new Int32Array(n),
  positions: Int32Array.from({ length: n }, (_, i) => i),
})

test('the same logits and the same greedy and seeded tokens as the stage in this thread', async () => {
  const dir = await synthModel('qwen3', 'q4')
  const inline = ModelStage.load(dir, openCpuBackend({ threads: 1 }), { slots: 2, maxLen: 64 })
  const thread = await start(dir)
  expect(thread.config.vocabSize).toBe(inline.config.vocabSize)
  expect(thread.range).toEqual(inline.range)
  expect(thread.weightBytes).toBe(inline.weightBytes)
  expect(thread.cache.bytes).toBe(inline.cache.bytes)
  const slot = thread.cache.allocate()
  expect(slot).toBe(inline.cache.allocate())
  expect(thread.cache.freeSlots).toBe(1)

  const step = { ...prompt(5), logitRows: Int32Array.of(4) }
  const want = inline.forward(step).logits!
  const got = (await thread.run(step)).logits!
  expect(got.length).toBe(inline.config.vocabSize)
  expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true)

  const rows = [
    rowSampling(samplingParams({ temperature: 0 }), [], 0),
    rowSampling(samplingParams({ temperature: 0.8, topP: 0.9 }), [], 0.37),
  ]
  const next = {
    tokens: Int32Array.of(42, 42),
    slots: Int32Array.of(0, 1),
    positions: Int32Array.of(5, 0),
    logitRows: Int32Array.of(0, 1),
  }
  inline.cache.claim(1)
  thread.cache.claim(1)
  const [a, b] = [(await inline.run(next, rows)).tokens, (await thread.run(next, rows)).tokens]
  expect(b).toEqual(a!)
  expect(b).toHaveLength(2)
  inline.close()
}, 60_000)

test('errors come back with their codes, and the thread goes on', async () => {
  const thread = await start(await synthModel('qwen3', 'q4'))
  const slot = thread.cache.allocate()
  const bad = { tokens: Int32Array.of(10_000_000), slots: Int32Array.of(slot), positions: Int32Array.of(0) }
  expect(await failure(thread.run(bad))).toMatchObject({ code: 'E_TOKEN' })
  const far = { tokens: Int32Array.of(1), slots: Int32Array.of(slot), positions: Int32Array.of(64) }
  expect(await failure(thread.run(far))).toMatchObject({ code: 'E_CONTEXT' })
  expect((await thread.run({ ...prompt(3), logitRows: Int32Array.of(2) })).logits!.length).toBe(thread.config.vocabSize)
  expect(() => thread.cache.allocate()).not.toThrow()
  expect(() => thread.cache.allocate()).toThrow(/all 2 KV slots are in use/)
  expect(() => thread.cache.release(7)).toThrow(/not in use/)
}, 60_000)

test('a truncated checkpoint fails the start with the loader’s own error', async () => {
  const dir = copyOfModel(await synthModel('qwen3', 'q4'))
  writeFileSync(join(dir, 'model.safetensors'), Buffer.alloc(16))
  expect(await failure(start(dir))).toMatchObject({ code: expect.stringMatching(/^E_CKPT/) })
}, 60_000)

test('while a long step computes on the thread, this event loop keeps running', async () => {
  const thread = await start(await synthModel('qwen3', 'q4', { hidden: 256, intermediate: 768, layers: 6 }), {
    slots: 1,
  })
  thread.cache.allocate()
  let ticks = 0
  let longest = 0
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    longest = Math.max(longest, now - last)
    last = now
    ticks++
  }, 5)
  const t0 = performance.now()
  await thread.run({ ...prompt(64), logitRows: Int32Array.of(63) })
  const ms = performance.now() - t0
  clearInterval(timer)
  // the same step in this thread would have let no timer run until it ended
  expect(ticks).toBeGreaterThan(ms / 5 / 4)
  expect(longest).toBeLessThan(Math.max(100, ms / 2))
}, 60_000)

test('a stuck step is a hung compute thread: callers fail with E_COMPUTE_HUNG; when it answers again, it is forgiven', async () => {
  const thread = await start(await synthModel('qwen3', 'q4'), { hungAfterMs: 400 })
  const seen: (string | null)[] = []
  thread.onHung((reason) => seen.push(reason))
  thread.cache.allocate()
  thread.stall(2000)
  const stuck = thread.run({ ...prompt(2), logitRows: Int32Array.of(1) })
  expect(await failure(stuck)).toMatchObject({
    code: 'E_COMPUTE_HUNG',
    message: expect.stringMatching(/has not finished a step/),
  })
  await stuck.catch(() => {})
  expect(thread.hung).toMatch(/compute thread has not finished a step/)
  // while hung, new work is refused at once with the same reason
  expect(await failure(thread.run({ ...prompt(2) }))).toMatchObject({ code: 'E_COMPUTE_HUNG' })
  expect(seen).toHaveLength(1)
  // the stall ends; its late answer is dropped, and the thread answers again
  for (let i = 0; i < 100 && thread.hung; i++) await Bun.sleep(50)
  expect(thread.hung).toBeNull()
  expect(seen.at(-1)).toBeNull()
  expect((await thread.run({ ...prompt(2), logitRows: Int32Array.of(1) })).logits!.length).toBe(thread.config.vocabSize)
}, 60_000)

test('--precision exact reaches the compute thread: its logits are the in-thread exact stage’s, not the fast one’s', async () => {
  const dir = await synthModel('qwen3', 'q8', { groupSize: 64 })
  const step = { ...prompt(6), logitRows: Int32Array.of(5) }
  const inThread = (precision: 'fast' | 'exact') => {
    const stage = ModelStage.load(dir, openCpuBackend({ threads: 1, precision }), { slots: 1, maxLen: 64 })
    stage.cache.allocate()
    const logits = stage.forward(step).logits!
    stage.close()
    return logits
  }
  const thread = await StageThread.start({
    dir,
    backend: { name: 'cpu', threads: 1, precision: 'exact' },
    slots: 1,
    maxLen: 64,
  })
  threads.push(thread)
  thread.cache.allocate()
  const got = (await thread.run(step)).logits!
  const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer).equals(Buffer.from(b.buffer))
  expect(same(got, inThread('exact'))).toBe(true)
  expect(same(got, inThread('fast'))).toBe(false)
}, 60_000)
