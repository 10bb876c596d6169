/** The API server under connection floods, against a real `serve` process whose file-descriptor limit is lowered so a
 * bounded number of sockets would exhaust it: stalled-body requests from one address are capped (the rest get 429 and
 * a closed connection), silent connections are closed after the idle timeout, another client keeps getting answers
 * throughout, and /metrics says how many requests are open. (http-server.test.ts: a long answer outlives the timeout.) */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { Subprocess } from 'bun'
import { connect, type Socket } from 'node:net'

const ROOT = new URL('../..', import.meta.url).pathname
const FD_LIMIT = 160
const IDLE_S = 2
const PER_CLIENT = 4
let proc: Subprocess<'ignore', 'pipe', 'pipe'>
let url = ''
let port = 0
const sockets: Socket[] = []

beforeAll(async () => {
  const serve = [
    process.execPath,
    'src/main.ts',
    'serve',
    '--port',
    '0',
    '--backend',
    'cpu',
    '--threads',
    '1',
    '--max-context',
    '256',
    '--idle-timeout',
    String(IDLE_S),
    '--max-requests-per-client',
    String(PER_CLIENT),
  ]
  proc = Bun.spawn(['bash', '-c', `ulimit -n ${FD_LIMIT} && exec "$@"`, 'serve', ...serve], {
    cwd: ROOT,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NO_COLOR: '1' },
  })
  const reader = proc.stdout.getReader()
  let text = ''
  while (!/listening on (http:\S+)\n/.test(text)) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`serve did not start: ${text} ${await new Response(proc.stderr).text()}`)
    text += new TextDecoder().decode(value)
  }
  reader.releaseLock()
  url = /listening on (http:\S+)\n/.exec(text)![1]!
  port = Number(new URL(url).port)
}, 120_000)

afterAll(async () => {
  for (const s of sockets) s.destroy()
  proc.kill('SIGTERM')
  await proc.exited
})

/** A connection from another loopback address (so the test's own fetches are another client). */
function attacker(first: string): Promise<{ socket: Socket; reply: () => string; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' }, () => {
      if (first) socket.write(first)
      resolve({ socket, reply: () => text, closed })
    })
    let text = ''
    const opened = Date.now()
    const closed = new Promise<number>((done) => socket.on('close', () => done(Date.now() - opened)))
    socket.on('data', (d) => (text += d))
    socket.on('error', () => {})
    socket.once('error', reject)
    sockets.push(socket)
  })
}

const metric = async (name: string) =>
  Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(await (await fetch(`${url}/metrics`)).text())?.[1])

test('stalled bodies from one address: only the cap is held, the rest are refused with 429, /health stays answered', async () => {
  const stalled =
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"mess'
  // more sockets than the process has descriptors for
  const flood = await Promise.all(Array.from({ length: FD_LIMIT + 40 }, () => attacker(stalled)))
  await Bun.sleep(300)
  const refused = flood.filter((a) => a.reply().startsWith('HTTP/1.1 429'))
  expect(refused.length).toBeGreaterThanOrEqual(FD_LIMIT + 40 - PER_CLIENT)
  expect(refused[0]!.reply()).toContain('too many requests open from 127.0.0.2 (at most 4)')
  const health = await fetch(`${url}/health`)
  expect(health.status).toBe(200)
  expect(await metric('dbcluster_http_open_requests')).toBe(PER_CLIENT + 1) // the four held, and this /metrics request
  expect(await metric('dbcluster_http_refused_total\\{reason="per_client_limit"\\}')).toBeGreaterThanOrEqual(
    refused.length,
  )
  expect(await metric('process_open_fds')).toBeLessThan(FD_LIMIT)
  // the held ones are closed once their body has been silent for the idle timeout
  const held = flood.filter((a) => !a.reply().startsWith('HTTP/1.1 429'))
  const lifetimes = await Promise.all(held.map((a) => a.closed))
  for (const ms of lifetimes) expect(ms).toBeLessThan(20_000)
  expect(await metric('dbcluster_http_open_requests')).toBe(1)
}, 60_000)

test('a connection that never sends a byte is closed by the server', async () => {
  const silent = await attacker('')
  expect(await silent.closed).toBeLessThan(30_000)
  expect(silent.reply()).toBe('')
}, 40_000)

test('limits out of range are refused, naming the flag', () => {
  for (const [flag, value, words] of [
    ['--idle-timeout', '300', '--idle-timeout must be 1..255 seconds'],
    ['--idle-timeout', '0', '--idle-timeout must be a positive integer'],
    ['--max-requests-per-client', '0', '--max-requests-per-client must be a positive integer'],
  ] as const) {
    const r = Bun.spawnSync([process.execPath, 'src/main.ts', 'serve', '--port', '0', flag, value], {
      cwd: ROOT,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, NO_COLOR: '1' },
    })
    expect([flag, value, r.exitCode]).toEqual([flag, value, 2])
    expect(r.stderr.toString()).toContain(words)
  }
}, 60_000)
