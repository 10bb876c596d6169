/** /dashboard: one self-contained page (embedded in the binary, no CDN) and /dashboard/events, an SSE stream of
 * JSON snapshots once a second. */
import type { Hono } from 'hono'
import { streamSSE } from 'hono/streaming'
import pageText from './dashboard.html' with { type: 'text' }
import { dashboardSnapshot } from './dashboard-snapshot.ts'

// bun-types declare every *.html import as an HTMLBundle; with `type: 'text'` it is the file's text.
const page = pageText as unknown as string

export function addDashboardRoutes(app: Hono, deps: Parameters<typeof dashboardSnapshot>[0], intervalMs = 1000): void {
  app.get('/dashboard', (c) => c.html(page))
  app.get('/dashboard/events', (c) =>
    streamSSE(c, async (stream) => {
      let open = true
      stream.onAbort(() => void (open = false))
      while (open) {
        await stream.writeSSE({ data: JSON.stringify(dashboardSnapshot(deps)) })
        await stream.sleep(intervalMs)
      }
    }),
  )
}
