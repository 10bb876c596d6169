/** Discovery for real: three hosts in network namespaces on one bridged link with 169.254.x.x addresses. Nodes find
 * each other by signed beacons, elect the same ranks, refuse a node whose key is not pinned, and drop a node whose
 * link goes away; `serve --discover` forms a working cluster over that link by itself. Needs root and iproute2;
 * skipped with the reason otherwise. */
import { afterAll, expect, test } from 'bun:test'
import { p256 } from '@noble/curves/nist.js'
import { prepareLocalNodes } from '../../src/cluster/local-cluster.ts'
import { synthModel } from '../support/synth-models.ts'

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
    env: {
      ...process.env,
      SEED: String(n.seed),
      SERIAL: n.serial,
      TRUSTED: JSON.stringify(trusted),
      DURATION_MS: String(durationMs),
      INTERVAL_MS: '200',
    },
    stdout: 'pipe',
    stderr: 'pipe',
  })
}

async function finalState(proc: ReturnType<typeof spawnNode>) {
  const text = await new Response(proc.stdout).text()
  await proc.exited
  const lines = text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
  return { final: lines.find((l) => l.final), changes: lines.filter((l) => !l.final) }
}

netnsTest(
  'nodes on a link-local link find each other, elect ranks by address, and refuse an unpinned node',
  async () => {
    // a and b pin each other; c is pinned by nobody (but trusts everyone)
    const ab = { 'node-a': key(11), 'node-b': key(12) }
    const all = { ...ab, 'node-c': key(13) }
    const procs = [spawnNode(NODES[0]!, ab, 2500), spawnNode(NODES[1]!, ab, 2500), spawnNode(NODES[2]!, all, 2500)]
    const [a, b, c] = await Promise.all(procs.map(finalState))
    const view = (s: Awaited<ReturnType<typeof finalState>>) =>
      s.final.members.map((m: { serial: string; rank: number }) => `${m.rank}:${m.serial}`)
    // 169.254.20.4 < 169.254.20.30 numerically: b is rank 0
    expect(view(a!)).toEqual(['0:node-b', '1:node-a'])
    expect(view(b!)).toEqual(['0:node-b', '1:node-a'])
    expect(
      a!.final.rejected.some((r: { reason: string }) => r.reason.includes('node-c') && r.reason.includes('not pinned')),
    ).toBe(true)
    // c trusts a and b, so it sees all three with the same election
    expect(view(c!)).toEqual(['0:node-b', '1:node-a', '2:node-c'])
  },
)

netnsTest('a node whose link goes away is dropped, and the survivors re-elect', async () => {
  const ab = { 'node-a': key(11), 'node-b': key(12) }
  const a = spawnNode(NODES[0]!, ab, 4000)
  const b = spawnNode(NODES[1]!, ab, 1500) // b stops announcing after 1.5 s
  const [sa] = await Promise.all([finalState(a), finalState(b)])
  const sizes = sa.changes.map((c: { members: unknown[] }) => c.members.length)
  expect(sizes).toContain(2) // a saw b …
  expect(sa.final.members.map((m: { serial: string; rank: number }) => `${m.rank}:${m.serial}`)).toEqual(['0:node-a']) // … then dropped it
})

netnsTest(
  'serve --discover: two nodes find each other on the link, elect the head by address and serve as one cluster',
  async () => {
    const model = await synthModel('qwen3', 'bf16')
    // node-0 lives in b's namespace (169.254.20.4, the lower address: the head), node-1 in a's (169.254.20.30)
    const { homes } = prepareLocalNodes(2)
    const placement = [NODES[1]!, NODES[0]!]
    const procs = placement.map((n, i) =>
      Bun.spawn(
        [
          'ip',
          'netns',
          'exec',
          n.ns,
          process.execPath,
          'src/main.ts',
          'serve',
          '--discover',
          '--nodes',
          '2',
          '--model',
          model,
          '--node-name',
          `node-${i}`,
          '--port',
          '0',
          '--backend',
          'cpu',
          '--threads',
          '1',
          '--max-context',
          '128',
          '--model-id',
          'x',
        ],
        {
          cwd: ROOT,
          env: { ...process.env, DBCLUSTER_HOME: homes[i]!, NODE_ENV: 'production' },
          stdout: 'pipe',
          stderr: 'pipe',
        },
      ),
    )
    const outputs = ['', '']
    const readAll = procs.map(async (p, i) => {
      const decoder = new TextDecoder()
      const reader = p.stdout.getReader()
      for (let r = await reader.read(); !r.done; r = await reader.read()) outputs[i] += decoder.decode(r.value)
    })
    try {
      const deadline = Date.now() + 25_000
      while (
        Date.now() < deadline &&
        !(
          /listening on (\S+)\n/.test(outputs[0]!) &&
          /stage 1 ready/.test(outputs[1]!) &&
          /ring formed/.test(outputs[0]!)
        )
      )
        await Bun.sleep(100)
      expect(outputs[0]).toMatch(
        /cluster on \S+: rank 0 node-0 169\.254\.20\.4, rank 1 node-1 169\.254\.20\.30; this node is rank 0/,
      )
      expect(outputs[1]).toMatch(/this node is rank 1/)
      expect(outputs[0]).toMatch(/ring formed: every hop sealed/)
      const url = /listening on (\S+)\n/.exec(outputs[0]!)![1]!
      // the API listens on loopback inside the head's namespace: ask from there
      const ask = sh(
        `ip netns exec ${placement[0]!.ns} ${process.execPath} -e 'const r = await fetch("${url}/v1/completions", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify({model: "x", prompt: "Hello, world", max_tokens: 6, temperature: 0})}); console.log(JSON.stringify((await r.json()).choices[0].text))'`,
      )
      const alone = Bun.spawnSync(
        [
          process.execPath,
          'src/main.ts',
          'generate',
          '--model',
          model,
          '--prompt',
          'Hello, world',
          '--max-tokens',
          '6',
          '--json',
          '--backend',
          'cpu',
        ],
        { cwd: ROOT, stdout: 'pipe' },
      )
      expect(JSON.parse(ask.stdout.toString())).toBe(JSON.parse(alone.stdout.toString()).text)
    } finally {
      procs.forEach((p) => p.kill())
      await Promise.all(procs.map((p) => p.exited))
      await Promise.all(readAll).catch(() => {})
    }
  },
)
