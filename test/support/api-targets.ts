/** The three ways `serve` answers the API, for tests that must behave the same on each: one node, a 2-node pipeline,
 * and a 2-rank sealed tensor-parallel group (real processes on loopback). */
import { startLocalCluster } from '../../src/cluster/local-cluster.ts'
import { startServe } from './serve-process.ts'

const ROOT = new URL('../..', import.meta.url).pathname

export const API_TARGETS = [
  { name: 'one node', nodes: 1, parallel: 'pipeline' },
  { name: '2-node pipeline', nodes: 2, parallel: 'pipeline' },
  { name: '2-node tensor-parallel cluster', nodes: 2, parallel: 'tensor' },
] as const

export type ApiTarget = (typeof API_TARGETS)[number]

/** Starts the target serving `modelDir` on the cpu backend with `serveArgs`; stop() ends every process. */
export async function startApiTarget(
  target: ApiTarget,
  modelDir: string,
  serveArgs: readonly string[],
): Promise<{ url: string; stop(): Promise<void> | void }> {
  if (target.nodes === 1) return startServe(['--model', modelDir, ...serveArgs])
  return startLocalCluster({
    nodes: target.nodes,
    parallel: target.parallel,
    model: modelDir,
    apiPort: 0,
    self: [process.execPath, `${ROOT}src/main.ts`],
    extraArgs: ['--backend', 'cpu', '--threads', '1', ...serveArgs],
  })
}
