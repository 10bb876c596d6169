/** Starts a real `dbcluster serve` process on a free port for API tests and stops it afterwards. */
import type { Subprocess } from 'bun'

const ROOT = new URL('../..', import.meta.url).pathname

export interface ServeProcess {
  url: string
  proc: Subprocess
  stop(): Promise<void>
}

export async function startServe(args: string[], env: Record<string, string> = {}): Promise<ServeProcess> {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', 'serve', '--port', '0', '--backend', 'cpu', ...args], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, ...env },
  })
  const reader = proc.stdout.getReader()
  let text = ''
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    const { value, done } = await reader.read()
    if (done) break
    text += new TextDecoder().decode(value)
    const m = /listening on (http:\/\/[^\s]+)\n/.exec(text)
    if (m) {
      reader.releaseLock()
      return {
        url: m[1]!,
        proc,
        async stop() {
          proc.kill('SIGTERM')
          await proc.exited
        },
      }
    }
  }
  proc.kill()
  throw new Error(`serve did not start: ${text} ${await new Response(proc.stderr).text()}`)
}
