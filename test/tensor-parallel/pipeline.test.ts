/** Rank 0's TensorParallelPipeline around a group that fails and is restored (a stand-in for SealedTpGroup, so the
 * messages can be read): opens and closes while the group is down stay local, resync opens every slot still open on
 * the ranks that rejoin, and a step lost with a rank is a lost stage the scheduler suspends its requests for. */
import { afterAll, expect, test } from 'bun:test'
import { followTensorParallel, TensorParallelPipeline, type StepBroadcast } from '../../src/tensor-parallel/pipeline.ts'
import { DbcError } from '../../src/errors.ts'
import { GREEDY } from '../../src/model/sampler.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { selectBackend } from '../../src/tensor/select-backend.ts'
import { synthModel } from '../support/synth-models.ts'

class StandInGroup implements StepBroadcast {
  readonly rank = 0
  failure: Error | undefined
  /** [op, slot] of every open (1) and close (2) sent; 3 for a step. */
  readonly sent: number[][] = []
  broadcast(bytes?: Uint8Array): Uint8Array {
    if (this.failure) throw this.failure
    const words = new Int32Array(bytes!.buffer, bytes!.byteOffset, bytes!.byteLength / 4)
    this.sent.push(words[0] === 3 ? [3] : [words[0]!, words[1]!])
    return bytes!
  }
}

const { backend } = selectBackend('cpu', { threads: 1 })
const stages: ModelStage[] = []
afterAll(() => stages.forEach((s) => s.close()))

test('while a rank is lost: opens and closes stay local, a step is a lost stage; restored: resync opens the open slots', async () => {
  const stage = ModelStage.load(await synthModel('qwen3', 'bf16'), backend, { slots: 4, maxLen: 32 })
  stages.push(stage)
  const group = new StandInGroup()
  const pipeline = new TensorParallelPipeline(stage, group)
  const a = pipeline.openSequence()
  const b = pipeline.openSequence()
  expect(group.sent).toEqual([
    [1, a],
    [1, b],
  ])
  group.failure = new Error('rank 1 went away')
  const c = pipeline.openSequence()
  pipeline.closeSequence(a)
  expect(group.sent).toHaveLength(2)
  const step = { tokens: Int32Array.of(1), slots: Int32Array.of(b), positions: Int32Array.of(0) }
  const lost = await pipeline
    .sample(step, [{ params: GREEDY, u: 0, history: new Int32Array(0), logprobs: -1 }])
    .catch((e) => e)
  expect(lost).toBeInstanceOf(DbcError)
  expect(lost.code).toBe('E_STAGE_LOST')
  expect(lost.message).toContain('rank 1 went away')
  const lostStep = await pipeline.step(step).catch((e) => e)
  expect(lostStep.code).toBe('E_STAGE_LOST')
  group.failure = undefined
  pipeline.resync()
  expect(group.sent.slice(2)).toEqual([
    [1, b],
    [1, c],
  ])
  // whole again: a step goes out, and an error of the step itself is not taken for a lost rank
  await pipeline.sample(step, [{ params: GREEDY, u: 0, history: new Int32Array(0), logprobs: -1 }])
  expect(group.sent.at(-1)).toEqual([3])
  const bad = await pipeline.step({ ...step, tokens: Int32Array.of(1 << 30) }).catch((e) => e)
  expect(bad.code).toBe('E_TOKEN')
})

/** A follower's side of a group that hands it the messages given, one per broadcast. */
function scripted(messages: Uint8Array[], gather: boolean): StepBroadcast {
  const group: StepBroadcast = { rank: 1, broadcast: () => messages.shift() ?? new Uint8Array(Int32Array.of(4).buffer) }
  return gather ? { ...group, gatherBytes: () => null } : group
}

test('a follower refuses a sampling step that is cut short, or one over a group that cannot gather, with the reason', async () => {
  const stage = ModelStage.load(await synthModel('qwen3', 'bf16'), backend, { slots: 4, maxLen: 32 })
  stages.push(stage)
  // op 5 (a sampling step) saying 3 tokens, and then nothing
  const cut = new Uint8Array(Int32Array.of(5, 3).buffer)
  expect(() => followTensorParallel(stage, scripted([cut], true))).toThrow(
    'tensor-parallel sampling step has a bad array length',
  )
  let refused: unknown
  try {
    followTensorParallel(stage, scripted([cut], false))
  } catch (error) {
    refused = error
  }
  expect((refused as DbcError).code).toBe('E_TP_PROTOCOL')
  expect((refused as DbcError).message).toContain('cannot gather')
  // a stop ends the loop with the steps replayed
  expect(followTensorParallel(stage, scripted([], true))).toBe(0)
})
