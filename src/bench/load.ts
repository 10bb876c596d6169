/** A load generator for the OpenAI-compatible API: `concurrency` clients, each sending streamed completions back to
 * back (prompts as token ids, so their length is exact), measuring time to first token, the gaps between tokens and the
 * aggregate generated tokens per second over the whole run. */
import { median, percentile } from './stats.ts'

export interface LoadOptions {
  concurrency: number
  /** Requests per client. */
  requestsPerClient: number
  promptTokens: number
  maxTokens: number
  /** Token ids for prompts are drawn from [lo, hi). */
  idRange?: [number, number]
  apiKey?: string
  /** Model name sent with each request (a server answers 404 to a name it does not serve). */
  model?: string
  signal?: AbortSignal
  /** Called as each request ends (for progress lines). */
  onRequestDone?: (ok: boolean) => void
}

export interface RequestSample {
  ttft: number
  /** When each streamed token arrived (performance.now(), ms). */
  arrivals: number[]
  /** Prompt tokens the server's prefix cache served (usage.prompt_tokens_details.cached_tokens; absent: none kept). */
  cachedTokens?: number
  /** Seconds between consecutive streamed tokens. */
  gaps: number[]
  tokens: number
  seconds: number
}

export interface LoadResult {
  concurrency: number
  requests: number
  completed: number
  errors: string[]
  generated_tokens: number
  seconds: number
  aggregate_tps: number
  /** Decode speed of one stream: tokens after the first over the time after the first (median over requests). */
  stream_decode_tps: number
  ttft_p50_ms: number
  ttft_p95_ms: number
  itl_p50_ms: number
  itl_p95_ms: number
}

/** One streamed completion; resolves with its timings. */
export async function streamOne(
  url: string,
  prompt: number[],
  maxTokens: number,
  options: { apiKey?: string; model?: string; signal?: AbortSignal } = {},
): Promise<RequestSample> {
  const t0 = performance.now()
  const response = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
    },
    body: JSON.stringify({
      model: options.model ?? 'bench',
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
    signal: options.signal,
  })
  if (!response.ok || !response.body)
    throw new Error(`HTTP ${response.status}: ${(await response.text()).slice(0, 200)}`)
  const times: number[] = []
  let tokens = 0
  let cachedTokens: number | undefined
  let buffer = ''
  const decoder = new TextDecoder()
  const reader = response.body.getReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    buffer += decoder.decode(value, { stream: true })
    let at: number
    while ((at = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, at)
      buffer = buffer.slice(at + 2)
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue
      const data = JSON.parse(event.slice(6))
      if (data.error) throw new Error(data.error.message)
      // one chunk per token; the finish chunk and the usage chunk are not tokens
      if (data.choices?.length && data.choices[0].finish_reason === null) times.push(performance.now())
      if (data.usage) {
        tokens = data.usage.completion_tokens
        cachedTokens = data.usage.prompt_tokens_details?.cached_tokens
      }
    }
  }
  if (times.length === 0) throw new Error('the stream ended without a token')
  const gaps = times.slice(1).map((t, i) => (t - times[i]!) / 1000)
  return {
    ttft: (times[0]! - t0) / 1000,
    arrivals: times,
    ...(cachedTokens !== undefined && { cachedTokens }),
    gaps,
    tokens: tokens || times.length,
    seconds: (times.at(-1)! - t0) / 1000,
  }
}

export function randomPrompt(length: number, seed: number, [lo, hi]: [number, number] = [1000, 30000]): number[] {
  let x = seed * 2654435761 + 1
  return Array.from({ length }, () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    return lo + (x % (hi - lo))
  })
}

export async function runLoad(url: string, o: LoadOptions): Promise<LoadResult> {
  const samples: RequestSample[] = []
  const errors: string[] = []
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: o.concurrency }, async (_, client) => {
      for (let i = 0; i < o.requestsPerClient && !o.signal?.aborted; i++) {
        try {
          samples.push(await streamOne(url, randomPrompt(o.promptTokens, client * 1000 + i, o.idRange), o.maxTokens, o))
          o.onRequestDone?.(true)
        } catch (error) {
          if (o.signal?.aborted) continue
          errors.push((error as Error).message)
          o.onRequestDone?.(false)
        }
      }
    }),
  )
  const seconds = (performance.now() - t0) / 1000
  const generated = samples.reduce((a, s) => a + s.tokens, 0)
  const ttfts = samples.map((s) => s.ttft * 1000)
  const gaps = samples.flatMap((s) => s.gaps.map((g) => g * 1000))
  const streamTps = samples.filter((s) => s.gaps.length).map((s) => s.gaps.length / s.gaps.reduce((a, b) => a + b, 0))
  const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d
  return {
    concurrency: o.concurrency,
    requests: o.concurrency * o.requestsPerClient,
    completed: samples.length,
    errors,
    generated_tokens: generated,
    seconds: round(seconds, 3),
    aggregate_tps: round(generated / seconds),
    stream_decode_tps: round(median(streamTps)),
    ttft_p50_ms: round(percentile(ttfts, 50), 1),
    ttft_p95_ms: round(percentile(ttfts, 95), 1),
    itl_p50_ms: round(percentile(gaps, 50), 2),
    itl_p95_ms: round(percentile(gaps, 95), 2),
  }
}
