/** Discovery for real: three hosts in network namespaces on one bridged link with 169.254.x.x addresses. Nodes find
 * each other by signed beacons, elect the same ranks, refuse a node whose key is not pinned, and drop a node whose
 * link goes away. Needs root and iproute2; skipped with the reason otherwise. */
import { afterAll, expect, test } from 'bun:test'
import { p256 } from '@noble/curves/nist.js'

const ROOT = new URL('../..', import.meta.url).pathname
const PREFIX = `dbc${process.pid % 10000}`
const NODES = [
  { ns: `${PREFIX}a`, seed: 11, serial: 'node-a', address: '169.254.20.30' },
  { ns: `${PREFIX}b`, seed: 12, serial: 'node-b', address: '169.254.20.4' },
  { ns: `${PREFIX}c`, seed: 13, serial: 'node-c', address: '169.254.20.100' },
]
const SWITCH = `${PREFIX}sw`

const sh = (cmd: string) => Bun.spawnSync(['bash', '-c', cmd], { stdout: 'pipe', stderr: 'pipe' })

function setUp(): string | null {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces'
  const probe = sh(`ip netns add ${SWITCH}`)
  if (probe.exitCode !== 0) return `ip netns add failed: ${probe.stderr.toString().trim() || 'iproute2 missing'}`
  const steps = [`ip netns exec ${SWITCH} ip link add br0 type bridge`, `ip netns exec ${SWITCH} ip link set br0 up`]
  NODES.forEach((n, i) => {
    steps.push(
      `ip netns add ${n.ns}`,
      `ip link add ${PREFIX}v${i} type veth peer name ${PREFIX}p${i}`,
      `ip link set ${PREFIX}v${i} netns ${n.ns}`,
      `ip link set ${PREFIX}p${i} netns ${SWITCH}`,
      `ip netns exec ${SWITCH} ip link set ${PREFIX}p${i} master br0`,
      `ip netns exec ${SWITCH} ip link set ${PREFIX}p${i} up`,
      `ip netns exec ${n.ns} ip link set lo up`,
      `ip netns exec ${n.ns} ip addr add ${n.address}/16 dev ${PREFIX}v${i}`,
      `ip netns exec ${n.ns} ip link set ${PREFIX}v${i} up`,
    )
  })
  for (const step of steps) {
    const r = sh(step)
    if (r.exitCode !== 0) return `network setup failed at '${step}': ${r.stderr.toString().trim()}`
  }
  return null
}

function tearDown() {
  for (const ns of [SWITCH, ...NODES.map((n) => n.ns)]) sh(`ip netns del ${ns} 2>/dev/null`)
}

// Set up at load time so a machine that forbids namespaces reports these tests as skipped, with the reason.
const skipReason = setUp()
afterAll(tearDown)
const netnsTest = (title: string, fn: () => Promise<void>) =>
  skipReason ? test.skip(`${title} (skipped: ${skipReason})`, fn) : test(title, fn, 30_000)

const key = (seed: number) => Buffer.from(p256.getPublicKey(new Uint8Array(32).fill(seed), true)).toString('base64')

function spawnNode(n: (typeof NODES)[number], trusted: Record<string, string>, durationMs: number) {
  return Bun.spawn(['ip', 'netns', 'exec', n.ns, process.execPath, 'test/support/discovery-node.ts'], {
    cwd: ROOT,
    env: { ...process.env, SEED: String(n.seed), SERIAL: n.serial, TRUSTED: JSON.stringify(trusted), DURATION_MS: String(durationMs), INTERVAL_MS: '200' },
    stdout: 'pipe',
    stderr: 'pipe',
  })
}

async function finalState(proc: ReturnType<typeof spawnNode>) {
  const text = await new Response(proc.stdout).text()
  await proc.exited
  const lines = text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))
  return { final: lines.find((l) => l.final), changes: lines.filter((l) => !l.final) }
}

netnsTest('nodes on a link-local link find each other, elect ranks by address, and refuse an unpinned node', async () => {
  // a and b pin each other; c is pinned by nobody (but trusts everyone)
  const ab = { 'node-a': key(11), 'node-b': key(12) }
  const all = { ...ab, 'node-c': key(13) }
  const procs = [spawnNode(NODES[0]!, ab, 2500), spawnNode(NODES[1]!, ab, 2500), spawnNode(NODES[2]!, all, 2500)]
  const [a, b, c] = await Promise.all(procs.map(finalState))
  const view = (s: Awaited<ReturnType<typeof finalState>>) => s.final.members.map((m: { serial: string; rank: number }) => `${m.rank}:${m.serial}`)
  // 169.254.20.4 < 169.254.20.30 numerically: b is rank 0
  expect(view(a!)).toEqual(['0:node-b', '1:node-a'])
  expect(view(b!)).toEqual(['0:node-b', '1:node-a'])
  expect(a!.final.rejected.some((r: { reason: string }) => r.reason.includes('node-c') && r.reason.includes('not pinned'))).toBe(true)
  // c trusts a and b, so it sees all three with the same election
  expect(view(c!)).toEqual(['0:node-b', '1:node-a', '2:node-c'])
})

netnsTest('a node whose link goes away is dropped, and the survivors re-elect', async () => {
  const ab = { 'node-a': key(11), 'node-b': key(12) }
  const a = spawnNode(NODES[0]!, ab, 4000)
  const b = spawnNode(NODES[1]!, ab, 1500) // b stops announcing after 1.5 s
  const [sa] = await Promise.all([finalState(a), finalState(b)])
  const sizes = sa.changes.map((c: { members: unknown[] }) => c.members.length)
  expect(sizes).toContain(2) // a saw b …
  expect(sa.final.members.map((m: { serial: string; rank: number }) => `${m.rank}:${m.serial}`)).toEqual(['0:node-a']) // … then dropped it
})
