/** Runs an external command with a kill timer: some diagnostics (ibv_devinfo, system_profiler) can hang. */
export interface CommandResult {
  ok: boolean
  stdout: string
  /** Why it did not succeed: 'not found', 'timed out after N ms', or 'exit code N'. */
  reason?: string
}

export async function runWithTimeout(cmd: string[], timeoutMs = 3000): Promise<CommandResult> {
  let proc: ReturnType<typeof Bun.spawn>
  try {
    proc = Bun.spawn(cmd, { stdout: 'pipe', stderr: 'ignore', stdin: 'ignore' })
  } catch {
    return { ok: false, stdout: '', reason: `${cmd[0]} not found` }
  }
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    proc.kill('SIGKILL')
  }, timeoutMs)
  const [stdout, code] = await Promise.all([new Response(proc.stdout as ReadableStream).text(), proc.exited])
  clearTimeout(timer)
  if (timedOut) return { ok: false, stdout, reason: `${cmd[0]} timed out after ${timeoutMs} ms` }
  if (code !== 0) return { ok: false, stdout, reason: `${cmd[0]} exited with code ${code}` }
  return { ok: true, stdout }
}
