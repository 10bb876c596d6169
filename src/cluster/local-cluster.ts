/** N nodes of one cluster on this machine over loopback (`dbcluster cluster local`, tests, benchmarks): each node gets
 * its own state folder and identity key, every node pins every other node's key (this launcher is the one vouching,
 * as a coordinator would), and each runs as its own `dbcluster serve --peers … --rank r` process — or, with
 * `parallel: 'tensor'`, `dbcluster serve --tp N --tp-rank r` over sealed sockets (every node holds a slice of every layer). */
import type { Subprocess } from 'bun'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadSoftwareIdentity } from '../trust/identity-software.ts'
import { FilePinStore } from '../trust/pinned-keys.ts'

export interface LocalClusterOptions {
  nodes: number
  model: string
  apiPort: number
  /** How to start this program: [bun, src/main.ts] from source, [binary] when compiled. */
  self: string[]
  stateDir?: string
  extraArgs?: string[]
  /** false: only the head gets --model; the stages receive their layers' files from it (model distribution). */
  modelOnStages?: boolean
  /** false: the nodes do not pin each other's keys (they get them another way, e.g. a coordinator). */
  pinEachOther?: boolean
  /** Arguments for one node only (e.g. its --memory). */
  rankArgs?: (rank: number) => string[]
  /** Per-node environment additions (e.g. threads). */
  env?: Record<string, string>
  onLine?: (rank: number, line: string) => void
  /** pipeline (default): layers split across the nodes; tensor: every layer split across them (sealed tensor parallel). */
  parallel?: 'pipeline' | 'tensor'
}

export interface LocalCluster {
  url: string
  ranks: number
  ports: number[]
  /** Each node's state folder (DBCLUSTER_HOME), by rank. */
  homes: string[]
  /** Stops one node (SIGKILL = a crash). */
  kill(rank: number, signal?: NodeJS.Signals): Promise<void>
  /** Sends a node a signal and returns at once (SIGSTOP / SIGCONT freeze and thaw it). */
  signal(rank: number, signal: NodeJS.Signals): void
  /** Starts a stopped node again with the same identity and address. */
  restart(rank: number): Promise<void>
  /** The node's exit code once its process (the one running now) has exited; null for a node not running. */
  exited(rank: number): Promise<number | null>
  stop(): Promise<void>
}

function freePort(): number {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = s.port
  s.stop(true)
  return port
}

/** Reads a node's stderr as it comes (a pipe nobody reads would fill and stall the node), each line to `onLine`; the
 * returned function gives the last few KiB, for the error when the node fails to start. */
function drainStderr(proc: Subprocess<'ignore', 'pipe', 'pipe'>, onLine: (l: string) => void): () => string {
  let tail = ''
  void (async () => {
    const reader = proc.stderr.getReader()
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }))
      if (done) break
      const text = new TextDecoder().decode(value)
      tail = (tail + text).slice(-4096)
      for (const line of text.split('\n').filter(Boolean)) onLine(line)
    }
  })()
  return () => tail
}

async function waitForLine(
  proc: Subprocess<'ignore', 'pipe', 'pipe'>,
  pattern: RegExp,
  onLine: (l: string) => void,
  stderrTail: () => string,
  timeoutMs = 120_000,
): Promise<RegExpExecArray> {
  const reader = proc.stdout.getReader()
  let text = ''
  const deadline = Date.now() + timeoutMs
  try {
    while (Date.now() < deadline) {
      const { value, done } = await reader.read()
      if (done) {
        await proc.exited
        throw new Error(`node exited before printing ${pattern}: ${text.slice(-500)} ${stderrTail()}`)
      }
      const chunk = new TextDecoder().decode(value)
      text += chunk
      for (const line of chunk.split('\n').filter(Boolean)) onLine(line)
      const m = pattern.exec(text)
      if (m) return m
    }
    throw new Error(`node did not print ${pattern} in time`)
  } finally {
    reader.releaseLock()
    // keep draining so the pipe never fills
    void (async () => {
      const r = proc.stdout.getReader()
      for (;;) {
        const { value, done } = await r.read().catch(() => ({ value: undefined, done: true }))
        if (done) break
        for (const line of new TextDecoder().decode(value).split('\n').filter(Boolean)) onLine(line)
      }
    })()
  }
}

/** The head listens before the ring has formed; wait until /health says ok (every hop connected and sealed). */
export async function waitUntilServing(url: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const r = await fetch(`${url}/health`).catch(() => null)
    if (r?.status === 200) return
    await Bun.sleep(100)
  }
  throw new Error(`the cluster at ${url} did not form within ${timeoutMs / 1000} s`)
}

/** State folders, identities and pins for N nodes on this machine: node r is `node-r`, with its own DBCLUSTER_HOME and
 * a free link port, and pins every node's key (this launcher vouches for them, as a coordinator would). */
export function prepareLocalNodes(
  nodes: number,
  stateDir?: string,
  pinEachOther = true,
): { root: string; ports: number[]; homes: string[]; peers: string } {
  const root = stateDir ?? mkdtempSync(join(tmpdir(), 'dbc-cluster-'))
  const ports = Array.from({ length: nodes }, freePort)
  const homes = ports.map((_, rank) => join(root, `node-${rank}`))
  const keys = homes.map((home) => {
    mkdirSync(home, { recursive: true })
    return loadSoftwareIdentity(join(home, 'identity.key')).identity
  })
  if (pinEachOther)
    homes.forEach((home) => {
      const pins = new FilePinStore(join(home, 'pins.json'))
      keys.forEach((k, r) =>
        pins.set(`node-${r}`, {
          publicKey: Buffer.from(k.publicKey).toString('base64'),
          keyKind: k.kind,
          source: 'local-cluster',
          pinnedAt: Date.now(),
        }),
      )
    })
  return { root, ports, homes, peers: ports.map((p) => `127.0.0.1:${p}`).join(',') }
}

export async function startLocalCluster(options: LocalClusterOptions): Promise<LocalCluster> {
  const { root, ports, homes, peers } = prepareLocalNodes(options.nodes, options.stateDir, options.pinEachOther ?? true)
  const procs: (Subprocess<'ignore', 'pipe', 'pipe'> | null)[] = ports.map(() => null)
  const onLine = options.onLine ?? (() => {})
  const tensor = options.parallel === 'tensor'
  if (tensor && options.modelOnStages === false)
    throw new Error('tensor parallel ranks each load their slices from --model: modelOnStages must stay true')

  // port 0 lets the head pick one; a restarted head takes the one it had, so the cluster's URL stays
  let apiPort = options.apiPort
  const spawn = async (rank: number) => {
    const model = rank === 0 || options.modelOnStages !== false ? ['--model', options.model] : []
    const group = tensor
      ? [
          '--tp',
          String(options.nodes),
          '--tp-rank',
          String(rank),
          '--tp-transport',
          'sealed',
          '--tp-listen',
          `127.0.0.1:${ports[0]}`,
          '--tp-peer',
          `127.0.0.1:${ports[0]}`,
        ]
      : ['--peers', peers, '--rank', String(rank)]
    const args = [
      ...options.self,
      'serve',
      ...model,
      ...group,
      '--node-name',
      `node-${rank}`,
      ...(options.extraArgs ?? []),
      ...(options.rankArgs?.(rank) ?? []),
    ]
    if (rank === 0) args.push('--port', String(apiPort))
    const proc = Bun.spawn(args, {
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, ...options.env, DBCLUSTER_HOME: homes[rank]! },
    })
    procs[rank] = proc
    const stderrTail = drainStderr(proc, (l) => onLine(rank, l))
    return waitForLine(
      proc,
      rank === 0 ? /listening on (\S+)\n/ : tensor ? /tensor-parallel rank \d+ ready/ : /stage \d+ ready/,
      (l) => onLine(rank, l),
      stderrTail,
    )
  }

  // all at once: the stages join the head, which plans and then serves once the ring forms
  const stages = Array.from({ length: options.nodes - 1 }, (_, i) => spawn(options.nodes - 1 - i))
  const headLine = spawn(0)
  let head: RegExpExecArray
  try {
    ;[head] = await Promise.all([headLine, ...stages])
    await waitUntilServing(head[1]!)
  } catch (error) {
    // a node that failed to start must not leave the others running
    for (const p of procs) p?.kill('SIGKILL')
    await Promise.all(procs.map((p) => p?.exited))
    throw error
  }
  apiPort = Number(new URL(head[1]!).port)
  return {
    url: head[1]!,
    ranks: options.nodes,
    ports,
    homes,
    async kill(rank, signal = 'SIGKILL') {
      const p = procs[rank]
      if (!p) return
      p.kill(signal)
      await p.exited
      procs[rank] = null
    },
    signal(rank, signal) {
      procs[rank]?.kill(signal)
    },
    async restart(rank) {
      await spawn(rank)
      if (rank === 0) await waitUntilServing(head[1]!)
    },
    exited: async (rank) => (await procs[rank]?.exited) ?? null,
    async stop() {
      for (const p of procs) p?.kill('SIGTERM')
      await Promise.all(procs.map((p) => p?.exited))
      // the state folders this launcher made (keys, pins, received files) go with it; a given --state-dir stays
      if (!options.stateDir) rmSync(root, { recursive: true, force: true })
    },
  }
}
