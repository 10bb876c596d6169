/** A `dbcluster serve` process with its own state folder, whose stdout and stderr are gathered into one text as they
 * come (for tests that wait on what a node logs). The caller stops it: `stopNodes` kills every one started here. */
import type { Subprocess } from 'bun'

const ROOT = new URL('../..', import.meta.url).pathname
const started: Subprocess[] = []

export interface ServeNode {
  proc: Subprocess
  /** Everything printed so far, stdout and stderr. */
  output(): string
}

export function spawnServeNode(home: string, args: string[]): ServeNode {
  const proc = Bun.spawn([process.execPath, `${ROOT}src/main.ts`, 'serve', ...args], {
    cwd: ROOT,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NO_COLOR: '1', DBCLUSTER_HOME: home },
  })
  started.push(proc)
  let text = ''
  for (const stream of [proc.stdout, proc.stderr] as ReadableStream<Uint8Array>[])
    void (async () => {
      const reader = stream.getReader()
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value)
    })()
  return { proc, output: () => text }
}

export async function stopNodes(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const all = started.splice(0)
  for (const p of all) p.kill(signal)
  await Promise.all(all.map((p) => p.exited))
}
