/** Report forms of serving measurements: markdown tables for `bench serve` levels and a whole sweep, and the sweep's
 * SVG chart (generated tok/s and TTFT p50 against concurrency, one line per node count and prompt length). */
import type { LevelResult } from './serve-sweep.ts'
import { median } from './stats.ts'
import { renderLineChart } from './svg-chart.ts'
import { seriesLabel, type SweepResults } from './sweep.ts'

const ms = (v: number | null) => (v === null ? 'n/a' : String(v))

const LEVEL_HEADER = [
  'concurrency',
  'tok/s',
  'TTFT p50 ms',
  'TTFT p95 ms',
  'ITL p50 ms',
  'ITL p95 ms',
  'ok',
  'failed',
  'tok/s ÷ c=1',
]
/** A level's cells; the last is its tok/s over the same series' concurrency-1 tok/s (the scaling the goals name). */
const levelCells = (l: LevelResult, levels: LevelResult[]): string[] => {
  const one = levels.find((x) => x.concurrency === 1)?.tok_s
  const ratio = one ? (l.tok_s / one).toFixed(2) : 'n/a'
  return [
    String(l.concurrency),
    String(l.tok_s),
    ms(l.ttft_p50_ms),
    ms(l.ttft_p95_ms),
    ms(l.itl_p50_ms),
    ms(l.itl_p95_ms),
    String(l.ok),
    String(l.failed),
    ratio,
  ]
}

const row = (cells: string[]) => `| ${cells.join(' | ')} |`
const table = (header: string[], rows: string[][]) =>
  [row(header), row(header.map(() => '---')), ...rows.map(row)].join('\n')

/** One row per concurrency level. */
export function levelsTable(levels: LevelResult[]): string {
  return table(
    LEVEL_HEADER,
    levels.map((l) => levelCells(l, levels)),
  )
}

/** With repeats: each node count's tok/s over one process's in the same run (they ran back to back), per concurrency
 * level and prompt length, and the median of those ratios — the comparison a drifting machine leaves intact. */
export function pairedRatios(
  r: SweepResults,
): { nodes: number; prompt_tokens: number; concurrency: number; ratios: number[]; median: number }[] {
  const out: { nodes: number; prompt_tokens: number; concurrency: number; ratios: number[]; median: number }[] = []
  for (const s of r.series) {
    const one = r.series.find((x) => x.nodes === 1 && x.prompt_tokens === s.prompt_tokens)
    if (s.nodes === 1 || !one?.runs || !s.runs) continue
    for (const c of r.settings.concurrency) {
      const ratios: number[] = []
      s.runs.forEach((run, i) => {
        const mine = run.find((l) => l.concurrency === c)?.tok_s
        const theirs = one.runs![i]?.find((l) => l.concurrency === c)?.tok_s
        if (mine !== undefined && theirs) ratios.push(Math.round((mine / theirs) * 100) / 100)
      })
      if (ratios.length)
        out.push({
          nodes: s.nodes,
          prompt_tokens: s.prompt_tokens,
          concurrency: c,
          ratios,
          median: Math.round(median(ratios) * 100) / 100,
        })
    }
  }
  return out
}

/** The sweep as markdown: what was run, then one row per measured point (series × concurrency). */
export function sweepMarkdown(r: SweepResults): string {
  const s = r.settings
  const lines = [
    `# dbcluster bench sweep${r.partial ? ' (partial)' : ''}`,
    '',
    `Model \`${r.model}\`; ${s.max_tokens} generated tokens per request; ${s.threads_per_process} thread(s) per process${s.pinned_cores ? ', each process pinned to its own cores' : ''}; started ${r.started_at}${r.finished_at ? `, finished ${r.finished_at}` : ''}.`,
  ]
  if (s.repeats > 1)
    lines.push(
      '',
      `Each point measured ${s.repeats} times, the node counts taking turns; a row gives the medians of its runs.`,
    )
  if (r.partial) lines.push('', `Partial: ${r.stopped_reason ?? 'not every point was measured'}.`)
  const rows = r.series.flatMap((series) =>
    series.levels.map((l) => [String(series.nodes), String(series.prompt_tokens), ...levelCells(l, series.levels)]),
  )
  lines.push('', table(['nodes', 'prompt tokens', ...LEVEL_HEADER], rows), '')
  const pairs = pairedRatios(r)
  if (pairs.length) {
    lines.push("Each node count against one process, run by run (tok/s ÷ one process's tok/s in the same run):", '')
    lines.push(
      table(
        ['nodes', 'prompt tokens', 'concurrency', 'per run', 'median'],
        pairs.map((p) => [
          String(p.nodes),
          String(p.prompt_tokens),
          String(p.concurrency),
          p.ratios.join(' / '),
          String(p.median),
        ]),
      ),
      '',
    )
  }
  const targets = [...new Set(r.series.map((x) => `${seriesLabel(x)}: ${x.target}`))]
  if (targets.length) lines.push(...targets.map((t) => `- ${t}`), '')
  return lines.join('\n')
}

export function sweepChart(r: SweepResults): string {
  // one color per node count, one dash style per prompt length
  const color = (x: { nodes: number }) => Math.max(0, r.settings.nodes.indexOf(x.nodes))
  const dash = (x: { prompt_tokens: number }) => Math.max(0, r.settings.prompt_tokens.indexOf(x.prompt_tokens))
  const series = (pick: (l: LevelResult) => number | null) =>
    r.series.map((x) => ({
      label: seriesLabel(x),
      color: color(x),
      dash: dash(x),
      points: x.levels.map((l) => ({ x: l.concurrency, y: pick(l) })),
    }))
  return renderLineChart({
    title: `dbcluster bench sweep — ${r.model.split('/').filter(Boolean).at(-1) ?? r.model}, ${r.settings.max_tokens} tokens per request${r.partial ? ' (partial)' : ''}`,
    xLabel: 'Concurrency',
    xLog2: true,
    panels: [
      {
        title: 'Generated tokens per second (all clients)',
        yLabel: 'tok/s',
        unit: 'tok/s',
        series: series((l) => l.tok_s),
      },
      {
        title: 'Time to first token, median',
        yLabel: 'TTFT p50 (ms)',
        unit: 'ms',
        series: series((l) => l.ttft_p50_ms),
      },
    ],
  })
}
