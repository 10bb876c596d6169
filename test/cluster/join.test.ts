/** Joining a cluster: the role/join/plan messages (round trips and refusals), and real processes on loopback — a stage
 * started without the model receives exactly the files of its layers from the head and the cluster answers like one
 * process; `serve --plan` prints a memory-weighted plan without loading; a plan that cannot fit stops head and stages
 * with the node that is short named. */
import { afterAll, describe, expect, test } from 'bun:test'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import OpenAI from 'openai'
import {
  decodeJoin,
  decodePlan,
  decodeRole,
  encodeJoin,
  encodePlan,
  encodeRole,
} from '../../src/cluster/join-messages.ts'
import { prepareLocalNodes, startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { filesForStage, manifestFor } from '../../src/distribution/manifest.ts'
import { serveFakeHub } from '../support/hub-server.ts'
import { synthModel } from '../support/synth-models.ts'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'

const ROOT = new URL('../..', import.meta.url).pathname
const SELF = [process.execPath, `${ROOT}src/main.ts`]
const clusters: LocalCluster[] = []
afterAll(async () => {
  for (const c of clusters) await c.stop()
})

describe('join messages', () => {
  test('round trips', () => {
    expect(decodeRole(encodeRole({ role: 'control', rank: 3 }))).toEqual({ role: 'control', rank: 3 })
    const join = {
      rank: 2,
      usableBytes: 48 * 1024 ** 3,
      loaded: { lo: 10, hi: 20 },
      backend: 'cpu',
      osVersion: 'macOS 26.2',
      chip: 'Apple M4 Max',
      clockMs: 1.795e12,
      freeBytes: 40 * 1024 ** 3,
      attestation: '{"body":{},"signature":""}',
    }
    expect(decodeJoin(encodeJoin(join))).toEqual(join)
    expect(decodeJoin(encodeJoin({ ...join, loaded: null })).loaded).toBeNull()
    const plan = {
      ok: true as const,
      lo: 18,
      hi: 28,
      numLayers: 28,
      nodes: 2,
      slots: 8,
      maxLen: 4096,
      model: 'Qwen3-8B-4bit',
      roster: '{"body":{},"signature":""}',
    }
    expect(decodePlan(encodePlan(plan))).toEqual(plan)
    expect(decodePlan(encodePlan({ ok: false, code: 'E_PLAN_FIT', message: 'node-1 is short by 2.00 GiB' }))).toEqual({
      ok: false,
      code: 'E_PLAN_FIT',
      message: 'node-1 is short by 2.00 GiB',
    })
  })

  test('malformed messages are refused with the reason', () => {
    const role = encodeRole({ role: 'ring', rank: 1 })
    expect(() => decodeRole(role.subarray(0, 6))).toThrow(/role message truncated/)
    expect(() => decodeRole(Uint8Array.from([...role, 0]))).toThrow(/1 trailing bytes/)
    expect(() => decodeRole(Uint8Array.of(9, 0, 0, 0, 1, 0, 0, 0))).toThrow(/unknown role 9/)
    const facts = { osVersion: 'Debian 12', chip: 'x86', clockMs: 1, freeBytes: 1, attestation: '' }
    const join = encodeJoin({ rank: 1, usableBytes: 1024, loaded: null, backend: 'cpu', ...facts })
    expect(() => decodeJoin(join.subarray(0, join.byteLength - 1))).toThrow(/join message truncated/)
    expect(() => decodeJoin(encodeJoin({ rank: 1, usableBytes: 0, loaded: null, backend: 'cpu', ...facts }))).toThrow(
      /0 usable bytes/,
    )
    expect(() =>
      decodeJoin(encodeJoin({ rank: 1, usableBytes: 1, loaded: { lo: 5, hi: 5 }, backend: 'cpu', ...facts })),
    ).toThrow(/bad loaded range/)
    expect(() =>
      decodeJoin(encodeJoin({ rank: 1, usableBytes: 1, loaded: null, backend: 'cpu', ...facts, freeBytes: -1 })),
    ).toThrow(/bad clock or free memory/)
    const plan = encodePlan({
      ok: true,
      lo: 0,
      hi: 4,
      numLayers: 8,
      nodes: 2,
      slots: 1,
      maxLen: 64,
      model: 'm',
      roster: '',
    })
    expect(() => decodePlan(plan.subarray(0, 10))).toThrow(/plan message truncated/)
    expect(() =>
      decodePlan(
        encodePlan({ ok: true, lo: 4, hi: 9, numLayers: 8, nodes: 2, slots: 1, maxLen: 64, model: 'm', roster: '' }),
      ),
    ).toThrow(/inconsistent: layers \[4, 9\) of 8/)
    const badStatus = encodePlan({ ok: false, code: 'E', message: 'm' })
    badStatus[0] = 7
    expect(() => decodePlan(badStatus)).toThrow(/status 7/)
  })
})

describe('joining across processes', () => {
  test('a stage without the model receives only its layers’ files, verified, and the cluster answers like one process', async () => {
    // 6 layers in small safetensors files, so a stage's range maps to a strict subset of them
    const model = await synthModel('qwen3', 'bf16', { layers: 6, shardBytes: 96 * 1024 })
    const stageLines: string[] = []
    const c = await startLocalCluster({
      nodes: 2,
      model,
      apiPort: 0,
      self: SELF,
      modelOnStages: false,
      onLine: (rank, line) => rank === 1 && stageLines.push(line),
      env: { NODE_ENV: 'production' }, // info lines (consola is quiet under bun test)
      extraArgs: ['--backend', 'cpu', '--threads', '1', '--max-context', '128', '--max-batch', '2', '--model-id', 'x'],
    })
    clusters.push(c)
    const received = join(c.homes[1]!, 'models', 'received', model.split('/').at(-1)!)
    const manifest = manifestFor(model)
    const health = await (await fetch(`${c.url}/health`)).json()
    const [, headHi] = health.head_layers as [number, number]
    const wanted = filesForStage(manifest, { lo: headHi, hi: 6, first: false, last: true }).map((f) => f.name)
    const all = manifest.files.filter((f) => f.name.endsWith('.safetensors')).map((f) => f.name)
    const have = readdirSync(received).filter((n) => !n.startsWith('.'))
    expect(have.sort()).toEqual(wanted.sort())
    // only the stage's weight files came over, not every one
    expect(have.filter((n) => n.endsWith('.safetensors')).length).toBeLessThan(all.length)
    expect(have).toContain('config.json')
    expect(have).toContain('tokenizer.json')

    // cluster status: every member with its range, memory and a live control link
    const members = health.members as {
      rank: number
      serial: string
      layers: number[]
      usable_bytes: number
      headroom_bytes: number
      link: { up: boolean } | null
    }[]
    expect(members.map((m) => [m.rank, m.serial, m.layers])).toEqual([
      [0, 'node-0', [0, headHi]],
      [1, 'node-1', [headHi, 6]],
    ])
    expect(members[0]!.link).toBeNull()
    expect(members[1]!.link!.up).toBe(true)
    const trust = members.map((m) => m as unknown as { trust: string; fingerprint: string })
    expect(trust.map((m) => m.trust)).toEqual(['self', 'pinned'])
    expect(trust.every((m) => m.fingerprint.length >= 16)).toBe(true)
    expect(members.every((m) => m.usable_bytes > 0 && m.headroom_bytes > 0)).toBe(true)
    const status = Bun.spawnSync([...SELF, 'cluster', 'status', '--url', c.url], {
      stdout: 'pipe',
      env: { ...process.env, NODE_ENV: 'production' },
    })
    expect(status.stdout.toString()).toMatch(
      new RegExp(`\\| 1 \\| node-1 \\| \\[${headHi}, 6\\) \\| [\\d.]+ GiB \\| .* \\| up \\|`),
    )

    // doctor across the nodes: same OS, clocks together, memory enough for the plan (one machine here)
    const doctor = Bun.spawnSync([...SELF, 'doctor', '--cluster', c.url, '--json'], { stdout: 'pipe' })
    const checks = JSON.parse(doctor.stdout.toString()) as { name: string; status: string }[]
    for (const name of ['OS versions across nodes', 'clocks across nodes', 'memory against the plan'])
      expect(checks.find((x) => x.name === name)?.status).toBe('PASS')

    const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 30_000 })
    const r = await client.completions.create({ model: 'x', prompt: 'Hello, world', max_tokens: 6, temperature: 0 })
    const alone = Bun.spawnSync(
      [
        ...SELF,
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
      { stdout: 'pipe' },
    )
    expect(r.choices[0]!.text).toBe(JSON.parse(alone.stdout.toString()).text)

    // the stage restarts: everything is there and verified, nothing moves; the cluster serves again
    expect(stageLines.join('\n')).toMatch(/received \d+ file\(s\)/)
    stageLines.length = 0
    await c.kill(1)
    await c.restart(1)
    expect(stageLines.join('\n')).toMatch(/every file was here already, verified by its hash/)
    for (let i = 0; i < 100 && (await fetch(`${c.url}/health`)).status !== 200; i++) await Bun.sleep(100)
    const again = await client.completions.create({ model: 'x', prompt: 'Hello, world', max_tokens: 6, temperature: 0 })
    expect(again.choices[0]!.text).toBe(r.choices[0]!.text)
  }, 120_000)

  /** Spawns `serve` for every rank of a fresh local cluster with per-rank arguments; resolves with each one's output. */
  async function runNodes(model: string, perRank: string[][]): Promise<{ code: number; out: string }[]> {
    const { homes, peers } = prepareLocalNodes(perRank.length)
    const procs = perRank.map((args, rank) =>
      Bun.spawn(
        [
          ...SELF,
          'serve',
          ...(rank === 0 ? ['--model', model, '--port', '0'] : []),
          '--peers',
          peers,
          '--rank',
          String(rank),
          '--node-name',
          `node-${rank}`,
          '--backend',
          'cpu',
          ...args,
        ],
        {
          stdout: 'pipe',
          stderr: 'pipe',
          env: { ...process.env, DBCLUSTER_HOME: homes[rank]!, NODE_ENV: 'production' },
        },
      ),
    )
    const timer = setTimeout(() => procs.forEach((p) => p.kill()), 60_000)
    // a stage outlives a head that only planned (it waits for the real one): stop it once it has had time to hear
    void procs[0]!.exited.then(() => setTimeout(() => procs.slice(1).forEach((p) => p.kill()), 3000))
    try {
      return await Promise.all(
        procs.map(async (p) => ({
          code: await p.exited,
          out: (await new Response(p.stdout).text()) + (await new Response(p.stderr).text()),
        })),
      )
    } finally {
      clearTimeout(timer)
    }
  }

  test('serve --plan: the head gathers every node’s memory and prints a memory-weighted plan without loading', async () => {
    const model = await synthModel('qwen3', 'bf16', { layers: 6 })
    const [head, stage] = await runNodes(model, [
      ['--plan', '--memory', '3G', '--max-context', '64'],
      ['--memory', '1G', '--max-context', '64'],
    ])
    expect(head!.code).toBe(0)
    // 3:1 memory → the head holds most layers; every line has weights, KV and headroom
    expect(head!.out).toMatch(
      /rank 0 node-0: layers \[0, 5\) \(5\), weights .* GiB, KV for \d+ tokens .* GiB, usable 3\.00 GiB, headroom/,
    )
    expect(head!.out).toMatch(/rank 1 node-1: layers \[5, 6\) \(1\)/)
    expect(head!.out).not.toMatch(/serving|listening on/)
    // the stage was told the head only printed the plan; it waits for a real head (killed here by the timer) or exits 0
    expect(stage!.out).toMatch(/printed the plan/)
    expect(stage!.out).not.toMatch(/stage 1 ready/)
  }, 90_000)

  test('a plan that cannot fit stops the head and the stages, naming the node that is short', async () => {
    const model = await synthModel('qwen3', 'bf16', { layers: 4 })
    const [head, stage] = await runNodes(model, [
      ['--memory', '4G'],
      ['--memory', '1K'],
    ])
    expect(head!.code).not.toBe(0)
    expect(head!.out).toMatch(/does not fit: node-1 is short by/)
    expect(stage!.code).not.toBe(0)
    expect(stage!.out).toMatch(/the head refused this node: the plan does not fit: node-1 is short by/)
  }, 90_000)

  test('serve --model ORG/NAME on the head is enough: the head pulls it once from the hub, the stage gets its layers from the head', async () => {
    const model = await synthModel('qwen3', 'bf16')
    const hub = serveFakeHub(model, 'acme/tiny-qwen3')
    const cache = mkdtempSync(join(tmpdir(), 'dbc-hub-cache-'))
    try {
      const c = await startLocalCluster({
        nodes: 2,
        model: 'acme/tiny-qwen3',
        apiPort: 0,
        self: SELF,
        modelOnStages: false,
        env: { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache },
        extraArgs: [
          '--backend',
          'cpu',
          '--threads',
          '1',
          '--max-context',
          '128',
          '--max-batch',
          '1',
          '--model-id',
          'x',
        ],
      })
      clusters.push(c)
      // the hub saw one download of the weights (the head's), and the stage's files sit under the repository's name
      expect(hub.requests.filter((r) => r.method === 'GET' && r.path.endsWith('model.safetensors')).length).toBe(1)
      expect(readdirSync(join(c.homes[1]!, 'models', 'received', 'acme--tiny-qwen3'))).toContain('model.safetensors')
      const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 30_000 })
      const r = await client.completions.create({ model: 'x', prompt: 'Hello, world', max_tokens: 4, temperature: 0 })
      const alone = Bun.spawnSync(
        [
          ...SELF,
          'generate',
          '--model',
          model,
          '--prompt',
          'Hello, world',
          '--max-tokens',
          '4',
          '--json',
          '--backend',
          'cpu',
        ],
        { stdout: 'pipe' },
      )
      expect(r.choices[0]!.text).toBe(JSON.parse(alone.stdout.toString()).text)
    } finally {
      hub.stop()
    }
  }, 120_000)

  test('usage errors: --coordinator alone or without a token, --peers with --discover, a bad --memory', async () => {
    const model = await synthModel('qwen3', 'bf16')
    const run = async (args: string[]) => {
      const p = Bun.spawn([...SELF, 'serve', '--model', model, '--port', '0', ...args], {
        stdout: 'pipe',
        stderr: 'pipe',
        env: { ...process.env, DBCLUSTER_COORDINATOR_TOKEN: '' },
      })
      return { code: await p.exited, err: await new Response(p.stderr).text() }
    }
    const alone = await run(['--coordinator', 'http://127.0.0.1:1', '--coordinator-token', 't'])
    expect(alone.code).toBe(2)
    expect(alone.err).toContain('--coordinator is for cluster nodes')
    const noToken = await run(['--peers', '127.0.0.1:1,127.0.0.1:2', '--coordinator', 'http://127.0.0.1:1'])
    expect(noToken.code).toBe(2)
    expect(noToken.err).toContain('--coordinator needs --coordinator-token')
    const both = await run(['--peers', '127.0.0.1:1,127.0.0.1:2', '--discover'])
    expect(both.code).toBe(2)
    expect(both.err).toContain('either --peers (static membership) or --discover')
    const memory = await run(['--memory', 'lots', '--plan'])
    expect(memory.code).toBe(2)
    expect(memory.err).toContain("--memory must be a size like 12G, 512M or a byte count, got 'lots'")
  }, 60_000)
})
