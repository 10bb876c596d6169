/** The API's HTTP server: Bun.serve around the Hono app, with the limits that keep it answering under hostile clients.
 * - An idle timeout for connections that send nothing, dribble their headers or stall their body (Bun closes them).
 * - Once a request's body is in (`holdOpen`), the timeout is lifted: a completion may compute for minutes before its
 *   first byte (bounded by --request-timeout instead); it comes back when the response ends, for the keep-alive wait.
 * - At most `maxPerClient` requests open at once per client address; more get 429 and a closed connection.
 * The counts go to /metrics. */
import type { Server } from 'bun'
import { readdirSync } from 'node:fs'
import type { ServingMetrics } from '../engine/metrics.ts'

export interface HttpServerOptions {
  hostname: string
  port: number
  /** Seconds a connection may go without a byte while it is idle or sending its request (1–255, Bun's range). */
  idleTimeoutSeconds: number
  /** Requests open at once from one client address. */
  maxPerClient: number
  metrics?: ServingMetrics
}

/** What the app receives as its Hono `env` on every request. */
export interface HttpBindings {
  /** Called once the request's body has been read: lifts the idle timeout while the answer is computed. */
  holdOpen(): void
}

export interface HttpServer {
  server: Server<undefined>
  /** Requests open now, and from how many client addresses. */
  open(): { requests: number; clients: number }
  stop(closeActive?: boolean): Promise<void>
}

interface App {
  fetch(request: Request, env: HttpBindings): Response | Promise<Response>
}

export function serveHttp(app: App, o: HttpServerOptions): HttpServer {
  if (!Number.isInteger(o.idleTimeoutSeconds) || o.idleTimeoutSeconds < 1 || o.idleTimeoutSeconds > 255)
    throw new RangeError(`idle timeout must be 1..255 seconds, got ${o.idleTimeoutSeconds}`)
  const openByClient = new Map<string, number>()
  let openRequests = 0

  const server = Bun.serve({
    hostname: o.hostname,
    port: o.port,
    idleTimeout: o.idleTimeoutSeconds,
    async fetch(request, srv) {
      const client = srv.requestIP(request)?.address ?? 'unknown'
      const open = openByClient.get(client) ?? 0
      if (open >= o.maxPerClient) {
        o.metrics?.httpRefused.inc({ reason: 'per_client_limit' })
        const message = `too many requests open from ${client} (at most ${o.maxPerClient}): wait for one to finish`
        return Response.json(
          { error: { message, type: 'rate_limit_error', param: null, code: 'too_many_connections' } },
          { status: 429, headers: { connection: 'close', 'retry-after': '1' } },
        )
      }
      openByClient.set(client, open + 1)
      openRequests++
      let finished = false
      const finish = () => {
        if (finished) return
        finished = true
        openRequests--
        const left = (openByClient.get(client) ?? 1) - 1
        if (left > 0) openByClient.set(client, left)
        else openByClient.delete(client)
      }
      const restoreIdle = () => {
        try {
          srv.timeout(request, o.idleTimeoutSeconds)
        } catch {
          // the connection is already gone
        }
      }
      request.signal.addEventListener('abort', finish, { once: true })
      let response: Response
      try {
        response = await app.fetch(request, { holdOpen: () => srv.timeout(request, 0) })
      } catch (error) {
        finish()
        throw error
      }
      // an event stream is open until its last event; any other answer is whole in memory now
      if (!response.body || !response.headers.get('content-type')?.startsWith('text/event-stream')) {
        restoreIdle()
        finish()
        return response
      }
      return new Response(
        watchEnd(response.body, () => (restoreIdle(), finish())),
        response,
      )
    },
  })

  return {
    server,
    open: () => ({ requests: openRequests, clients: openByClient.size }),
    stop: (closeActive = false) => server.stop(closeActive),
  }
}

/** The same bytes, with `onEnd` called once when the stream finishes, fails or is cancelled by the client. */
function watchEnd(body: ReadableStream<Uint8Array>, onEnd: () => void): ReadableStream<Uint8Array> {
  const reader = body.getReader()
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done } = await reader.read()
        if (done) {
          onEnd()
          controller.close()
        } else controller.enqueue(value)
      } catch (error) {
        onEnd()
        controller.error(error)
      }
    },
    cancel(reason) {
      onEnd()
      return reader.cancel(reason)
    },
  })
}

/** Open file descriptors of this process (/dev/fd lists them on Linux and macOS), or null where it cannot be read. */
export function openFileDescriptors(): number | null {
  try {
    return readdirSync('/dev/fd').length - 1 // the listing itself holds one
  } catch {
    return null
  }
}
