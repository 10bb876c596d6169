/** `bench serve`: drive an OpenAI-compatible server at several concurrency levels and measure each level's aggregate
 * generated tok/s, time to first token and inter-token latency (p50/p95), and how many requests succeeded. */
import { runLoad } from './load.ts'

export interface ServeSweepOptions {
  url: string
  /** Concurrency levels, measured in this order. */
  concurrency: number[]
  promptTokens: number
  maxTokens: number
  /** Requests per level; each of the `c` clients sends ceil(n / c) of them (default: 2 per client). */
  requestsPerLevel?: number
  /** Model name to request; default: the first one the server lists at /v1/models. */
  model?: string
  apiKey?: string
  signal?: AbortSignal
  /** Called when a level starts and as each of its requests ends. */
  onProgress?: (p: SweepProgress) => void
  /** Called with each level as soon as it is measured (so a caller can save results as they come). */
  onLevel?: (level: LevelResult) => void
}

export interface SweepProgress {
  concurrency: number
  done: number
  failed: number
  total: number
  /** Generated tok/s of the previous level (null for the first). */
  previousTps: number | null
}

/** One measured point: a concurrency level. */
export interface LevelResult {
  concurrency: number
  requests: number
  ok: number
  failed: number
  generated_tokens: number
  seconds: number
  tok_s: number
  /** Latencies are null when no request of the level produced them. */
  ttft_p50_ms: number | null
  ttft_p95_ms: number | null
  itl_p50_ms: number | null
  itl_p95_ms: number | null
  /** The first failure's message, when some requests failed. */
  first_error?: string
}

export interface ServeSweepResult {
  url: string
  model: string
  prompt_tokens: number
  max_tokens: number
  levels: LevelResult[]
  /** True when the sweep was stopped (signal) before every level was measured; the unfinished level is left out. */
  partial: boolean
}

/** The model a server serves (the first listed), with a clear error when it cannot be asked. */
export async function servedModel(url: string, apiKey?: string): Promise<string> {
  let response: Response
  try {
    response = await fetch(`${url}/v1/models`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} })
  } catch (error) {
    throw new Error(`cannot reach ${url}: ${(error as Error).message}`)
  }
  if (!response.ok)
    throw new Error(
      `${url}/v1/models answered HTTP ${response.status}${response.status === 401 ? ' (pass --api-key)' : ''}`,
    )
  const body = (await response.json()) as { data?: { id: string }[] }
  const id = body.data?.[0]?.id
  if (!id) throw new Error(`${url}/v1/models lists no model`)
  return id
}

export async function runServeSweep(o: ServeSweepOptions): Promise<ServeSweepResult> {
  const model = o.model ?? (await servedModel(o.url, o.apiKey))
  const base = { model, apiKey: o.apiKey, signal: o.signal }
  // one short request first: the first step of a fresh server pays for lazy setup, which no level should carry
  const warm = await runLoad(o.url, { ...base, concurrency: 1, requestsPerClient: 1, promptTokens: 8, maxTokens: 2 })
  if (warm.errors.length) throw new Error(`the warm-up request to ${o.url} failed: ${warm.errors[0]}`)
  const levels: LevelResult[] = []
  for (const concurrency of o.concurrency) {
    if (o.signal?.aborted) break
    const perClient = Math.max(1, Math.ceil((o.requestsPerLevel ?? 2 * concurrency) / concurrency))
    const progress: SweepProgress = {
      concurrency,
      done: 0,
      failed: 0,
      total: perClient * concurrency,
      previousTps: levels.at(-1)?.tok_s ?? null,
    }
    o.onProgress?.({ ...progress })
    const r = await runLoad(o.url, {
      ...base,
      concurrency,
      requestsPerClient: perClient,
      promptTokens: o.promptTokens,
      maxTokens: o.maxTokens,
      onRequestDone: (ok) => {
        progress.done++
        if (!ok) progress.failed++
        o.onProgress?.({ ...progress })
      },
    })
    if (o.signal?.aborted) break
    const ok = r.completed
    const measured = (v: number) => (Number.isFinite(v) ? v : null)
    const level: LevelResult = {
      concurrency,
      requests: r.requests,
      ok,
      failed: r.errors.length,
      generated_tokens: r.generated_tokens,
      seconds: r.seconds,
      tok_s: r.aggregate_tps,
      ttft_p50_ms: measured(r.ttft_p50_ms),
      ttft_p95_ms: measured(r.ttft_p95_ms),
      itl_p50_ms: measured(r.itl_p50_ms),
      itl_p95_ms: measured(r.itl_p95_ms),
      ...(r.errors.length ? { first_error: r.errors[0] } : {}),
    }
    levels.push(level)
    o.onLevel?.(level)
  }
  return {
    url: o.url,
    model,
    prompt_tokens: o.promptTokens,
    max_tokens: o.maxTokens,
    levels,
    partial: levels.length < o.concurrency.length,
  }
}
