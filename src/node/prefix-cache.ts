/** The prefix cache a node keeps for its local stages (--prefix-cache): its size, its namespace (the serving fingerprint
 * of the model folder, so a hit never crosses models), and why a model gets none. */
import { consola } from 'consola'
import type { ServingMetrics } from '../engine/metrics.ts'
import { StagePrefixCache } from '../engine/stage-prefix.ts'
import type { ModelStage } from '../model/shard.ts'
import { servingFingerprint } from '../model/serving-fingerprint.ts'

/** Of the memory a node offers, the share the cache takes by default of what weights and KV slots leave. */
export const PREFIX_CACHE_SHARE = 0.5

export function openPrefixCache(
  stages: readonly ModelStage[],
  o: { prefixCache?: number | 'auto'; usableBytes: number; metrics: ServingMetrics },
  dir: string,
): StagePrefixCache | undefined {
  if (!o.prefixCache) return undefined
  const refusal = StagePrefixCache.refusal(stages)
  if (refusal) {
    consola.info(`prefix cache off: ${refusal} (every prompt is prefilled whole)`)
    return undefined
  }
  const used = stages.reduce((n, s) => n + s.weightBytes + s.cache.bytes, 0)
  const capacityBytes =
    o.prefixCache === 'auto' ? Math.floor(Math.max(0, o.usableBytes - used) * PREFIX_CACHE_SHARE) : o.prefixCache
  if (capacityBytes <= 0) return undefined
  const model = Buffer.from(servingFingerprint(dir, {})).toString('hex')
  consola.info(`prefix cache: up to ${(capacityBytes / 2 ** 30).toFixed(2)} GiB of 64-token KV blocks`)
  return new StagePrefixCache(stages, { capacityBytes, model, counters: o.metrics.prefixCache })
}
