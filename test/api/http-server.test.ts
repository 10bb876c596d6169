/** serveHttp in-process: a streamed answer that goes quiet for longer than the idle timeout (a long prefill between two
 * events) still arrives whole once the app has said the request is in (holdOpen); without holdOpen the same wait is cut. */
import { expect, test } from 'bun:test'
import { serveHttp, type HttpBindings } from '../../src/api/http-server.ts'

const IDLE_S = 1

function slowApp(hold: boolean) {
  return {
    async fetch(request: Request, env: HttpBindings) {
      await request.text()
      if (hold) env.holdOpen()
      let n = 0
      const bytes = (s: string) => new TextEncoder().encode(s)
      return new Response(
        new ReadableStream({
          async pull(c) {
            if (n++ === 0) return c.enqueue(bytes('first '))
            await Bun.sleep(9_000) // past the timeout and Bun's coarse timer ticks
            c.enqueue(bytes('second'))
            c.close()
          },
        }),
        { headers: { 'content-type': 'text/event-stream' } },
      )
    },
  }
}

test('holdOpen lifts the idle timeout while the answer streams; without it a quiet stream is cut', async () => {
  const held = serveHttp(slowApp(true), { hostname: '127.0.0.1', port: 0, idleTimeoutSeconds: IDLE_S, maxPerClient: 8 })
  const cut = serveHttp(slowApp(false), { hostname: '127.0.0.1', port: 0, idleTimeoutSeconds: IDLE_S, maxPerClient: 8 })
  try {
    const [answered, dropped] = await Promise.all([
      fetch(`http://127.0.0.1:${held.server.port}/`, { method: 'POST', body: 'x' }).then((r) => r.text()),
      fetch(`http://127.0.0.1:${cut.server.port}/`, { method: 'POST', body: 'x' })
        .then((r) => r.text())
        .catch((e: Error) => `error: ${e.message}`),
    ])
    expect(answered).toBe('first second')
    expect(dropped).toStartWith('error:')
    expect(held.open()).toEqual({ requests: 0, clients: 0 })
  } finally {
    await Promise.all([held.stop(true), cut.stop(true)])
  }
}, 30_000)

test('a streamed answer counts as open until its last byte, and a cancelled one is released', async () => {
  let cancelled = false
  const app = {
    fetch: (_req: Request, env: HttpBindings) => {
      env.holdOpen()
      let n = 0
      return new Response(
        new ReadableStream({
          async pull(c) {
            await Bun.sleep(50)
            if (n++ < 3) c.enqueue(new TextEncoder().encode(`data: ${n}\n\n`))
            else if (n > 1000) c.close()
          },
          cancel: () => void (cancelled = true),
        }),
        { headers: { 'content-type': 'text/event-stream' } },
      )
    },
  }
  const http = serveHttp(app, { hostname: '127.0.0.1', port: 0, idleTimeoutSeconds: 5, maxPerClient: 1 })
  try {
    const r = await fetch(`http://127.0.0.1:${http.server.port}/`)
    const reader = r.body!.getReader()
    await reader.read()
    expect(http.open()).toEqual({ requests: 1, clients: 1 })
    // the cap is per address: a second request while the stream is open is refused
    const second = await fetch(`http://127.0.0.1:${http.server.port}/`)
    expect([second.status, second.headers.get('retry-after')]).toEqual([429, '1'])
    await reader.cancel()
    for (let i = 0; i < 100 && http.open().requests > 0; i++) await Bun.sleep(20)
    expect(http.open()).toEqual({ requests: 0, clients: 0 })
    expect(cancelled).toBe(true)
  } finally {
    await http.stop(true)
  }
}, 30_000)
