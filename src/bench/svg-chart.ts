/** A small self-contained SVG line chart (no library, no external fonts or scripts): stacked panels that share an x
 * axis, each with y ticks from zero, grid lines, one polyline per series with a marker per point (its <title> is the
 * exact value, a tooltip in browsers), and a legend. */

export interface ChartSeries {
  label: string
  /** Index into the palette (default: the series' position), so related lines can share a color. */
  color?: number
  /** 0 = solid, 1 = dashed, 2 = dotted (e.g. one per prompt length). */
  dash?: number
  /** Points with a null y (nothing measured) are left out of the line. */
  points: { x: number; y: number | null }[]
}

export interface ChartPanel {
  title: string
  yLabel: string
  /** Unit appended to values in tooltips. */
  unit: string
  series: ChartSeries[]
}

export interface ChartSpec {
  title: string
  xLabel: string
  /** Place x on a log2 scale (concurrency 1, 2, 4, … spaced evenly). */
  xLog2: boolean
  panels: ChartPanel[]
}

const WIDTH = 760
const PANEL_HEIGHT = 300
const TOP = 36
const MARGIN = { left: 72, right: 230, top: 34, bottom: 52 }
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']
const DASHES = ['', '7 4', '2 3', '10 3 2 3']

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
const num = (v: number) => String(Math.round(v * 100) / 100)
/** A tick value printed without float noise (0.30000000000000004 → 0.3). */
const tickText = (v: number) => String(Number(v.toPrecision(12)))

/** Ticks from 0 to a round maximum ≥ max: the smallest step of 1, 2 or 5 × 10^k that needs at most 7 steps. */
export function yTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1]
  const power = 10 ** Math.floor(Math.log10(max / 5))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => max / s <= 7)!
  const top = Math.ceil(max / step - 1e-9) * step
  return Array.from({ length: Math.round(top / step) + 1 }, (_, i) => Number((i * step).toPrecision(12)))
}

export function renderLineChart(spec: ChartSpec): string {
  const height = TOP + spec.panels.length * PANEL_HEIGHT
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right
  const plotHeight = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom
  const xs = [...new Set(spec.panels.flatMap((p) => p.series.flatMap((s) => s.points.map((pt) => pt.x))))].sort(
    (a, b) => a - b,
  )
  const fx = spec.xLog2 ? Math.log2 : (v: number) => v
  const [xLo, xHi] = [fx(xs[0] ?? 1), fx(xs.at(-1) ?? 1)]
  const xPixel = (x: number) => MARGIN.left + (xHi === xLo ? plotWidth / 2 : ((fx(x) - xLo) / (xHi - xLo)) * plotWidth)

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${esc(spec.title)}</title>`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="${WIDTH / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(spec.title)}</text>`,
  ]
  spec.panels.forEach((panel, index) => {
    const top = TOP + index * PANEL_HEIGHT + MARGIN.top
    const bottom = top + plotHeight
    const values = panel.series.flatMap((s) => s.points.map((p) => p.y).filter((y): y is number => y !== null))
    const ticks = yTicks(Math.max(0, ...values))
    const yMax = ticks.at(-1)!
    const yPixel = (y: number) => bottom - (y / yMax) * plotHeight
    out.push(`<g class="panel" data-title="${esc(panel.title)}">`)
    out.push(`<text x="${MARGIN.left}" y="${top - 12}" font-size="13" font-weight="bold">${esc(panel.title)}</text>`)
    for (const t of ticks) {
      const y = num(yPixel(t))
      out.push(`<line x1="${MARGIN.left}" y1="${y}" x2="${MARGIN.left + plotWidth}" y2="${y}" stroke="#e3e3e3"/>`)
      out.push(
        `<text class="y-tick" x="${MARGIN.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${tickText(t)}</text>`,
      )
    }
    for (const x of xs) {
      const px = num(xPixel(x))
      out.push(`<line x1="${px}" y1="${top}" x2="${px}" y2="${bottom}" stroke="#f0f0f0"/>`)
      out.push(`<line x1="${px}" y1="${bottom}" x2="${px}" y2="${bottom + 5}" stroke="#333"/>`)
      out.push(`<text class="x-tick" x="${px}" y="${bottom + 18}" text-anchor="middle">${tickText(x)}</text>`)
    }
    out.push(`<line x1="${MARGIN.left}" y1="${bottom}" x2="${MARGIN.left + plotWidth}" y2="${bottom}" stroke="#333"/>`)
    out.push(`<line x1="${MARGIN.left}" y1="${top}" x2="${MARGIN.left}" y2="${bottom}" stroke="#333"/>`)
    out.push(
      `<text x="${MARGIN.left + plotWidth / 2}" y="${bottom + 38}" text-anchor="middle">${esc(spec.xLabel)}</text>`,
    )
    out.push(
      `<text transform="translate(${MARGIN.left - 52} ${(top + bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(panel.yLabel)}</text>`,
    )
    panel.series.forEach((series, s) => {
      const color = COLORS[(series.color ?? s) % COLORS.length]!
      const dash = DASHES[(series.dash ?? 0) % DASHES.length]
        ? ` stroke-dasharray="${DASHES[(series.dash ?? 0) % DASHES.length]}"`
        : ''
      const points = series.points.filter((p): p is { x: number; y: number } => p.y !== null)
      out.push(`<g class="series" data-label="${esc(series.label)}">`)
      out.push(
        `<polyline points="${points.map((p) => `${num(xPixel(p.x))},${num(yPixel(p.y))}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`,
      )
      for (const p of points) {
        out.push(
          `<circle cx="${num(xPixel(p.x))}" cy="${num(yPixel(p.y))}" r="3.5" fill="${color}"><title>${esc(`${series.label} at ${spec.xLabel.toLowerCase()} ${p.x}: ${p.y} ${panel.unit}`)}</title></circle>`,
        )
      }
      out.push('</g>')
      const ly = top + 8 + s * 18
      const lx = MARGIN.left + plotWidth + 16
      out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`)
      out.push(`<text class="legend" x="${lx + 28}" y="${ly}" dominant-baseline="middle">${esc(series.label)}</text>`)
    })
    out.push('</g>')
  })
  out.push('</svg>', '')
  return out.join('\n')
}
