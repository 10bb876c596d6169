/** The scheduler over a real local pipeline: prefill chunks interleave with decoding, timeouts fail requests, a degraded
 * cluster refuses new work at once (503 through the API), and step failures end every affected request with an error. */
import { describe, expect, test } from 'bun:test'
import { createApp } from '../../src/api/app.ts'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import { LocalPipeline, type Pipeline } from '../../src/engine/pipeline.ts'
import { GREEDY, type RowSampling } from '../../src/model/sampler.ts'
import { DegradedError, Scheduler, type RequestEvent } from '../../src/engine/scheduler.ts'
import { ModelStage, type StageInput } from '../../src/model/shard.ts'
import { ModelTokenizer } from '../../src/model/tokenizer.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { synthModel } from '../support/synth-models.ts'

const backend = openCpuBackend()

/** Records each step's rows, optionally failing on a chosen step. */
class RecordingPipeline implements Pipeline {
  readonly steps: { rows: number; logitRows: number }[] = []
  failOnStep = -1
  constructor(private readonly inner: LocalPipeline) {}
  get vocabSize() {
    return this.inner.vocabSize
  }
  get maxLen() {
    return this.inner.maxLen
  }
  openSequence() {
    return this.inner.openSequence()
  }
  closeSequence(slot: number) {
    this.inner.closeSequence(slot)
  }
  async step(input: StageInput) {
    this.steps.push({ rows: input.slots.length, logitRows: input.logitRows!.length })
    if (this.steps.length === this.failOnStep) throw new Error('stage 1 went away')
    return this.inner.step(input)
  }
  async sample(input: StageInput, rows: readonly RowSampling[]) {
    this.steps.push({ rows: input.slots.length, logitRows: input.logitRows!.length })
    if (this.steps.length === this.failOnStep) throw new Error('stage 1 went away')
    return this.inner.sample(input, rows)
  }
}

function collect(scheduler: Scheduler, promptIds: number[], maxTokens: number, timeoutMs?: number) {
  const events: RequestEvent[] = []
  const done = new Promise<RequestEvent[]>((resolve) => {
    scheduler.submit({ promptIds, maxTokens, sampling: GREEDY, eosTokenIds: [], timeoutMs }, (e) => {
      events.push(e)
      if (e.type === 'done' || e.type === 'error') resolve(events)
    })
  })
  return done
}

describe('scheduler', async () => {
  const dir = await synthModel('qwen3', 'f32')
  const make = (slots = 4) =>
    new RecordingPipeline(new LocalPipeline([ModelStage.load(dir, backend, { slots, maxLen: 1024 })]))

  test('a long prompt is prefilled in chunks interleaved with another request’s decoding', async () => {
    const pipeline = make()
    const scheduler = new Scheduler(pipeline, () => '', { prefillChunk: 64 })
    const short = collect(scheduler, [1, 2, 3], 20)
    const long = collect(
      scheduler,
      Array.from({ length: 300 }, (_, i) => 100 + i),
      4,
    )
    const [a, b] = await Promise.all([short, long])
    expect(a.at(-1)).toMatchObject({ type: 'done', finishReason: 'length' })
    expect(b.at(-1)).toMatchObject({ type: 'done', finishReason: 'length' })
    // no step ever carries more than the default budget: a decoding row per slot of the batch beside one chunk
    expect(Math.max(...pipeline.steps.map((s) => s.rows))).toBeLessThanOrEqual(8 + 64)
    // the 300-token prompt took 5 chunks, during which the short request kept decoding (1 logit row per step)
    const mixed = pipeline.steps.filter((s) => s.rows > 2 && s.logitRows >= 1)
    expect(mixed.length).toBeGreaterThanOrEqual(4)
  })

  test('batched greedy equals the same requests one at a time', async () => {
    const prompts = [
      [5, 6, 7],
      [8, 9],
      [10, 11, 12, 13],
    ]
    const alone: number[][] = []
    for (const p of prompts)
      alone.push(((await collect(new Scheduler(make(), () => ''), p, 6)).at(-1) as { tokens: number[] }).tokens)
    const scheduler = new Scheduler(make(), () => '')
    const together = await Promise.all(prompts.map((p) => collect(scheduler, p, 6)))
    expect(together.map((e) => (e.at(-1) as { tokens: number[] }).tokens)).toEqual(alone)
  })

  test('a burst of 8 short prompts is prefilled in two steps, not eight: prompts share a step while its budget lasts', async () => {
    const pipeline = make(8)
    const scheduler = new Scheduler(pipeline, () => '', { prefillChunk: 64, maxBatch: 8, maxStepTokens: 72 })
    const prompts = Array.from({ length: 8 }, (_, k) => Array.from({ length: 10 }, (_, i) => 50 + 10 * k + i))
    const together = await Promise.all(prompts.map((p) => collect(scheduler, p, 3)))
    // the first prompt starts a step alone (the others arrive while it runs); the next step takes the other seven
    // whole (70 rows) beside the first one's decoding row, within the budget of 72
    expect(pipeline.steps[0]).toEqual({ rows: 10, logitRows: 1 })
    expect(pipeline.steps[1]).toEqual({ rows: 1 + 70, logitRows: 8 })
    const alone: number[][] = []
    for (const p of prompts.slice(0, 3))
      alone.push(((await collect(new Scheduler(make(), () => ''), p, 3)).at(-1) as { tokens: number[] }).tokens)
    expect(together.slice(0, 3).map((e) => (e.at(-1) as { tokens: number[] }).tokens)).toEqual(alone)
  })

  test('--max-step-tokens bounds every step while a long prompt arrives; the text is the same as unbounded', async () => {
    const long = Array.from({ length: 200 }, (_, i) => 100 + i)
    const run = async (maxStepTokens?: number) => {
      const pipeline = make()
      const scheduler = new Scheduler(pipeline, () => '', { prefillChunk: 64, maxStepTokens })
      const short = collect(scheduler, [1, 2, 3], 30)
      while (pipeline.steps.length < 2) await Bun.sleep(1)
      const events = await Promise.all([short, collect(scheduler, long, 4)])
      return { pipeline, tokens: events.map((e) => (e.at(-1) as { tokens: number[] }).tokens) }
    }
    const bounded = await run(16)
    expect(Math.max(...bounded.pipeline.steps.map((s) => s.rows))).toBe(16)
    // the short stream decoded in every step the long prompt was prefilled in (15 prompt rows beside its 1)
    expect(bounded.pipeline.steps.filter((s) => s.rows === 16).length).toBeGreaterThanOrEqual(12)
    expect(bounded.tokens).toEqual((await run()).tokens)
    expect(() => new Scheduler(make(), () => '', { maxBatch: 8, maxStepTokens: 4 })).toThrow(
      /--max-step-tokens 4 is below --max-batch 8/,
    )
  })

  test('a request past its timeout ends with an error and frees its slot', async () => {
    const pipeline = make(1)
    const scheduler = new Scheduler(pipeline, () => '')
    const events = await collect(scheduler, [1, 2], 1000, 30)
    expect(events.at(-1)).toMatchObject({ type: 'error' })
    expect((events.at(-1) as { error: Error }).error.message).toContain('did not finish within')
    const next = await collect(scheduler, [1, 2], 2)
    expect(next.at(-1)).toMatchObject({ type: 'done' })
  })

  test('a failed step ends every request in it with an error, never a hang', async () => {
    const pipeline = make()
    pipeline.failOnStep = 3
    const scheduler = new Scheduler(pipeline, () => '')
    const results = await Promise.all([collect(scheduler, [1, 2], 10), collect(scheduler, [3, 4], 10)])
    for (const events of results)
      expect((events.at(-1) as { type: string; error?: Error }).error?.message).toContain('stage 1 went away')
    expect((await collect(scheduler, [5], 2)).at(-1)).toMatchObject({ type: 'done' })
  })

  test('while degraded, submit refuses at once and the API answers 503 with Retry-After', async () => {
    const scheduler = new Scheduler(make(), () => '')
    scheduler.setDegraded('stage 1 (node-b) unreachable')
    expect(() =>
      scheduler.submit({ promptIds: [1], maxTokens: 1, sampling: GREEDY, eosTokenIds: [] }, () => {}),
    ).toThrow(DegradedError)
    const app = createApp({
      scheduler,
      tokenizer: new ModelTokenizer(dir),
      modelId: 'm',
      metrics: new ServingMetrics(),
      health: () => ({}),
    })
    const res = await app.request('/v1/completions', {
      method: 'POST',
      body: JSON.stringify({ prompt: 'x' }),
      headers: { 'content-type': 'application/json' },
    })
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toBe('5')
    expect((await res.json()).error.message).toContain('cluster degraded: stage 1 (node-b) unreachable')
    expect((await app.request('/health')).status).toBe(503)
  })

  test('a request whose client left while it waited in the queue is dropped from the queue at once', async () => {
    const metrics = new ServingMetrics()
    const scheduler = new Scheduler(make(1), () => '', { maxBatch: 1 }, metrics)
    const running = collect(scheduler, [1, 2, 3], 30) // holds the only slot
    const left = new AbortController()
    const events: RequestEvent[] = []
    scheduler.submit({ promptIds: [4, 5], maxTokens: 4, sampling: GREEDY, eosTokenIds: [], signal: left.signal }, (e) =>
      events.push(e),
    )
    expect(scheduler.queueDepth).toBe(1)
    left.abort()
    expect(scheduler.queueDepth).toBe(0)
    expect(metrics.render()).toContain('dbcluster_queue_depth 0')
    expect(metrics.render()).toContain('dbcluster_requests_total{outcome="cancelled"} 1')
    await running
    expect(events).toEqual([]) // nobody is listening: nothing was sent to the departed client
  })

  test('--api-key: requests without the bearer token get 401', async () => {
    const scheduler = new Scheduler(make(), () => '')
    const app = createApp({
      scheduler,
      tokenizer: new ModelTokenizer(dir),
      modelId: 'm',
      metrics: new ServingMetrics(),
      health: () => ({}),
      apiKey: 'sekret',
    })
    expect((await app.request('/v1/models')).status).toBe(401)
    expect((await app.request('/v1/models', { headers: { authorization: 'Bearer sekret' } })).status).toBe(200)
  })
})
