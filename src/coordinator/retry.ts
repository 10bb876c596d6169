/** Retries with exponential backoff and jitter, for calls to a coordinator that may be restarting or unreachable. */
export interface RetryPolicy {
  /** Total tries, the first included. */
  attempts: number
  baseMs: number
  maxMs: number
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseMs: 250, maxMs: 8000 }

/** Delay before retry n (0-based): base·2ⁿ capped at max, scaled into [½, 1] by jitter so clients spread out. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** attempt)
  return Math.round(ceiling * (0.5 + random() / 2))
}

export interface RetryHooks {
  sleep?: (ms: number) => Promise<void>
  random?: () => number
  /** Only errors this accepts are retried; others are thrown at once. */
  isRetryable: (error: unknown) => boolean
  onRetry?: (attempt: number, delayMs: number, error: unknown) => void
}

export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  hooks: RetryHooks,
): Promise<T> {
  const sleep = hooks.sleep ?? Bun.sleep
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt)
    } catch (error) {
      if (attempt + 1 >= policy.attempts || !hooks.isRetryable(error)) throw error
      const delay = backoffDelay(attempt, policy, hooks.random)
      hooks.onRetry?.(attempt + 1, delay, error)
      await sleep(delay)
    }
  }
}
