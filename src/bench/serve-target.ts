/** What a serving benchmark talks to: one `dbcluster serve` process, or a cluster of N nodes on this machine (each its
 * own process over sealed loopback links), or a URL someone else started. */
import type { Subprocess } from 'bun'
import { startLocalCluster, waitUntilServing } from '../cluster/local-cluster.ts'
import { selfCommand } from '../self-command.ts'

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
}

export async function startServeTarget(o: TargetOptions): Promise<ServeTarget> {
  const args = ['--backend', o.backend ?? 'cpu', '--threads', String(o.threads), '--max-batch', String(o.maxBatch), '--max-queue', '1024', '--model-id', 'bench', ...(o.extraArgs ?? [])]
  const label = o.nodes === 1 ? `1 process, ${o.threads} thread${o.threads > 1 ? 's' : ''}` : `${o.nodes} nodes, ${o.threads} thread${o.threads > 1 ? 's' : ''} each`
  if (o.nodes >= 2) {
    const cluster = await startLocalCluster({ nodes: o.nodes, model: o.model, apiPort: 0, self: selfCommand(), extraArgs: args })
    return { url: cluster.url, label, stop: () => cluster.stop() }
  }
  const proc: Subprocess<'ignore', 'pipe', 'pipe'> = Bun.spawn([...selfCommand(), 'serve', '--model', o.model, '--port', '0', ...args], { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const reader = proc.stdout.getReader()
  let text = ''
  let url: string | null = null
  while (!url) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`dbcluster serve exited before listening: ${text.slice(-400)} ${await new Response(proc.stderr).text()}`)
    text += new TextDecoder().decode(value)
    url = /listening on (\S+)/.exec(text)?.[1] ?? null
  }
  reader.releaseLock()
  void proc.stdout.pipeTo(new WritableStream()).catch(() => {})
  void proc.stderr.pipeTo(new WritableStream()).catch(() => {})
  await waitUntilServing(url)
  return {
    url,
    label,
    async stop() {
      proc.kill('SIGTERM')
      await proc.exited
    },
  }
}
