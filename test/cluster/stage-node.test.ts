/** A stage in process, driven by a hand-made predecessor over a real sealed link: it runs a step for a slot the head
 * opened and passes it on, and refuses — by dropping the link, so the head fails the step at once — a step for a slot
 * that was never opened on it (a stage that restarted with an empty cache must never decode against KV it lacks). On a
 * compute thread, steps in flight come back in order, and a stuck step ends the link as a hung compute thread. */
import { afterAll, expect, test } from 'bun:test'
import { decodeResult, encodeStep } from '../../src/cluster/step-messages.ts'
import { announceRole, RoleListener } from '../../src/cluster/role-listener.ts'
import { StageNode } from '../../src/cluster/ring.ts'
import { FrameType } from '../../src/link/frames.ts'
import { connectLink, type SealedLink } from '../../src/link/tcp-link.ts'
import { StageThread } from '../../src/compute/stage-thread.ts'
import { ModelStage } from '../../src/model/shard.ts'
import type { StageRunner } from '../../src/model/stage-runner.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { pins, testIdentity } from '../support/identities.ts'
import { synthModel } from '../support/synth-models.ts'

const head = testIdentity(1)
const stage = testIdentity(2)
const authorize = pins({ head, stage })
const stops: (() => void)[] = []
afterAll(() => stops.forEach((s) => s()))

function freePort(): number {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = s.port
  s.stop(true)
  return port
}

/** A stage node for `runner` on free ports, the head's side as a listener collecting the last stage's results, and a
 * way to dial the stage as the head does. */
function stageOnLink(runner: StageRunner) {
  const headPort = freePort()
  const stagePort = freePort()
  const peers = [
    { host: '127.0.0.1', port: headPort },
    { host: '127.0.0.1', port: stagePort },
  ]
  const results: Uint8Array[] = []
  const headListener = new RoleListener('127.0.0.1', headPort, {
    identity: head,
    serial: 'head',
    clusterId: 'c',
    authorize,
  })
  headListener.handle('ring', (link) => link.onFrame((f) => f.type === FrameType.activation && results.push(f.payload)))
  const node = new StageNode({
    rank: 1,
    peers,
    stage: runner,
    link: { identity: stage, serial: 'stage', clusterId: 'c', authorize },
  })
  stops.push(
    () => node.stop(),
    () => headListener.stop(),
    () => runner.close(),
  )
  const dial = async (): Promise<SealedLink> => {
    const link = await connectLink('127.0.0.1', stagePort, {
      identity: head,
      serial: 'head',
      clusterId: 'c',
      authorize,
    })
    announceRole(link, 'ring', 0)
    return link
  }
  return { dial, results }
}

const closeReason = (link: SealedLink) =>
  new Promise<{ code?: string; message?: string }>((resolve) =>
    link.onClose((r) => resolve(r as { code?: string; message?: string })),
  )

const hidden = new Float32Array(64).fill(0.1)
const step = (stepId: number, openSlots: number[]) =>
  encodeStep({
    stepId,
    slots: Int32Array.of(0),
    positions: Int32Array.of(0),
    logitRows: Int32Array.of(0),
    closeSlots: new Int32Array(),
    openSlots: Int32Array.from(openSlots),
    stageMicros: Int32Array.of(5),
    hiddenSize: 64,
    hidden,
  })

test('a step for a slot never opened on the stage drops the link and tells the head why; an opened one runs and comes back', async () => {
  const model = await synthModel('qwen3', 'f32')
  const { dial, results } = stageOnLink(
    ModelStage.load(model, openCpuBackend({ threads: 1 }), { lo: 1, hi: 3, slots: 2, maxLen: 32 }),
  )

  // slot 0 was never opened on this stage: refused, the link is dropped with the reason
  const first = await dial()
  const closed = closeReason(first)
  first.send(FrameType.step, step(1, []), { stage: 0, requestId: 1n })
  const reason = await closed
  expect(`${reason.code} ${reason.message}`).toMatch(/E_STEP.*slot 0 was never opened on this stage/)
  expect(results).toHaveLength(0)

  // a new link whose step opens the slot: the stage runs it and the last stage's result reaches the head
  const second = await dial()
  second.send(FrameType.step, step(2, [0]), { stage: 0, requestId: 2n })
  for (let i = 0; i < 100 && results.length === 0; i++) await Bun.sleep(20)
  expect(results).toHaveLength(1)
  second.close()
}, 60_000)

test('a stage whose compute thread hangs drops the link as a hung compute thread, not as a dead peer; steps sent meanwhile come back in order', async () => {
  const model = await synthModel('qwen3', 'f32')
  const thread = await StageThread.start({
    dir: model,
    backend: { name: 'cpu', threads: 1 },
    lo: 1,
    hi: 3,
    slots: 2,
    maxLen: 32,
    hungAfterMs: 500,
  })
  const { dial, results } = stageOnLink(thread)
  // two steps in flight at once come back in the order sent (the thread runs them one after the other)
  const link = await dial()
  link.send(FrameType.step, step(1, [0]), { stage: 0, requestId: 1n })
  link.send(FrameType.step, step(2, []), { stage: 0, requestId: 2n })
  for (let i = 0; i < 100 && results.length < 2; i++) await Bun.sleep(20)
  expect(results.map((r) => decodeResult(r).stepId)).toEqual([1, 2])

  // the next step sticks on the compute thread: the link stays up (heartbeats answered) until the thread is found hung
  const closed = closeReason(link)
  thread.stall(3000)
  link.send(FrameType.step, step(3, []), { stage: 0, requestId: 3n })
  const reason = await closed
  expect(`${reason.code} ${reason.message}`).toMatch(/E_COMPUTE_HUNG.*compute thread has not finished a step/)
  expect(results).toHaveLength(2)
}, 60_000)
