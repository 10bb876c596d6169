/** `bench serve --shared-prefix N`: multi-turn conversations replayed, each turn's prompt the last turn's plus a few new
 * tokens, the first turn N tokens long. Each turn's time to first token, and what the server's prefix cache served of
 * its prompt: with a cache, a later turn prefills only what it added (issue 25's goal: turn 2's TTFT ≤ 0.15× turn 1's). */
import { randomPrompt, streamOne } from './load.ts'
import { median } from './stats.ts'

export interface SharedPrefixOptions {
  url: string
  model: string
  /** The first turn's prompt length. */
  prefixTokens: number
  turns: number
  /** Tokens each later turn adds. */
  turnTokens: number
  maxTokens: number
  /** Conversations replayed one after another (each with its own prompts); TTFTs are medians over them. */
  conversations: number
  apiKey?: string
  signal?: AbortSignal
}

export interface TurnResult {
  turn: number
  prompt_tokens: number
  /** Median over the conversations. */
  ttft_ms: number
  cached_tokens: number | null
  /** This turn's TTFT over turn 1's. */
  ttft_ratio: number
}

export async function measureSharedPrefix(o: SharedPrefixOptions): Promise<TurnResult[]> {
  const request = { apiKey: o.apiKey, model: o.model, signal: o.signal }
  // a short request first: a fresh server's first step pays for lazy setup, which no turn should carry
  await streamOne(o.url, randomPrompt(8, 1), 2, request)
  const ttfts: number[][] = Array.from({ length: o.turns }, () => [])
  const cached: (number | null)[] = Array.from({ length: o.turns }, () => null)
  for (let c = 0; c < o.conversations && !o.signal?.aborted; c++) {
    // far apart per conversation, so no two conversations share a block
    let prompt = randomPrompt(o.prefixTokens, 50_000 + 997 * c)
    for (let t = 0; t < o.turns; t++) {
      if (t > 0) prompt = [...prompt, ...randomPrompt(o.turnTokens, 90_000 + 131 * c + t)]
      const sample = await streamOne(o.url, prompt, o.maxTokens, request)
      ttfts[t]!.push(sample.ttft * 1000)
      cached[t] = sample.cachedTokens ?? null
    }
  }
  const first = median(ttfts[0]!)
  return ttfts.map((samples, t) => {
    const ttft = median(samples)
    return {
      turn: t + 1,
      prompt_tokens: o.prefixTokens + t * o.turnTokens,
      ttft_ms: Math.round(ttft * 10) / 10,
      cached_tokens: cached[t]!,
      ttft_ratio: Math.round((ttft / first) * 1000) / 1000,
    }
  })
}
