/** `dbcluster bench sweep` as a real CLI process on a tiny model: results.json has one series per node count × prompt
 * length with a level per concurrency, results.md one row per measured point, and chart.svg is well-formed XML whose
 * lines, read back through its own axis ticks, give the JSON's values. Ctrl-C mid-sweep leaves partial results and no
 * server behind. */
import { expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { processesWithOptions } from '../../src/bench/pin-cores.ts'
import type { SweepResults } from '../../src/bench/sweep.ts'
import { synthModel } from '../support/synth-models.ts'
import { findAll, parseXml, type XmlElement } from '../support/xml-check.ts'

const ROOT = new URL('../..', import.meta.url).pathname

function sweep(args: string[]) {
  // NODE_ENV=test (set by bun test) would make consola hide the progress lines this test reads
  return Bun.spawn([process.execPath, 'src/main.ts', 'bench', 'sweep', ...args], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
    env: { ...process.env, NODE_ENV: 'production' },
  })
}

/** A straight line through the (pixel, value) pairs of an axis' tick labels, to read values back from pixels. */
function axis(ticks: XmlElement[], coordinate: 'x' | 'y', transform = (v: number) => v): (pixel: number) => number {
  const pairs = ticks.map((t) => [Number(t.attributes[coordinate]), transform(Number(t.text))] as const)
  const [[p0, v0], [p1, v1]] = [pairs[0]!, pairs.at(-1)!]
  if (p0 === p1) return () => v0
  return (pixel) => v0 + ((pixel - p0) / (p1 - p0)) * (v1 - v0)
}

test('a sweep writes results.json, a markdown table and an SVG chart whose series match the JSON', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const out = mkdtempSync(join(tmpdir(), 'dbc-sweep-'))
  const proc = sweep([
    '--model',
    model,
    '--nodes',
    '1,2',
    '--concurrency',
    '1,2',
    '--prompt-tokens',
    '8',
    '--max-tokens',
    '4',
    '--out',
    out,
  ])
  const [code, stdout, stderr] = [
    await proc.exited,
    await new Response(proc.stdout).text(),
    await new Response(proc.stderr).text(),
  ]
  expect(code, stderr).toBe(0)
  expect(stdout).toContain('[4/4] 2 nodes, 8-token prompts, concurrency 2')
  expect(stdout).toContain(`results in ${out}`)

  const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SweepResults
  expect(results).toMatchObject({
    kind: 'dbcluster-bench-sweep',
    version: 1,
    model,
    partial: false,
    settings: { nodes: [1, 2], concurrency: [1, 2], prompt_tokens: [8], max_tokens: 4 },
  })
  expect(results.series.map((s) => [s.nodes, s.prompt_tokens])).toEqual([
    [1, 8],
    [2, 8],
  ])
  for (const s of results.series) {
    expect(s.levels.map((l) => l.concurrency)).toEqual([1, 2])
    for (const l of s.levels) {
      expect(l.failed).toBe(0)
      expect(l.ok).toBe(2 * l.concurrency) // default: 2 requests per client
      expect(l.generated_tokens).toBe(4 * l.ok)
      // seconds are rounded to the millisecond, and these levels last only tens of them
      expect(Math.abs(l.tok_s - l.generated_tokens / l.seconds) / l.tok_s).toBeLessThan(0.1)
      expect(l.ttft_p50_ms).toBeGreaterThan(0)
      expect(l.ttft_p95_ms!).toBeGreaterThanOrEqual(l.ttft_p50_ms!)
      expect(l.itl_p95_ms!).toBeGreaterThanOrEqual(l.itl_p50_ms!)
    }
  }

  const markdown = readFileSync(join(out, 'results.md'), 'utf8')
  const rows = markdown.split('\n').filter((line) => /^\| \d/.test(line))
  expect(rows).toHaveLength(4)
  const points = results.series.flatMap((s) => s.levels.map((l) => [s.nodes, s.prompt_tokens, l.concurrency, l.tok_s]))
  expect(
    rows.map((r) =>
      r
        .split('|')
        .slice(1, 5)
        .map((c) => Number(c.trim())),
    ),
  ).toEqual(points)
  // the last column: tok/s over the same series' tok/s at concurrency 1
  const scaling = results.series.flatMap((s) => s.levels.map((l) => (l.tok_s / s.levels[0]!.tok_s).toFixed(2)))
  expect(rows.map((r) => r.split('|').at(-2)!.trim())).toEqual(scaling)

  const svg = parseXml(readFileSync(join(out, 'chart.svg'), 'utf8'))
  expect(svg.name).toBe('svg')
  expect(svg.attributes.xmlns).toBe('http://www.w3.org/2000/svg')
  const panels = findAll(svg, (e) => e.attributes.class === 'panel')
  expect(panels).toHaveLength(2)
  const metrics: ((l: SweepResults['series'][0]['levels'][0]) => number | null)[] = [
    (l) => l.tok_s,
    (l) => l.ttft_p50_ms,
  ]
  panels.forEach((panel, p) => {
    const x = axis(
      findAll(panel, (e) => e.attributes.class === 'x-tick'),
      'x',
      Math.log2,
    )
    const y = axis(
      findAll(panel, (e) => e.attributes.class === 'y-tick'),
      'y',
    )
    const lines = findAll(panel, (e) => e.attributes.class === 'series')
    expect(lines.map((l) => l.attributes['data-label'])).toEqual([
      '1 node, 8-token prompts',
      '2 nodes, 8-token prompts',
    ])
    const legend = findAll(panel, (e) => e.attributes.class === 'legend').map((e) => e.text)
    expect(legend).toEqual(['1 node, 8-token prompts', '2 nodes, 8-token prompts'])
    lines.forEach((line, s) => {
      const polyline = findAll(line, (e) => e.name === 'polyline')[0]!
      const drawn = polyline.attributes
        .points!.split(' ')
        .map((pair) => pair.split(',').map(Number) as [number, number])
      const levels = results.series[s]!.levels
      expect(drawn).toHaveLength(levels.length)
      drawn.forEach(([px, py], i) => {
        expect(2 ** x(px)).toBeCloseTo(levels[i]!.concurrency, 1)
        const value = metrics[p]!(levels[i]!)!
        // pixels are rounded to 0.01: allow that much of the axis range
        expect(Math.abs(y(py) - value)).toBeLessThan(Math.max(0.01 * value, 0.5))
      })
      expect(findAll(line, (e) => e.name === 'circle')).toHaveLength(levels.length)
    })
  })
}, 60_000)

test('Ctrl-C during a sweep stops its servers, keeps what was measured and exits 130', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const out = mkdtempSync(join(tmpdir(), 'dbc-sweep-int-'))
  // many slow levels: the interrupt lands after the first level and long before the last
  const proc = sweep([
    '--model',
    model,
    '--nodes',
    '2,1',
    '--concurrency',
    '1,2,3,4,5,6',
    '--prompt-tokens',
    '8',
    '--max-tokens',
    '64',
    '--requests-per-level',
    '12',
    '--out',
    out,
  ])
  const file = join(out, 'results.json')
  const deadline = Date.now() + 45_000
  const measured = () =>
    existsSync(file)
      ? (JSON.parse(readFileSync(file, 'utf8')) as SweepResults).series.reduce((n, s) => n + s.levels.length, 0)
      : 0
  while (measured() < 1 && Date.now() < deadline) await Bun.sleep(100)
  expect(measured()).toBeGreaterThanOrEqual(1)
  const servers = () => processesWithOptions({ '--model': model }).filter((pid) => pid !== proc.pid)
  expect(servers()).toHaveLength(2) // the cluster's two nodes
  proc.kill('SIGINT')
  const [code, stderr] = [await proc.exited, await new Response(proc.stderr).text()]
  expect(code, stderr).toBe(130)
  expect(stderr).toContain(`partial results in ${out}`)
  const results = JSON.parse(readFileSync(file, 'utf8')) as SweepResults
  expect(results.partial).toBe(true)
  expect(results.stopped_reason).toMatch(/^interrupted \(SIGINT\) after \d+ of 12 points$/)
  const points = results.series.reduce((n, s) => n + s.levels.length, 0)
  expect(points).toBeGreaterThanOrEqual(1)
  expect(points).toBeLessThan(12)
  expect(results.series[0]!.nodes).toBe(2)
  expect(
    readFileSync(join(out, 'results.md'), 'utf8')
      .split('\n')
      .filter((line) => /^\| \d/.test(line)),
  ).toHaveLength(points)
  parseXml(readFileSync(join(out, 'chart.svg'), 'utf8'))
  expect(servers()).toEqual([])
}, 60_000)

test('--repeat measures every point that many times with the node counts taking turns: medians, and ratios run by run', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const out = mkdtempSync(join(tmpdir(), 'dbc-sweep-rep-'))
  const proc = sweep([
    '--model',
    model,
    '--nodes',
    '1,2',
    '--concurrency',
    '2',
    '--prompt-tokens',
    '8',
    '--max-tokens',
    '4',
    '--repeat',
    '3',
    '--out',
    out,
  ])
  const [code, stdout, stderr] = [
    await proc.exited,
    await new Response(proc.stdout).text(),
    await new Response(proc.stderr).text(),
  ]
  expect(code, stderr).toBe(0)
  expect(stdout).toContain('[6/6] 2 nodes, 8-token prompts, concurrency 2')
  const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SweepResults
  expect(results.partial).toBe(false)
  expect(results.settings.repeats).toBe(3)
  const ratios: number[] = []
  for (const s of results.series) {
    expect(s.runs!.map((run) => run.map((l) => l.concurrency))).toEqual([[2], [2], [2]])
    const runs = s.runs!.map((run) => run[0]!)
    // the level is the median run's tok/s, and every run's requests
    expect(s.levels[0]!.tok_s).toBe(runs.map((l) => l.tok_s).sort((a, b) => a - b)[1]!)
    expect(s.levels[0]!.ok).toBe(3 * 4)
    expect(s.levels[0]!.generated_tokens).toBe(runs.reduce((n, l) => n + l.generated_tokens, 0))
  }
  const [one, two] = results.series as [SweepResults['series'][0], SweepResults['series'][0]]
  for (let i = 0; i < 3; i++) ratios.push(Math.round((two.runs![i]![0]!.tok_s / one.runs![i]![0]!.tok_s) * 100) / 100)
  const markdown = readFileSync(join(out, 'results.md'), 'utf8')
  expect(markdown).toContain('Each point measured 3 times, the node counts taking turns')
  expect(markdown).toContain(`| 2 | 8 | 2 | ${ratios.join(' / ')} | ${[...ratios].sort((a, b) => a - b)[1]} |`)
  // every server this sweep started is gone
  expect(processesWithOptions({ '--model': model })).toEqual([])
  // a repeat count that is not a positive integer is refused before anything starts
  const bad = sweep(['--model', model, '--repeat', '0', '--out', out])
  const [badCode, badErr] = [await bad.exited, await new Response(bad.stderr).text()]
  expect(badCode).toBe(2)
  expect(badErr).toContain("--repeat must be a positive integer, got '0'")
}, 90_000)
