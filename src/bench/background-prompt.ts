/** `bench serve --background-prompt N`: what a long prompt arriving does to streams already running. At each
 * concurrency level c, c streams decode alone (quiet), then c streams again while one N-token prompt is sent once they
 * all stream; the inter-token gaps that overlap that prompt's prefill are compared with the quiet ones (p99 against
 * p99). A step budget (serve --max-step-tokens) is what keeps the ratio down. */
import { randomPrompt, streamOne, type RequestSample } from './load.ts'
import { percentile } from './stats.ts'

export interface BackgroundPromptOptions {
  url: string
  model: string
  concurrency: number
  promptTokens: number
  maxTokens: number
  backgroundTokens: number
  apiKey?: string
  signal?: AbortSignal
}

export interface BackgroundPromptLevel {
  concurrency: number
  /** p99 of every gap between tokens of the streams alone. */
  itl_p99_quiet_ms: number
  /** p99 of the gaps that overlap the long prompt's time in the server (sent → its first token). */
  itl_p99_background_ms: number
  /** background / quiet: the goal is ≤ 2. */
  itl_p99_ratio: number
  /** Gaps that overlapped the long prompt (how much the background p99 rests on). */
  background_gaps: number
  /** The long prompt's time to first token (its prefill, shared with the streams). */
  background_ttft_ms: number
}

const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d

/** The gaps between consecutive tokens of the streams that end after `from` and begin before `to` (ms). */
const gapsWithin = (samples: readonly RequestSample[], from: number, to: number): number[] =>
  samples.flatMap((s) =>
    s.arrivals.slice(1).flatMap((end, i) => {
      const begin = s.arrivals[i]!
      return end > from && begin < to ? [end - begin] : []
    }),
  )

export async function measureBackgroundPrompt(o: BackgroundPromptOptions): Promise<BackgroundPromptLevel> {
  const request = { apiKey: o.apiKey, model: o.model, signal: o.signal }
  const streams = (seed: number) =>
    Array.from({ length: o.concurrency }, (_, i) =>
      streamOne(o.url, randomPrompt(o.promptTokens, seed + i), o.maxTokens, request),
    )
  // a short request first: a fresh server's first step pays for lazy setup, which neither phase should carry
  await streamOne(o.url, randomPrompt(8, 1), 2, request)
  const quiet = await Promise.all(streams(1000))
  // steady decoding only: the gaps after every stream has its first token (before that, their prompts are prefilled)
  const allStreaming = Math.max(...quiet.map((s) => s.arrivals[0]!))
  const quietGaps = gapsWithin(quiet, allStreaming, Infinity)

  // the same streams again; the long prompt goes once every stream has its first tokens
  const started: Promise<RequestSample>[] = []
  const firstTokens = new Promise<void>((resolve) => {
    // a stream's own first token is its prefill: wait a little past the slowest TTFT of the quiet run
    const slowest = Math.max(...quiet.map((s) => s.ttft * 1000))
    setTimeout(resolve, slowest + 4 * percentile(quietGaps, 50))
  })
  started.push(...streams(2000))
  await firstTokens
  const sent = performance.now()
  const long = await streamOne(o.url, randomPrompt(o.backgroundTokens, 7), 1, request)
  const answered = sent + long.ttft * 1000
  const loaded = await Promise.all(started)
  const overlapping = gapsWithin(loaded, sent, answered)
  if (overlapping.length === 0)
    throw new Error(
      `no stream was decoding while the ${o.backgroundTokens}-token prompt prefilled: raise --max-tokens so the streams outlast it`,
    )
  const q99 = percentile(quietGaps, 99)
  const b99 = percentile(overlapping, 99)
  return {
    concurrency: o.concurrency,
    itl_p99_quiet_ms: round(q99),
    itl_p99_background_ms: round(b99),
    itl_p99_ratio: round(b99 / q99, 3),
    background_gaps: overlapping.length,
    background_ttft_ms: round(long.ttft * 1000, 1),
  }
}
