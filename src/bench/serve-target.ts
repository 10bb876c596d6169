/** What a serving benchmark talks to: one `dbcluster serve` process, or a cluster of N nodes on this machine (each its
 * own process over sealed loopback links), or a URL someone else started. */
import type { Subprocess } from 'bun'
import { startLocalCluster, waitUntilServing } from '../cluster/local-cluster.ts'
import { selfCommand } from '../self-command.ts'
import { coresFor, pinToCores, processesWithOptions } from './pin-cores.ts'

export interface ServeTarget {
  url: string
  label: string
  stop(): Promise<void>
}

export interface TargetOptions {
  model: string
  /** 1 = a single process; N ≥ 2 = a local cluster of N nodes. */
  nodes: number
  /** CPU threads per process. */
  threads: number
  maxBatch: number
  backend?: string
  extraArgs?: string[]
  /** How a cluster splits the model (default pipeline). */
  parallel?: 'pipeline' | 'tensor'
  /** Pin each process to `threads` cores of its own (Linux, taskset; check pinningUnavailable first). */
  pinCores?: boolean
}

export async function startServeTarget(o: TargetOptions): Promise<ServeTarget> {
  const args = [
    '--backend',
    o.backend ?? 'cpu',
    '--threads',
    String(o.threads),
    '--max-batch',
    String(o.maxBatch),
    '--max-queue',
    '1024',
    '--model-id',
    'bench',
    ...(o.extraArgs ?? []),
  ]
  const threads = `${o.threads} thread${o.threads > 1 ? 's' : ''}`
  const pinned = o.pinCores ? `, pinned to ${o.threads > 1 ? `${o.threads} cores` : 'one core'}` : ''
  const tensor = o.parallel === 'tensor'
  const label =
    o.nodes === 1
      ? `1 process, ${threads}${pinned}`
      : `${o.nodes} nodes${tensor ? ' (tensor parallel)' : ''}, ${threads}${pinned} each`
  if (o.nodes >= 2) {
    const cluster = await startLocalCluster({
      nodes: o.nodes,
      model: o.model,
      apiPort: 0,
      self: selfCommand(),
      extraArgs: args,
      parallel: o.parallel,
    })
    try {
      if (o.pinCores) {
        // the launcher does not hand out its children's ids; each node is the one process with its --peers and --rank
        // (tensor parallel: its --tp-peer and --tp-rank)
        const peers = cluster.ports.map((p) => `127.0.0.1:${p}`).join(',')
        for (let rank = 0; rank < o.nodes; rank++) {
          const pids = processesWithOptions(
            tensor
              ? { '--tp-peer': `127.0.0.1:${cluster.ports[0]}`, '--tp-rank': String(rank) }
              : { '--peers': peers, '--rank': String(rank) },
          )
          if (pids.length !== 1)
            throw new Error(`found ${pids.length} processes for node ${rank} of the cluster, expected 1`)
          await pinToCores(pids[0]!, coresFor(rank, o.threads))
        }
      }
    } catch (error) {
      await cluster.stop()
      throw error
    }
    return { url: cluster.url, label, stop: () => cluster.stop() }
  }
  const proc: Subprocess<'ignore', 'pipe', 'pipe'> = Bun.spawn(
    [...selfCommand(), 'serve', '--model', o.model, '--port', '0', ...args],
    { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' },
  )
  const reader = proc.stdout.getReader()
  let text = ''
  let url: string | null = null
  while (!url) {
    const { value, done } = await reader.read()
    if (done)
      throw new Error(
        `dbcluster serve exited before listening: ${text.slice(-400)} ${await new Response(proc.stderr).text()}`,
      )
    text += new TextDecoder().decode(value)
    url = /listening on (\S+)\n/.exec(text)?.[1] ?? null
  }
  reader.releaseLock()
  void proc.stdout.pipeTo(new WritableStream()).catch(() => {})
  void proc.stderr.pipeTo(new WritableStream()).catch(() => {})
  try {
    if (o.pinCores) await pinToCores(proc.pid, coresFor(0, o.threads))
    await waitUntilServing(url)
  } catch (error) {
    proc.kill('SIGTERM')
    await proc.exited
    throw error
  }
  return {
    url,
    label,
    async stop() {
      proc.kill('SIGTERM')
      await proc.exited
    },
  }
}
