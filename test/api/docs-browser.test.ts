/** GET /docs in a real browser: headless Chromium (Debian's `chromium`, installed by scripts/setup.sh) driven by
 * playwright-core, against the real app behind --api-key, the key given as the browser's Basic password. The page
 * loads with no console errors and no request outside the server, shows one section per operation of /openapi.json and
 * one row per request field, and its contents links land on the operation. A screenshot is saved as
 * test-output/docs.png. Skipped, with the reason printed, where Chromium cannot start (the same rules as
 * dashboard-browser.test.ts). */
import { afterAll, expect, test } from 'bun:test'
import { existsSync, mkdirSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'
import { createApp } from '../../src/api/app.ts'
import { CHAT_REQUEST } from '../../src/api/request-schema.ts'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import type { Scheduler } from '../../src/engine/scheduler.ts'
import type { ModelTokenizer } from '../../src/model/tokenizer.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const OUTPUT = `${ROOT}test-output`
const KEY = 'docs-key'

function findChromium(): string | null {
  const candidates = [
    process.env.DBC_CHROMIUM,
    '/usr/bin/chromium',
    '/usr/bin/chromium-browser',
    Bun.which('chromium'),
    Bun.which('chromium-browser'),
    Bun.which('google-chrome'),
  ]
  return candidates.find((path): path is string => Boolean(path) && existsSync(path!)) ?? null
}

let browser: Browser | undefined
let skipReason: string | null = null
const executablePath = findChromium()
if (!executablePath)
  skipReason =
    'no Chromium found (Debian: apt-get install chromium, which scripts/setup.sh does when run as root; or set DBC_CHROMIUM)'
else {
  try {
    // Chromium refuses to run as root with its sandbox on
    browser = await chromium.launch({ executablePath, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] })
  } catch (error) {
    skipReason = `Chromium at ${executablePath} does not start: ${(error as Error).message.split('\n')[0]}`
  }
}
if (skipReason) console.warn(`docs browser test skipped: ${skipReason}`)

afterAll(async () => {
  await browser?.close()
})

test.skipIf(skipReason !== null)(
  '/docs in headless Chromium: every operation and request field, nothing from elsewhere',
  async () => {
    // /docs and /openapi.json serve no completion: the scheduler and tokenizer are never called
    const app = createApp({
      scheduler: { pipeline: { vocabSize: 10, maxLen: 64 } } as unknown as Scheduler,
      tokenizer: {} as ModelTokenizer,
      modelId: 'tiny',
      metrics: new ServingMetrics(),
      health: () => ({}),
      apiKey: KEY,
    })
    const server = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: app.fetch })
    const origin = `http://127.0.0.1:${server.port}`
    try {
      const document = await (
        await fetch(`${origin}/openapi.json`, { headers: { authorization: `Bearer ${KEY}` } })
      ).json()
      const operations = Object.values(document.paths as Record<string, object>).flatMap((m) => Object.keys(m))

      const context = await browser!.newContext({
        viewport: { width: 1100, height: 1000 },
        httpCredentials: { username: 'anyone', password: KEY },
      })
      const page = await context.newPage()
      const problems: string[] = []
      page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`))
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
      page.on(
        'request',
        (r) => !r.url().startsWith(origin) && !r.url().startsWith('data:') && problems.push(`request: ${r.url()}`),
      )

      const response = await page.goto(`${origin}/docs`)
      expect(response!.status()).toBe(200)
      expect(await page.title()).toStartWith('dbcluster API')
      expect(await page.locator('section.op').count()).toBe(operations.length)
      expect(await page.locator('#toc a').count()).toBe(operations.length)
      // the chat request's own fields: one row each in the table under its route
      const chatFields = await page.$$eval(
        '#postV1ChatCompletions > table.fields > tbody > tr > td.field > code',
        (cells) => cells.map((c) => c.textContent),
      )
      expect(chatFields).toEqual(Object.keys(CHAT_REQUEST.fields))
      const temperature = page.locator('#postV1ChatCompletions > table.fields > tbody > tr', { hasText: 'temperature' })
      expect(await temperature.textContent()).toContain('number, ≥ 0, ≤ 2, default 1, or null')

      await page.click('#toc a[href="#postAdminStop"]')
      expect(new URL(page.url()).hash).toBe('#postAdminStop')
      expect(await page.locator('#postAdminStop').isVisible()).toBe(true)
      expect(await page.locator('#postAdminStop h3').textContent()).toContain('/admin/stop')

      mkdirSync(OUTPUT, { recursive: true })
      await page.goto(`${origin}/docs`)
      await page.screenshot({ path: `${OUTPUT}/docs.png` })
      expect(existsSync(`${OUTPUT}/docs.png`)).toBe(true)
      expect(problems).toEqual([])
      await context.close()
    } finally {
      await server.stop(true)
    }
  },
  60_000,
)
