/** The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by scripts/setup.sh) driven by
 * playwright-core, against a real 2-node cluster on loopback. The page loads with no console errors, shows both nodes
 * with their link state, uptime, transport and trust, its throughput figure and chart move while requests run, and the
 * chat box streams an answer. A second page is a head that reports tensor parallel over jaccl with hardware trust (the
 * report is given; what is tested is how the page shows it): the RDMA banner. Screenshots are saved as
 * test-output/dashboard.png and dashboard-rdma.png. Skipped, with the reason printed, where Chromium cannot start. */
import { afterAll, expect, test } from 'bun:test'
import { existsSync, mkdirSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'
import { createApp } from '../../src/api/app.ts'
import { runLoad } from '../../src/bench/load.ts'
import { startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import type { Scheduler } from '../../src/engine/scheduler.ts'
import type { ModelTokenizer } from '../../src/model/tokenizer.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const OUTPUT = `${ROOT}test-output`

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
if (skipReason) console.warn(`dashboard browser test skipped: ${skipReason}`)

let cluster: LocalCluster | undefined
afterAll(async () => {
  await browser?.close()
  await cluster?.stop()
})

test.skipIf(skipReason !== null)(
  'the dashboard of a 2-node cluster in headless Chromium: nodes, live throughput, streamed chat',
  async () => {
    const model = await synthModel('qwen3', 'bf16')
    cluster = await startLocalCluster({
      nodes: 2,
      model,
      apiPort: 0,
      self: [process.execPath, `${ROOT}src/main.ts`],
      extraArgs: ['--backend', 'cpu', '--threads', '1', '--max-context', '256', '--model-id', 'tiny'],
    })
    const page = await browser!.newPage({ viewport: { width: 1100, height: 1000 } })
    const consoleErrors: string[] = []
    page.on('console', (m) => m.type() === 'error' && consoleErrors.push(`console: ${m.text()}`))
    page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`))
    page.on(
      'requestfailed',
      (r) =>
        !r.url().endsWith('/dashboard/events') &&
        consoleErrors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`),
    )

    await page.goto(`${cluster.url}/dashboard`)
    await page.waitForFunction(() => document.getElementById('model')!.textContent === 'tiny')
    expect(await page.textContent('#state')).toBe('ok')

    // both nodes, with their layer ranges (3 layers split 2 + 1) and the link to the stage up
    await page.waitForFunction(() => document.querySelectorAll('#nodes tr').length === 2)
    const rows = await page.$$eval('#nodes tr', (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent)),
    )
    // the head's own name shows where /health lists the members; the stage's link may carry its round trip: "up (0.4 ms)"
    expect(rows.map((r) => [r[0], r[1] === 'this node' ? 'node-0' : r[1], r[2], r[3], r[4]?.split(' ')[0]])).toEqual([
      ['0', 'node-0', 'head', '[0, 2)', '–'],
      ['1', 'node-1', 'stage', '[2, 3)', 'up'],
    ])
    expect(await page.textContent('#topology-note')).toStartWith('2 nodes, 3 layers, cpu backend on the head')
    // the node: its uptime, sealed links between the stages, no coordinator's verdict, no RDMA banner
    expect(await page.textContent('#uptime')).toMatch(/^\d+ (s|min \d+ s)$/)
    expect(await page.textContent('#transport-kind')).toBe('sealed TCP')
    expect(await page.textContent('#transport-note')).toBe('(encrypted)')
    expect(await page.textContent('#trust')).toBe('not vouched')
    expect(await page.isVisible('#rdma-banner')).toBe(false)

    // idle: a throughput figure of 0 once two snapshots arrived; then it rises while requests run
    await page.waitForFunction(() => document.getElementById('tps')!.textContent === '0.0', undefined, {
      timeout: 10_000,
    })
    const load = runLoad(cluster.url, {
      concurrency: 4,
      requestsPerClient: 6,
      promptTokens: 8,
      maxTokens: 48,
      model: 'tiny',
      idRange: [1000, 30000],
    })
    await page.waitForFunction(() => Number(document.getElementById('tps')!.textContent) > 0, undefined, {
      timeout: 20_000,
    })
    const busy = Number(await page.textContent('#tps'))
    // the head's throughput history (5 s intervals) draws a point above the chart's baseline (y = 120)
    await page.waitForFunction(
      () =>
        document
          .getElementById('throughput-line')!
          .getAttribute('points')!
          .split(' ')
          .some((p) => p && Number(p.split(',')[1]) < 120),
      undefined,
      { timeout: 20_000 },
    )
    expect(await page.isVisible('#throughput-empty')).toBe(false)
    const result = await load
    expect(result.errors).toEqual([])
    expect(busy).toBeGreaterThan(0)
    await page.waitForFunction(() => Number(document.getElementById('reqs')!.textContent) >= 24, undefined, {
      timeout: 10_000,
    })
    // the stage's compute time per step, reported by the head's metrics, appears in the node table
    expect(
      await page.$$eval('#nodes tr', (trs) => trs.map((tr) => tr.querySelectorAll('td')[5]!.textContent)),
    ).toSatisfy((cells: (string | null)[]) => cells.every((c) => / ms$/.test(c ?? '')))

    // chat: the answer arrives in several pieces (streamed), not all at once
    await page.evaluate(() => {
      const w = window as unknown as { pieces: number }
      w.pieces = 0
      new MutationObserver(() => w.pieces++).observe(document.getElementById('answer')!, {
        childList: true,
        characterData: true,
        subtree: true,
      })
    })
    await page.fill('#prompt', 'Tell me about clusters.')
    await page.click('#send')
    await page.waitForFunction(
      () =>
        !(document.getElementById('send') as HTMLButtonElement).disabled &&
        document.getElementById('answer')!.textContent!.length > 0,
      undefined,
      { timeout: 30_000 },
    )
    const answer = (await page.textContent('#answer'))!
    expect(answer).not.toContain('[error')
    expect(answer).not.toStartWith('error ')
    expect(await page.evaluate(() => (window as unknown as { pieces: number }).pieces)).toBeGreaterThan(3)
    await page.waitForFunction(() => Number(document.getElementById('reqs')!.textContent) >= 25, undefined, {
      timeout: 10_000,
    })

    mkdirSync(OUTPUT, { recursive: true })
    await page.screenshot({ path: `${OUTPUT}/dashboard.png`, fullPage: true })
    expect(existsSync(`${OUTPUT}/dashboard.png`)).toBe(true)
    expect(consoleErrors).toEqual([])
  },
  90_000,
)

test.skipIf(skipReason !== null)(
  'a head reporting tensor parallel over jaccl with hardware trust: the RDMA banner, the transport and the trust',
  async () => {
    const app = createApp({
      scheduler: {
        pipeline: { vocabSize: 10, maxLen: 64 },
        degraded: null,
        queueDepth: 0,
        running: 0,
      } as unknown as Scheduler,
      tokenizer: {} as ModelTokenizer,
      modelId: 'tp-model',
      metrics: new ServingMetrics(),
      health: () => ({
        backend: 'mlx',
        nodes: 2,
        tensor_parallel: { ranks: 2, transport: 'jaccl', sampling: 'split' },
        layers: 4,
        head_layers: [0, 4],
        cluster_trust: 'hardware',
      }),
    })
    const server = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: app.fetch })
    try {
      const page = await browser!.newPage({ viewport: { width: 1100, height: 700 } })
      const errors: string[] = []
      page.on('pageerror', (e) => errors.push(`page error: ${e.message}`))
      page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`))
      await page.goto(`http://127.0.0.1:${server.port}/dashboard`)
      await page.waitForFunction(() => document.getElementById('model')!.textContent === 'tp-model')
      await page.waitForSelector('#rdma-banner', { state: 'visible' })
      expect(await page.textContent('#rdma-banner')).toContain('Thunderbolt RDMA')
      expect(await page.textContent('#transport-kind')).toBe('jaccl')
      expect(await page.textContent('#transport-note')).toBe('(NOT encrypted)')
      expect(await page.textContent('#trust')).toBe('hardware')
      // both ranks, each with a slice of every layer
      const ranks = await page.$$eval('#nodes tr', (trs) =>
        trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent).slice(0, 4)),
      )
      expect(ranks).toEqual([
        ['0', 'this node', 'rank 0 (serves the API)', '[0, 4)'],
        ['1', '–', 'rank', '[0, 4)'],
      ])
      expect(await page.isVisible('#throughput-empty')).toBe(true) // nothing sampled yet
      mkdirSync(OUTPUT, { recursive: true })
      await page.screenshot({ path: `${OUTPUT}/dashboard-rdma.png` })
      expect(errors).toEqual([])
      await page.close()
    } finally {
      await server.stop(true)
    }
  },
  30_000,
)
