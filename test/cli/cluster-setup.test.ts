/** `dbcluster cluster setup` as two seeds run it: pin the peer, remember the cluster, then `serve --peers` (no list) on
 * one and plain `serve` on the other form a real two-node cluster on loopback; the second seed reads the first's key
 * from its link port (--from-peer). */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fingerprint } from '../../src/trust/identity.ts'
import { loadSoftwareIdentity } from '../../src/trust/identity-software.ts'
import { testIdentity } from '../support/identities.ts'
import type { Subprocess } from 'bun'
import { synthModel } from '../support/synth-models.ts'
import { runCli } from '../support/run-cli.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64')
const nodes: Subprocess[] = []
afterAll(async () => {
  for (const p of nodes) p.kill('SIGKILL')
  await Promise.all(nodes.map((p) => p.exited))
})

const cli = (args: string[], home: string) => runCli(args, home)

const machine = () => {
  const home = mkdtempSync(join(tmpdir(), 'dbc-setup-'))
  return { home, identity: loadSoftwareIdentity(join(home, 'identity.key')).identity }
}
const freePort = () => {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = s.port
  s.stop(true)
  return port
}
const listening = (port: number) =>
  Bun.connect({ hostname: '127.0.0.1', port, socket: { data() {}, open: (s) => void s.end() } }).then(
    () => true,
    () => false,
  )
const remembered = (home: string) => JSON.parse(readFileSync(join(home, 'peers.json'), 'utf8'))

describe('cluster setup', () => {
  test('pins the peer and remembers the cluster in address order (0600); a later setup adds a node', async () => {
    const { home } = machine()
    const [bob, carol] = [testIdentity(2), testIdentity(3)]
    const common = ['--node-name', 'me', '--self-ip', '10.0.0.2', '--yes']
    const first = await cli(
      ['cluster', 'setup', '--peer-serial', 'bob', '--peer-ip', '10.0.0.1', '--key', b64(bob.publicKey), ...common],
      home,
    )
    expect(first.code, first.all).toBe(0)
    expect(first.stdout).toContain(`fingerprint  ${fingerprint(bob.publicKey)}`)
    expect(first.stdout).toContain('dbcluster serve --peers   (= --peers 10.0.0.1:47391,10.0.0.2:47391 --rank 1)')
    expect(first.stdout).toContain('on bob, if not done: dbcluster cluster setup --peer-serial me --peer-ip 10.0.0.2')
    expect(statSync(join(home, 'peers.json')).mode & 0o777).toBe(0o600)
    expect(remembered(home)).toEqual({
      nodes: [
        { serial: 'bob', host: '10.0.0.1', port: 47391 },
        { serial: 'me', host: '10.0.0.2', port: 47391 },
      ],
      rank: 1,
    })
    const second = await cli(
      [
        'cluster',
        'setup',
        '--peer-serial',
        'carol',
        '--peer-ip',
        '10.0.0.3',
        '--peer-port',
        '5000',
        '--key',
        b64(carol.publicKey),
        ...common,
      ],
      home,
    )
    expect(second.code, second.all).toBe(0)
    expect(remembered(home).nodes.map((n: { serial: string }) => n.serial)).toEqual(['bob', 'me', 'carol'])
    const pins = JSON.parse((await cli(['trust', 'list', '--json'], home)).stdout)
    expect(pins.map((p: { serial: string }) => p.serial)).toEqual(['bob', 'carol'])
  })

  test('refuses a peer address that is not IPv4, its own serial, and a key it cannot pin — remembering nothing', async () => {
    const { home } = machine()
    const key = b64(testIdentity(2).publicKey)
    const base = ['cluster', 'setup', '--node-name', 'me', '--yes']
    const host = await cli([...base, '--peer-serial', 'bob', '--peer-ip', 'bob.local', '--key', key], home)
    expect(host.code).toBe(2)
    expect(host.stderr).toContain("--peer-ip must be an IPv4 address, got 'bob.local'")
    const self = await cli([...base, '--peer-serial', 'me', '--peer-ip', '10.0.0.1', '--key', key], home)
    expect(self.stderr).toContain("--peer-serial 'me' is this node's own serial")
    const bad = await cli([...base, '--peer-serial', 'bob', '--peer-ip', '10.0.0.1', '--key', 'AAAA'], home)
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('--key is 3 bytes')
    const port = await cli(
      [...base, '--peer-serial', 'bob', '--peer-ip', '10.0.0.1', '--peer-port', '0', '--key', key],
      home,
    )
    expect(port.stderr).toContain('--peer-port')
    expect(() => statSync(join(home, 'peers.json'))).toThrow()
  })

  test('--hostfile: MLX ring’s hostfile and jaccl’s devices for the members remembered, kept where asked', async () => {
    const { home } = machine()
    const none = await cli(['cluster', 'setup', '--hostfile', join(home, 'hosts.json')], home)
    expect(none.code).toBe(2)
    expect(none.stderr).toContain('no cluster is remembered')
    const key = b64(testIdentity(2).publicKey)
    const common = ['--node-name', 'me', '--self-ip', '10.0.0.2', '--yes']
    const hostfile = join(home, 'hosts.json')
    // in the same call as the pin, and alone afterwards with jaccl's devices too
    const first = await cli(
      [
        'cluster',
        'setup',
        '--peer-serial',
        'bob',
        '--peer-ip',
        '10.0.0.1',
        '--key',
        key,
        ...common,
        '--hostfile',
        hostfile,
      ],
      home,
    )
    expect(first.code, first.all).toBe(0)
    expect(first.stdout).toContain(`export MLX_HOSTFILE=${hostfile}`)
    expect(JSON.parse(readFileSync(hostfile, 'utf8'))).toEqual([['10.0.0.1:47100'], ['10.0.0.2:47100']])
    const devices = join(home, 'devices.json')
    const flags = ['--hostfile', hostfile, '--mlx-port', '5100', '--devices-file', devices]
    const short = await cli(['cluster', 'setup', ...flags, '--rdma-devices', 'rdma_en5'], home)
    expect(short.code).toBe(2)
    expect(short.stderr).toContain('one name per node (2, in rank order: bob, me)')
    const both = await cli(['cluster', 'setup', ...flags, '--rdma-devices', 'rdma_en5,rdma_en3'], home)
    expect(both.code, both.all).toBe(0)
    expect(JSON.parse(readFileSync(hostfile, 'utf8'))).toEqual([['10.0.0.1:5100'], ['10.0.0.2:5100']])
    expect(JSON.parse(readFileSync(devices, 'utf8'))).toEqual([
      [null, 'rdma_en5'],
      ['rdma_en3', null],
    ])
    expect(both.stdout).toContain(`export MLX_IBV_DEVICES=${devices}`)
    expect(both.stdout).toContain('export MLX_JACCL_COORDINATOR=10.0.0.1:5100')
    const neither = await cli(['cluster', 'setup', '--peer-serial', 'bob'], home)
    expect(neither.code).toBe(2)
    expect(neither.stderr).toContain('give --peer-serial and --peer-ip')
  })

  test('serve --peers without a list and nothing remembered is refused, saying how', async () => {
    const { home } = machine()
    const r = await cli(['serve', '--peers='], home)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('--peers has no list, and no cluster is remembered')
    expect(r.stderr).toContain("run 'dbcluster cluster setup' first")
  })

  test('two seeds: setup (--key, then --from-peer), serve --peers= and plain serve form one cluster', async () => {
    const model = await synthModel('qwen3', 'bf16')
    const [a, b] = [machine(), machine()]
    const [portA, portB] = [freePort(), freePort()].sort((x, y) => x - y) as [number, number] // same address: the lower port is rank 0
    // A pins B from the key B's operator read out (identity show), and serves as the head
    const setupA = await cli(
      [
        'cluster',
        'setup',
        '--peer-serial',
        'seed-b',
        '--peer-ip',
        '127.0.0.1',
        '--peer-port',
        String(portB),
        '--link-port',
        String(portA),
        '--self-ip',
        '127.0.0.1',
        '--node-name',
        'seed-a',
        '--key',
        b64(b.identity.publicKey),
        '--yes',
      ],
      a.home,
    )
    expect(setupA.code, setupA.all).toBe(0)
    const common = ['--backend', 'cpu', '--threads', '1', '--max-context', '128', '--max-batch', '1']
    const head = spawnServeNode(a.home, [
      '--peers=',
      '--node-name',
      'seed-a',
      '--model',
      model,
      '--port',
      '0',
      ...common,
    ])
    await until('the head to take the remembered cluster', () => /--rank 0\n/.test(head.output()), head.output)
    expect(head.output()).toContain(`--peers 127.0.0.1:${portA},127.0.0.1:${portB} --rank 0`)
    for (const deadline = Date.now() + 60_000; !(await listening(portA)); await Bun.sleep(100))
      if (Date.now() > deadline) throw new Error(`the head never listened on ${portA}: ${head.output()}`)

    // B reads A's key from A's link port: A answers because it already pinned B
    const setupB = await cli(
      [
        'cluster',
        'setup',
        '--peer-serial',
        'seed-a',
        '--peer-ip',
        '127.0.0.1',
        '--peer-port',
        String(portA),
        '--link-port',
        String(portB),
        '--self-ip',
        '127.0.0.1',
        '--node-name',
        'seed-b',
        '--from-peer',
        '--yes',
      ],
      b.home,
    )
    expect(setupB.code, setupB.all).toBe(0)
    expect(setupB.all).toContain(`127.0.0.1:${portA} proved it holds this key`)
    expect(setupB.stdout).toContain(`fingerprint  ${fingerprint(a.identity.publicKey)}`)
    expect(remembered(b.home).rank).toBe(1)

    // plain serve on B: the remembered cluster, rank 1
    const stage = spawnServeNode(b.home, ['--node-name', 'seed-b', ...common])
    await until('B to take the remembered cluster', () => /--rank 1; to serve alone/.test(stage.output()), stage.output)
    await until(
      'the head to serve',
      () => /listening on http/.test(head.output()),
      () => head.output() + stage.output(),
    )
    const url = /listening on (http:\/\/\S+)/.exec(head.output())![1]!
    const health = await (await fetch(`${url}/health`)).json()
    expect(health.nodes).toBe(2)
    // each side's pin of the other was stamped by the handshakes that formed the ring
    for (const [home, serial] of [
      [a.home, 'seed-b'],
      [b.home, 'seed-a'],
    ] as const) {
      const [pin] = JSON.parse((await cli(['trust', 'list', '--json'], home)).stdout)
      expect(pin).toMatchObject({ serial, source: 'manual' })
      expect(pin.last_seen_at).not.toBeNull()
    }
  }, 180_000)
})

/** A serve process whose output (info lines included) is gathered as it comes. */
function spawnServeNode(home: string, args: string[]): { output(): string } {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'serve', ...args], {
    cwd: ROOT,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NODE_ENV: 'production', DBCLUSTER_HOME: home, DBCLUSTER_PIN_STORE: 'file', NO_COLOR: '1' },
  })
  nodes.push(proc)
  let text = ''
  for (const stream of [proc.stdout, proc.stderr])
    void (async () => {
      const reader = stream.getReader()
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value)
    })()
  return { output: () => text }
}

async function until(what: string, check: () => boolean, detail: () => string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${detail()}`)
    await Bun.sleep(100)
  }
}
