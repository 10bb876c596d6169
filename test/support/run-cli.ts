/** Runs `dbcluster` from source as a user would in a terminal: its own state folder (DBCLUSTER_HOME), the file pin
 * store, and consola's info lines kept (bun test's NODE_ENV=test would quiet them). */
const ROOT = new URL('../..', import.meta.url).pathname

export async function runCli(args: string[], home: string, env: Record<string, string> = {}) {
  const proc = Bun.spawn([process.execPath, 'src/main.ts', ...args], {
    cwd: ROOT,
    stdin: 'ignore',
    env: {
      ...process.env,
      NODE_ENV: 'production',
      DBCLUSTER_HOME: home,
      DBCLUSTER_PIN_STORE: 'file',
      NO_COLOR: '1',
      ...env,
    },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  return { stdout, stderr, code, all: stdout + stderr }
}
