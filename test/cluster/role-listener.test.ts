/** The shared cluster port's refusals, each with its reason reaching the dialer: a first frame that is not a role, an
 * unknown role, a role nobody here takes (control on a stage), a control link for
 * a rank the cluster does not have. And the link itself: frames are held for a listener that comes late, but not
 * without bound. */
import { afterEach, expect, test } from 'bun:test'
import { ClusterPlanner } from '../../src/cluster/cluster-planner.ts'
import { encodeRole } from '../../src/cluster/join-messages.ts'
import { announceRole, RoleListener } from '../../src/cluster/role-listener.ts'
import { FrameType } from '../../src/link/frames.ts'
import { connectLink, listenLinks, type SealedLink } from '../../src/link/tcp-link.ts'
import { pins, testIdentity } from '../support/identities.ts'

const head = testIdentity(1)
const stage = testIdentity(2)
const authorize = pins({ head, stage })
const cleanup: (() => void)[] = []
afterEach(() => {
  for (const c of cleanup.splice(0)) c()
})

function listener(): RoleListener {
  const l = new RoleListener('127.0.0.1', 0, { identity: head, serial: 'head', clusterId: 'c', authorize })
  cleanup.push(() => l.stop())
  return l
}
const dial = (port: number) =>
  connectLink('127.0.0.1', port, { identity: stage, serial: 'stage', clusterId: 'c', authorize })
const closedWith = (link: SealedLink) =>
  new Promise<string>((resolve) => link.onClose((r) => resolve(`${r?.code} ${r?.message}`)))

test('a first frame that is not a role, or an unknown role, is refused with the reason', async () => {
  const l = listener()
  const a = await dial(l.port)
  const aClosed = closedWith(a)
  a.send(FrameType.data, Uint8Array.of(1))
  expect(await aClosed).toMatch(/E_ROLE.*sent frame type 13 before its role/)

  const b = await dial(l.port)
  const bClosed = closedWith(b)
  const bad = encodeRole({ role: 'ring', rank: 1 })
  bad[0] = 9
  b.send(FrameType.role, bad)
  expect(await bClosed).toMatch(/E_ROLE.*bad role message: role message names unknown role 9/)
})

test('a role this node takes no links for is refused: a stage is not the head', async () => {
  const l = listener()
  l.handle('ring', () => {})
  const c = await dial(l.port)
  const closed = closedWith(c)
  announceRole(c, 'control', 1)
  expect(await closed).toMatch(/this node takes no control links \(only the head, rank 0, plans the cluster\)/)
})

test('the head refuses a control link for a rank outside the cluster', async () => {
  const l = listener()
  new ClusterPlanner({
    listener: l,
    nodes: 2,
    head: { serial: 'head', usableBytes: 1, fingerprint: 'f' },
    footprint: { numLayers: 2, layerBytes: [1, 1], embeddingBytes: 0, headBytes: 0, kvBytesPerTokenLayer: 0 },
    slots: 1,
    maxLen: 8,
    model: 'm',
  })
  const c = await dial(l.port)
  const closed = closedWith(c)
  announceRole(c, 'control', 5)
  expect(await closed).toMatch(/E_JOIN.*rank 5 is not a stage of this 2-node cluster/)
})

test('frames that come before anyone listens are held for the first listener, up to a bound', async () => {
  let far: SealedLink | undefined
  const l = listenLinks(
    '127.0.0.1',
    0,
    { identity: head, serial: 'head', clusterId: 'c', authorize },
    (link) => (far = link),
  )
  cleanup.push(() => l.stop(true))
  const a = await dial(l.port)
  for (let i = 0; i < 3; i++) a.send(FrameType.data, Uint8Array.of(i))
  await Bun.sleep(100)
  const got: number[] = []
  far!.onFrame((f) => got.push(f.payload[0]!))
  await Bun.sleep(20)
  expect(got).toEqual([0, 1, 2])

  // a peer that floods a link nobody listens to is cut off, and told why
  const b = await dial(l.port)
  const closed = closedWith(b)
  for (let i = 0; i < 80; i++) b.send(FrameType.data, Uint8Array.of(i))
  expect(await closed).toMatch(/64 frames arrived before anyone listened/)
})
