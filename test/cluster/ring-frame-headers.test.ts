/** Ring frames carry real header values (docs/protocol.md §Sealed frames, "On cluster links"): stage = the sender's rank,
 * request id = the step id. A genuine peer that lies in the header (correctly sealed, wrong stage or step) is refused by
 * the ring's check, and a man in the middle that rewrites the stage, request id or seq of one sealed frame is refused
 * by the link (E_FRAME_AUTH, E_FRAME_ORDER, E_FRAME_REPLAY); either way the head's step fails at once, naming why, and
 * an untouched relay carries the same logits as one process. */
import { afterEach, describe, expect, test } from 'bun:test'
import { createConnection, createServer, type Socket } from 'node:net'
import { ClusterPlanner } from '../../src/cluster/cluster-planner.ts'
import { encodeJoin, encodeRole } from '../../src/cluster/join-messages.ts'
import { HeadPipeline, StageNode } from '../../src/cluster/ring.ts'
import { announceRole, RoleListener } from '../../src/cluster/role-listener.ts'
import { decodeStep, encodeResult, encodeStep } from '../../src/cluster/step-messages.ts'
import { FrameType } from '../../src/link/frames.ts'
import { connectLink, type LinkFrame, type LinkOptions, type SealedLink } from '../../src/link/tcp-link.ts'
import { GREEDY, type RowSampling } from '../../src/model/sampler.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { pins, testIdentity } from '../support/identities.ts'
import { synthModel } from '../support/synth-models.ts'

const ids = { head: testIdentity(1), stage: testIdentity(2), stage2: testIdentity(3) }
type Who = keyof typeof ids
const authorize = pins(ids)
const linkOf = (who: Who): LinkOptions => ({
  identity: ids[who],
  serial: who,
  clusterId: 'c',
  authorize,
  pingIntervalMs: 60_000, // no pings in the way: the frames a test counts are the ring's own
})
const backend = openCpuBackend({ threads: 1 })
const GREEDY_ROW: RowSampling = { params: GREEDY, u: 0, history: new Int32Array(), logprobs: -1 }

const cleanup: (() => void)[] = []
afterEach(() => {
  for (const c of cleanup.splice(0).reverse()) c()
})

function listener(who: Who): RoleListener {
  const l = new RoleListener('127.0.0.1', 0, linkOf(who))
  cleanup.push(() => l.stop())
  return l
}

async function load(lo: number, hi: number): Promise<ModelStage> {
  const stage = ModelStage.load(await synthModel('qwen3', 'f32'), backend, { lo, hi, slots: 2, maxLen: 32 })
  cleanup.push(() => stage.close())
  return stage
}

async function formed(head: HeadPipeline): Promise<void> {
  for (let i = 0; i < 250 && head.degraded; i++) await Bun.sleep(20)
  expect(head.degraded).toBeNull()
}

const closedWith = (link: SealedLink) =>
  new Promise<string>((resolve) => link.onClose((r) => resolve(`${r?.code}: ${r?.message}`)))

/** The head's step (or sample) as its error, and how long it took to fail. */
async function failure(run: Promise<unknown>): Promise<{ code: string; message: string; ms: number }> {
  const t0 = performance.now()
  try {
    await run
  } catch (error) {
    const e = error as { code: string; message: string }
    return { code: e.code, message: e.message, ms: performance.now() - t0 }
  }
  throw new Error('the step succeeded')
}

function step(stepId: number) {
  return encodeStep({
    stepId,
    slots: Int32Array.of(0),
    positions: Int32Array.of(0),
    logitRows: Int32Array.of(0),
    closeSlots: new Int32Array(),
    openSlots: Int32Array.of(0),
    stageMicros: Int32Array.of(5),
    hiddenSize: 64,
    hidden: new Float32Array(64).fill(0.1),
  })
}

describe('a genuine peer that lies in the header is refused by the ring', () => {
  test('a stage refuses a step whose stage is not its predecessor, or whose request id is not the step id', async () => {
    const results: LinkFrame[] = []
    const headListener = listener('head')
    headListener.handle('ring', (link) => link.onFrame((f) => f.type === FrameType.activation && results.push(f)))
    const stageListener = listener('stage')
    const peers = [
      { host: '127.0.0.1', port: headListener.port },
      { host: '127.0.0.1', port: stageListener.port },
    ]
    const node = new StageNode({
      rank: 1,
      peers,
      stage: await load(1, 3),
      link: linkOf('stage'),
      listener: stageListener,
    })
    cleanup.push(() => node.stop())
    const dial = async () => {
      const link = await connectLink('127.0.0.1', stageListener.port, linkOf('head'))
      announceRole(link, 'ring', 0)
      cleanup.push(() => link.close())
      return link
    }

    for (const [header, reason] of [
      [{ stage: 5, requestId: 1n }, 'E_FRAME_MISMATCH: step frame says stage 5, expected 0 (predecessor)'],
      [{ stage: 0, requestId: 9n }, 'E_FRAME_MISMATCH: step frame says request 9, expected 1 (the step id it carries)'],
    ] as const) {
      const liar = await dial()
      const closed = closedWith(liar)
      liar.send(FrameType.step, step(1), header)
      // the stage's reason reaches the sender, and the step never ran
      expect(await closed).toBe(`E_PEER_CLOSED: stage closed the link: ${reason}`)
    }
    expect(results).toHaveLength(0)

    // the same step with the true header runs, and its result carries this stage's rank and the step id
    const honest = await dial()
    honest.send(FrameType.step, step(3), { stage: 0, requestId: 3n })
    for (let i = 0; i < 250 && results.length === 0; i++) await Bun.sleep(20)
    expect(results.map((f) => [f.stage, f.requestId])).toEqual([[1, 3n]])
  }, 30_000)

  test('the head refuses a result from the wrong stage, for the wrong request, or for a step it is not waiting for; each fails the pending step', async () => {
    const headListener = listener('head')
    const stageListener = listener('stage')
    const steps: LinkFrame[] = []
    stageListener.handle('ring', (link) => link.onFrame((f) => f.type === FrameType.step && steps.push(f)))
    const peers = [
      { host: '127.0.0.1', port: headListener.port },
      { host: '127.0.0.1', port: stageListener.port },
    ]
    const head = new HeadPipeline({
      rank: 0,
      peers,
      stage: await load(0, 1),
      link: linkOf('head'),
      listener: headListener,
    })
    cleanup.push(() => head.stop())
    const slot = head.openSequence()
    const input = { tokens: Int32Array.of(42), slots: Int32Array.of(slot), positions: Int32Array.of(0) }

    // the fake last stage: its link to the head, and the step the head just sent it
    const lastStage = async () => {
      const link = await connectLink('127.0.0.1', headListener.port, linkOf('stage'))
      announceRole(link, 'ring', 1)
      cleanup.push(() => link.close())
      await formed(head)
      return link
    }
    const nextStep = async () => {
      for (let i = 0; i < 250 && steps.length === 0; i++) await Bun.sleep(20)
      const f = steps.shift()!
      // the head's own frame: its rank, and the step id the message carries
      expect([f.stage, f.requestId]).toEqual([0, BigInt(decodeStep(f.payload).stepId)])
      return decodeStep(f.payload).stepId
    }
    const answer = (stepId: number, id = 7) =>
      encodeResult({ stepId, stageMicros: Int32Array.of(1, 2), tokens: [{ id }] })

    let link = await lastStage()
    const ok = head.sample(input, [GREEDY_ROW])
    const first = await nextStep()
    link.send(FrameType.activation, answer(first, 1234), { stage: 1, requestId: BigInt(first) })
    expect(await ok).toEqual([{ id: 1234 }])

    // each lie, given the step the head sent: the result's step id, the header's stage and request id, and the refusal
    const lies: ((s: number) => { stepId: number; stage: number; requestId: bigint; reason: string })[] = [
      (s) => ({
        stepId: s,
        stage: 5,
        requestId: BigInt(s),
        reason: 'activation frame says stage 5, expected 1 (the last stage)',
      }),
      (s) => ({
        stepId: s,
        stage: 1,
        requestId: BigInt(s + 1),
        reason: `activation frame says request ${s + 1}, expected ${s} (the step id it carries)`,
      }),
      () => ({ stepId: 99, stage: 1, requestId: 99n, reason: 'result for step 99, which is not pending' }),
    ]
    for (const lie of lies) {
      if (link.closed) link = await lastStage()
      const pending = head.sample(input, [GREEDY_ROW])
      const { stepId, stage, requestId, reason } = lie(await nextStep())
      const closed = closedWith(link)
      link.send(FrameType.activation, answer(stepId), { stage, requestId })
      const e = await failure(pending)
      expect(e.code).toBe('E_STAGE_LOST')
      expect(e.message).toContain(`the last stage's link closed: E_FRAME_MISMATCH: ${reason}`)
      expect(e.ms).toBeLessThan(2000)
      expect(await closed).toBe(`E_PEER_CLOSED: head closed the link: E_FRAME_MISMATCH: ${reason}`)
    }
  }, 30_000)

  test('a role or a join whose header stage is not the rank it announces is refused', async () => {
    const l = listener('head')
    l.handle('ring', () => {})
    new ClusterPlanner({
      listener: l,
      nodes: 2,
      head: { serial: 'head', usableBytes: 1, fingerprint: 'f' },
      footprint: { numLayers: 2, layerBytes: [1, 1], embeddingBytes: 0, headBytes: 0, kvBytesPerTokenLayer: 0 },
      slots: 1,
      maxLen: 8,
      model: 'm',
    })
    const dial = async () => {
      const link = await connectLink('127.0.0.1', l.port, linkOf('stage'))
      cleanup.push(() => link.close())
      return { link, closed: closedWith(link) }
    }
    const role = await dial()
    role.link.send(FrameType.role, encodeRole({ role: 'ring', rank: 1 }), { stage: 3 })
    expect(await role.closed).toBe(
      'E_PEER_CLOSED: head closed the link: E_FRAME_MISMATCH: role frame says stage 3, expected 1 (the rank it announces)',
    )

    const join = await dial()
    announceRole(join.link, 'control', 1)
    const facts = {
      usableBytes: 1024,
      loaded: null,
      backend: 'cpu',
      osVersion: 'x',
      chip: 'x',
      clockMs: 1,
      freeBytes: 1,
      attestation: '',
    }
    join.link.send(FrameType.join, encodeJoin({ rank: 1, ...facts }), { stage: 0 })
    expect(await join.closed).toBe(
      'E_PEER_CLOSED: head closed the link: E_FRAME_MISMATCH: join frame says stage 0, expected 1 (the rank its role announced)',
    )
  }, 10_000)
})

/** A TCP relay on loopback between a ring member and the member it dials. It forwards every byte both ways, parsing the
 * dialer's stream into frames (u64 LE length | u8 type | body); the first sealed frame of one of `types` goes through
 * `tamper`. `passed` counts the frames of those types it forwarded. */
function relay(target: number, types: number[], tamper?: (frame: Uint8Array) => void) {
  const sockets: Socket[] = []
  const state = { passed: 0, tampered: false, roleSeen: false, port: 0 }
  const server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: target })
    sockets.push(client, upstream)
    upstream.on('data', (chunk) => client.write(chunk))
    let buffered = Buffer.alloc(0)
    client.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      while (buffered.byteLength >= 8) {
        const size = 8 + Number(buffered.readBigUInt64LE(0))
        if (buffered.byteLength < size) break
        const frame = new Uint8Array(buffered.subarray(0, size))
        buffered = buffered.subarray(size)
        if (frame[8] === FrameType.role) state.roleSeen = true // the hop's handshake is done
        if (types.includes(frame[8]!)) {
          if (tamper && !state.tampered) (tamper(frame), (state.tampered = true))
          state.passed++
        }
        upstream.write(frame)
      }
    })
    const end = () => (client.destroy(), upstream.destroy())
    client.on('close', end).on('error', end)
    upstream.on('close', end).on('error', end)
  })
  server.listen(0, '127.0.0.1')
  cleanup.push(() => {
    server.close()
    sockets.forEach((s) => s.destroy())
  })
  return new Promise<typeof state>((resolve) =>
    server.on('listening', () => resolve(Object.assign(state, { port: (server.address() as { port: number }).port }))),
  )
}

/** Offsets in a sealed frame (src/link/frames.ts): length 0, type 8, seq 9, stage 17, request id 21. */
const field = (frame: Uint8Array) => new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
const REWRITES = {
  stage: (f: Uint8Array) => field(f).setUint32(17, 7, true),
  'request id': (f: Uint8Array) => field(f).setBigUint64(21, field(f).getBigUint64(21, true) + 1n, true),
  'seq ahead': (f: Uint8Array) => field(f).setBigUint64(9, field(f).getBigUint64(9, true) + 1n, true),
  'seq replayed': (f: Uint8Array) => field(f).setBigUint64(9, field(f).getBigUint64(9, true) - 1n, true),
}
/** The link's refusal of each rewrite, given the sender's rank (the stage its frame truly carries). */
const REFUSED: Record<keyof typeof REWRITES, (sender: number) => RegExp> = {
  stage: () => /E_FRAME_AUTH: frame 1 \(stage 7\) failed authentication/,
  'request id': (sender) => new RegExp(`E_FRAME_AUTH: frame 1 \\(stage ${sender}\\) failed authentication`),
  'seq ahead': () => /E_FRAME_ORDER: frame 2 arrived when 1 was due \(out of order\)/,
  'seq replayed': () => /E_FRAME_REPLAY: frame 0 arrived when 1 was due \(replayed\)/,
}

/** Hops by name: the sender's rank and the ring's size. */
const HOPS = {
  'head→stage': { from: 0, nodes: 2 },
  'stage→head': { from: 1, nodes: 2 },
  'stage 1→stage 2': { from: 1, nodes: 3 },
} as const
type Hop = keyof typeof HOPS
/** Layers [lo, hi) of the synthetic model's three per rank. */
const RANGES: Record<number, [number, number][]> = {
  2: [
    [0, 1],
    [1, 3],
  ],
  3: [
    [0, 1],
    [1, 2],
    [2, 3],
  ],
}
const who = (rank: number): Who => (rank === 0 ? 'head' : rank === 1 ? 'stage' : 'stage2')

/** A ring in this process whose hop `hop` runs through a relay: each node dials its successor at its own peers list,
 * so the relay stands in for the successor in the sender's list only. */
async function relayedRing(hop: Hop, tamper?: (frame: Uint8Array) => void) {
  const { from, nodes } = HOPS[hop]
  const listeners = Array.from({ length: nodes }, (_, rank) => listener(who(rank)))
  const real = listeners.map((l) => ({ host: '127.0.0.1', port: l.port }))
  const to = (from + 1) % nodes
  // step frames between stages; the last stage's result to the head (fragments: the logits are larger than a record)
  const r = await relay(
    real[to]!.port,
    to === 0 ? [FrameType.activation, FrameType.fragment] : [FrameType.step],
    tamper,
  )
  const members = await Promise.all(
    real.map(async (_, rank) => {
      const options = {
        rank,
        peers: rank === from ? real.map((p, i) => (i === to ? { host: '127.0.0.1', port: r.port } : p)) : real,
        stage: await load(...RANGES[nodes]![rank]!),
        link: linkOf(who(rank)),
        listener: listeners[rank],
      }
      return rank === 0 ? new HeadPipeline(options) : new StageNode(options)
    }),
  )
  cleanup.push(...members.map((m) => () => m.stop()))
  const head = members[0] as HeadPipeline
  await formed(head)
  // the head sees its own two hops only: a middle one is up once its dialer has said its role
  for (let i = 0; i < 250 && !r.roleSeen; i++) await Bun.sleep(20)
  expect(r.roleSeen).toBe(true)
  return { head, relay: r }
}

/** Where the refusal shows in the head's error: the last stage's link is the head's own; any other hop's comes back
 * hop by hop over the links toward the head (each stage drops its predecessor when its successor drops). */
const RELAYED: Record<Hop, string> = {
  'head→stage': 'stage 1 unreachable: E_PEER_CLOSED: stage closed the link: ',
  'stage→head': "the last stage's link closed: ",
  'stage 1→stage 2':
    "stage 1 unreachable: E_PEER_CLOSED: stage closed the link: E_SUCCESSOR_LOST: rank 1's successor is unreachable: E_PEER_CLOSED: stage2 closed the link: ",
}

describe('a man in the middle rewriting one sealed header', () => {
  test('an untouched relay carries every step: the logits equal one process running every layer', async () => {
    const whole = await load(0, 3)
    for (const hop of Object.keys(HOPS) as Hop[]) {
      const { head, relay } = await relayedRing(hop)
      const slot = head.openSequence()
      const wholeSlot = whole.cache.allocate()
      for (const [position, token] of [42, 7, 1000].entries()) {
        const input = { tokens: Int32Array.of(token), slots: Int32Array.of(slot), positions: Int32Array.of(position) }
        const got = await head.step(input)
        const want = whole.forward({ ...input, slots: Int32Array.of(wholeSlot) }).logits!
        expect(got.length).toBe(want.length)
        let worst = 0
        for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!))
        expect(worst).toBeLessThan(1e-4)
      }
      whole.cache.release(wholeSlot)
      expect(relay.passed).toBeGreaterThanOrEqual(3) // the frames went through it
    }
  }, 30_000)

  for (const hop of Object.keys(HOPS) as Hop[])
    for (const rewrite of Object.keys(REWRITES) as (keyof typeof REWRITES)[])
      test(`${hop}: the ${rewrite} rewritten is refused by name and the head's step fails at once`, async () => {
        const { head, relay } = await relayedRing(hop, REWRITES[rewrite])
        const slot = head.openSequence()
        const e = await failure(
          head.step({ tokens: Int32Array.of(42), slots: Int32Array.of(slot), positions: Int32Array.of(0) }),
        )
        expect(relay.tampered).toBe(true)
        expect(e.code).toBe('E_STAGE_LOST')
        expect(e.message).toContain(RELAYED[hop])
        expect(e.message).toMatch(REFUSED[rewrite](HOPS[hop].from))
        expect(e.ms).toBeLessThan(2000)
      }, 15_000)
})
