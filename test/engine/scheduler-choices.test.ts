/** The scheduler's side of OpenAI's `n`, logit bias and presence/frequency penalties: choices are independent requests
 * seeded seed, seed+1, … (each equal to that seed asked alone), admitted all or none and cancelled together; the bias
 * each row carries to the sampler counts the tokens generated so far, never the prompt. */
import { describe, expect, test } from 'bun:test'
import { LocalPipeline, type Pipeline } from '../../src/engine/pipeline.ts'
import { QueueFullError, Scheduler, type RequestEvent, type ScheduledRequest } from '../../src/engine/scheduler.ts'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import { GREEDY, samplingParams, type RowSampling } from '../../src/model/sampler.ts'
import { ModelStage, type StageInput } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { synthModel } from '../support/synth-models.ts'

const backend = openCpuBackend()

/** Records the sampling of every row the scheduler asks for. */
class RecordingPipeline implements Pipeline {
  readonly rows: RowSampling[][] = []
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
    return this.inner.step(input)
  }
  async sample(input: StageInput, rows: readonly RowSampling[]) {
    this.rows.push([...rows])
    return this.inner.sample(input, rows)
  }
}

type Done = Extract<RequestEvent, { type: 'done' }>

/** Runs `n` choices to the end; the done events by index. */
function choices(scheduler: Scheduler, request: ScheduledRequest, n: number): Promise<Done[]> {
  return new Promise((resolve, reject) => {
    const done: Done[] = []
    let left = n
    scheduler.submitChoices(request, n, (index, event) => {
      if (event.type === 'error') reject(event.error)
      if (event.type !== 'done') return
      done[index] = event
      if (--left === 0) resolve(done)
    })
  })
}

describe('choices (n) and logit adjustments in the scheduler', async () => {
  const dir = await synthModel('qwen3', 'f32')
  const make = (slots = 4) =>
    new RecordingPipeline(new LocalPipeline([ModelStage.load(dir, backend, { slots, maxLen: 512 })]))
  const sampled = (seed: number): ScheduledRequest => ({
    promptIds: [3, 4, 5],
    maxTokens: 8,
    sampling: samplingParams({ temperature: 1, seed }),
    eosTokenIds: [],
  })

  test('choice i is the request seeded seed + i, asked alone', async () => {
    const scheduler = new Scheduler(make(), () => '')
    const three = await choices(scheduler, sampled(40), 3)
    const alone = []
    for (const seed of [40, 41, 42]) alone.push((await choices(scheduler, sampled(seed), 1))[0]!.tokens)
    expect(three.map((d) => d.tokens)).toEqual(alone)
    expect(new Set(alone.map((t) => t.join())).size).toBe(3)
    for (const d of three) expect(d.promptTokens).toBe(3)
  })

  test('the bias a row carries counts the tokens generated so far, not the prompt', async () => {
    const pipeline = make()
    const scheduler = new Scheduler(pipeline, () => '')
    const [done] = await choices(
      scheduler,
      {
        promptIds: [9, 9, 9, 9],
        maxTokens: 5,
        sampling: GREEDY,
        adjustments: { logitBias: new Map([[7, 2]]), presencePenalty: 0.5, frequencyPenalty: 0.25 },
        eosTokenIds: [],
      },
      1,
    )
    const biases = pipeline.rows.map((rows) => rows[0]!.bias!)
    expect(biases).toHaveLength(5)
    biases.forEach((bias, step) => {
      const generated = done!.tokens.slice(0, step)
      const expected = new Map<number, number>([[7, 2]])
      for (const t of new Set(generated)) {
        const count = generated.filter((g) => g === t).length
        expected.set(t, (expected.get(t) ?? 0) - (0.25 * count + 0.5))
      }
      const ids = [...expected.keys()].sort((a, b) => a - b)
      expect([...bias.ids]).toEqual(ids)
      expect([...bias.values]).toEqual(ids.map((id) => expected.get(id)!))
    })
    // the prompt's token 9 is not penalized before anything is generated
    expect([...biases[0]!.ids]).toEqual([7])
  })

  test('the choices are admitted all or none', async () => {
    const scheduler = new Scheduler(make(1), () => '', { maxBatch: 1, maxQueue: 2 })
    const running = choices(scheduler, sampled(1), 1) // holds the only slot
    expect(() => scheduler.submitChoices(sampled(2), 3, () => {})).toThrow(QueueFullError)
    expect(scheduler.queueDepth).toBe(0)
    const two = choices(scheduler, sampled(2), 2)
    expect(scheduler.queueDepth).toBe(2)
    await Promise.all([running, two])
  })

  test('one signal cancels every choice, running or queued, and frees their slots', async () => {
    const metrics = new ServingMetrics()
    const scheduler = new Scheduler(make(2), () => '', { maxBatch: 2 }, metrics)
    const left = new AbortController()
    const events: [number, RequestEvent][] = []
    let first: () => void
    const started = new Promise<void>((resolve) => (first = resolve))
    scheduler.submitChoices({ ...sampled(5), maxTokens: 400, signal: left.signal }, 3, (index, event) => {
      events.push([index, event])
      first()
    })
    await started
    expect(scheduler.running).toBe(2)
    expect(scheduler.queueDepth).toBe(1)
    left.abort()
    expect(scheduler.queueDepth).toBe(0)
    // the step loop reaps the running two
    for (let i = 0; i < 100 && scheduler.running; i++) await new Promise((r) => setTimeout(r, 10))
    expect(scheduler.running).toBe(0)
    expect(metrics.render()).toContain('dbcluster_requests_total{outcome="cancelled"} 3')
    expect(events.some(([, e]) => e.type === 'done')).toBe(false)
    // both slots are free again
    const after = await choices(scheduler, sampled(6), 2)
    expect(after.map((d) => d.tokens.length)).toEqual([8, 8])
  })
})
