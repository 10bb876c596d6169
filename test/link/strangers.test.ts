/** Strangers on a head's link port (a real `serve --peers … --rank 0` process waiting for its stage): before the handshake
 * frames are held to the handshake's own size, so declared-huge frames cost nothing; a pile of connections that never
 * handshake is capped; what a stranger says reaches the log escaped, cut short, with its address, once per window. */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { Subprocess } from 'bun'
import { readFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { prepareLocalNodes } from '../../src/cluster/local-cluster.ts'
import { encodeError, FrameType } from '../../src/link/frames.ts'
import { encodeFrame } from '../../src/link/framing.ts'
import { HANDSHAKE_FRAME_BYTES, MAX_PENDING_HANDSHAKES } from '../../src/link/tcp-link.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
let head: Subprocess<'ignore', 'pipe', 'pipe'>
let port = 0
let output = ''
const sockets: Socket[] = []

beforeAll(async () => {
  const model = await synthModel('qwen3', 'bf16')
  const nodes = prepareLocalNodes(2)
  port = nodes.ports[0]!
  head = Bun.spawn(
    [
      process.execPath,
      'src/main.ts',
      'serve',
      '--model',
      model,
      '--peers',
      nodes.peers,
      '--rank',
      '0',
      '--node-name',
      'node-0',
      '--backend',
      'cpu',
      '--port',
      '0',
    ],
    {
      cwd: ROOT,
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, NO_COLOR: '1', DBCLUSTER_HOME: nodes.homes[0]! },
    },
  )
  for (const stream of [head.stdout, head.stderr] as ReadableStream<Uint8Array>[])
    void (async () => {
      const reader = stream.getReader()
      for (let r = await reader.read(); !r.done; r = await reader.read()) output += new TextDecoder().decode(r.value)
    })()
  // the head listens on its link port while it waits for the stage
  const deadline = Date.now() + 60_000
  for (;;) {
    const ok = await new Promise<boolean>((done) => {
      const s = connect({ host: '127.0.0.1', port }, () => (s.destroy(), done(true)))
      s.on('error', () => done(false))
    })
    if (ok) break
    if (Date.now() > deadline) throw new Error(`the head never listened: ${output}`)
    await Bun.sleep(100)
  }
}, 90_000)

afterAll(async () => {
  for (const s of sockets) s.destroy()
  head.kill('SIGTERM')
  await head.exited
})

/** A raw connection to the head's link port; resolves once connected. */
function stranger(): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => resolve({ socket, closed }))
    const closed = new Promise<void>((done) => socket.on('close', () => done()))
    socket.on('data', () => {}) // read what the head says, so its close is seen
    socket.on('error', () => {})
    socket.once('error', reject)
    sockets.push(socket)
  })
}

const header = (declared: bigint, type: number) => {
  const h = new Uint8Array(9)
  new DataView(h.buffer).setBigUint64(0, declared, true)
  h[8] = type
  return h
}

const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024

test('frames declared up to the link limit before the handshake are refused at once and hold no memory', async () => {
  const before = rssOf(head.pid)
  const conns = await Promise.all(Array.from({ length: 8 }, () => stranger()))
  for (const c of conns) {
    c.socket.write(header(200n * 1024n * 1024n, FrameType.hello))
    c.socket.write(new Uint8Array(1024 * 1024)) // bytes of the "frame" that would have been buffered
  }
  await Promise.all(conns.map((c) => c.closed))
  expect(rssOf(head.pid) - before).toBeLessThan(64 * 1024 * 1024)
  expect(output).toContain(
    `E_FRAME_TOO_LARGE: a frame declared ${200 * 1024 * 1024} bytes; the limit is ${HANDSHAKE_FRAME_BYTES}`,
  )
}, 30_000)

test('connections that never handshake are capped; one more is closed on arrival, and that is logged once', async () => {
  const idle = await Promise.all(Array.from({ length: MAX_PENDING_HANDSHAKES }, () => stranger()))
  await Bun.sleep(200)
  const extra = await Promise.all(Array.from({ length: 5 }, () => stranger()))
  await Promise.all(extra.map((c) => c.closed)) // closed by the head, not by the handshake timeout
  const lines = output.split('\n').filter((l) => l.includes(`handshakes are already pending on 127.0.0.1:${port}`))
  expect(lines.length).toBe(1)
  expect(lines[0]).toContain(
    `refused a connection from 127.0.0.1: ${MAX_PENDING_HANDSHAKES} handshakes are already pending`,
  )
  for (const c of idle) c.socket.destroy()
  await Promise.all(idle.map((c) => c.closed))
  await Bun.sleep(200)
  // room again: a new connection is accepted (it is closed later by the handshake timeout, not at once)
  const after = await stranger()
  const early = await Promise.race([after.closed.then(() => 'closed'), Bun.sleep(500).then(() => 'open')])
  expect(early).toBe('open')
  after.socket.destroy()
}, 30_000)

test('an error frame before HELLO reaches the log escaped, cut short and with the address; repeats are counted, not printed', async () => {
  const forged = 'bye\n[link] WARN link node-1 closed: E_KEY_MISMATCH \u001b[31mforged\u001b[0m ' + 'x'.repeat(5000)
  const first = await stranger()
  first.socket.write(encodeFrame(FrameType.error, encodeError({ code: 'E_FORGED', message: forged.slice(0, 4000) })))
  await first.closed
  for (let i = 0; i < 5; i++) {
    const again = await stranger()
    again.socket.write(encodeFrame(FrameType.error, encodeError({ code: 'E_FORGED', message: forged.slice(0, 4000) })))
    await again.closed
  }
  const lines = output.split('\n').filter((l) => l.includes('E_FORGED'))
  expect(lines.length).toBe(1)
  const line = lines[0]!
  expect(line).toContain('(127.0.0.1)')
  expect(line).toContain('bye\\n[link] WARN link node-1 closed: E_KEY_MISMATCH \\x1b[31mforged\\x1b[0m')
  expect(line).toContain('more characters)')
  expect(line).not.toContain('\u001b')
  expect(line.length).toBeLessThan(600)
  // an 8 MiB message never arrives whole: the frame is over the handshake's size
  const huge = await stranger()
  huge.socket.write(encodeFrame(FrameType.error, encodeError({ code: 'E_HUGE', message: 'y'.repeat(8 * 1024 * 1024) })))
  await huge.closed
  expect(output).not.toContain('yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy')
}, 30_000)
